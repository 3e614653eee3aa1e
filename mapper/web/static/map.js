/* sousveil web map: camera entities from /api/entities.geojson on a Leaflet map.
 *
 * Data never goes through innerHTML: popups and the legend are DOM nodes filled with
 * textContent. Tiles only when /api/config.json names a tile URL; without one the map is a
 * plain background with markers and a scale, and needs no network beyond this server.
 */
(function () {
  "use strict";

  // class colours, the same as mapper/export.py COLOURS and map.css
  var COLOURS = { fixed: "#1f77b4", dome: "#2ca02c", ptz: "#ff7f0e", alpr: "#d62728" };
  var NAMES = { fixed: "fixed camera", dome: "dome camera", ptz: "PTZ camera", alpr: "ALPR camera" };
  var DEFAULT_VIEW = { center: [20, 0], zoom: 2 };
  var DIRECTION_PX = 14; // how far beyond the marker the line showing where a camera looks reaches

  var mapEl = document.getElementById("map");
  var statusEl = document.getElementById("sv-status");
  var map = L.map(mapEl, { preferCanvas: false, worldCopyJump: false });
  var entityLayer = L.layerGroup().addTo(map);
  var rayLayer = L.layerGroup().addTo(map);
  var shown = new Map(); // entity id -> {key, layers}
  var seq = 0;
  var loads = 0;

  function status(text) {
    statusEl.textContent = text || "";
  }

  function escapeHtml(s) {
    // only for Leaflet's attribution control, which takes HTML
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error(url.split("?")[0] + ": HTTP " + r.status);
      return r.json();
    });
  }

  function labelOf(props) {
    return Object.prototype.hasOwnProperty.call(COLOURS, props.label) ? props.label : "unknown";
  }

  function ahead(lat, lon, bearingDeg, metres) {
    var b = (bearingDeg * Math.PI) / 180;
    var dLat = (metres * Math.cos(b)) / 111320;
    var dLon = (metres * Math.sin(b)) / (111320 * Math.max(Math.cos((lat * Math.PI) / 180), 1e-6));
    return [lat + dLat, lon + dLon];
  }

  function directionLine(lat, lon, bearingDeg, radiusPx) {
    // a constant length on screen: metres per pixel at this latitude and zoom (Web Mercator)
    var mpp = (40075016.686 * Math.cos((lat * Math.PI) / 180)) / Math.pow(2, map.getZoom() + 8);
    return [[lat, lon], ahead(lat, lon, bearingDeg, (radiusPx + DIRECTION_PX) * mpp)];
  }

  function fmt(x, places) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(places) : "?";
  }

  function popupContent(props) {
    var root = el("div", "sv-popup");
    root.appendChild(el("h3", null, NAMES[labelOf(props)] || String(props.label)));
    root.appendChild(el("div", "sv-id", String(props.id)));
    var tags = el("ul", "sv-tags");
    var t = props.tags || {};
    Object.keys(t).forEach(function (k) {
      tags.appendChild(el("li", null, k + "=" + t[k]));
    });
    root.appendChild(tags);
    var dl = el("dl");
    [
      ["first seen", props.first_seen_utc],
      ["last seen", props.last_seen_utc],
      ["passes", String(props.passes)],
      ["devices", String(props.devices)],
      ["confidence", fmt(props.confidence, 2)],
      ["sigma", fmt(props.sigma_m, 1) + " m"],
      ["placed by", String(props.method)],
    ].forEach(function (row) {
      dl.appendChild(el("dt", null, row[0]));
      dl.appendChild(el("dd", null, String(row[1])));
    });
    root.appendChild(dl);
    return root;
  }

  function showRays(id) {
    rayLayer.clearLayers();
    getJson("/api/entities/" + encodeURIComponent(id) + "/rays.geojson")
      .then(function (doc) {
        L.geoJSON(doc, {
          style: function (f) {
            var outlier = f.properties && f.properties.outlier;
            return { color: outlier ? "#888" : "#333", weight: 1.5, className: outlier ? "sv-ray sv-outlier" : "sv-ray" };
          },
        }).addTo(rayLayer);
      })
      .catch(function (err) {
        status("could not load the rays: " + err.message);
      });
  }

  function addEntity(f) {
    var p = f.properties;
    var lon = f.geometry.coordinates[0];
    var lat = f.geometry.coordinates[1];
    var label = labelOf(p);
    var conf = Math.min(Math.max(Number(p.confidence) || 0, 0), 1);
    var colour = COLOURS[label] || "#555";
    var radius = 4 + 8 * conf;
    var layers = [];
    if (typeof p.direction_deg === "number") {
      var line = L.polyline(directionLine(lat, lon, p.direction_deg, radius), {
        color: colour,
        weight: 2,
        opacity: 0.5 + 0.5 * conf,
        interactive: false,
        className: "sv-direction sv-" + label,
      });
      line.svDirection = [lat, lon, p.direction_deg, radius];
      layers.push(line);
    }
    var marker = L.circleMarker([lat, lon], {
      radius: radius,
      color: colour,
      weight: 2,
      opacity: 0.5 + 0.5 * conf,
      fillColor: colour,
      fillOpacity: 0.25 + 0.65 * conf,
      className: "sv-entity sv-" + label,
    });
    marker.bindPopup(popupContent(p), { maxWidth: 320 });
    marker.on("popupopen", function () {
      showRays(p.id);
    });
    marker.on("popupclose", function () {
      rayLayer.clearLayers();
    });
    layers.push(marker);
    layers.forEach(function (layer) {
      entityLayer.addLayer(layer);
    });
    var path = marker.getElement();
    if (path) path.setAttribute("data-entity-id", String(p.id));
    return layers;
  }

  function render(doc) {
    var seen = new Set();
    (doc.features || []).forEach(function (f) {
      if (!f || !f.geometry || f.geometry.type !== "Point" || !f.properties) return;
      var id = String(f.properties.id);
      var key = JSON.stringify([f.geometry.coordinates, f.properties]);
      seen.add(id);
      var old = shown.get(id);
      if (old && old.key === key) return; // unchanged: keep it (and its open popup)
      if (old) old.layers.forEach(function (layer) { entityLayer.removeLayer(layer); });
      shown.set(id, { key: key, layers: addEntity(f) });
    });
    shown.forEach(function (entry, id) {
      if (!seen.has(id)) {
        entry.layers.forEach(function (layer) { entityLayer.removeLayer(layer); });
        shown.delete(id);
      }
    });
    loads += 1;
    mapEl.setAttribute("data-sv-loads", String(loads));
    mapEl.setAttribute("data-sv-count", String(shown.size));
    status(doc.truncated ? "showing the most confident cameras only: zoom in for all" : "");
  }

  function viewBbox() {
    var b = map.getBounds().pad(0.1);
    var west = Math.max(-180, b.getWest());
    var east = Math.min(180, b.getEast());
    var south = Math.max(-90, b.getSouth());
    var north = Math.min(90, b.getNorth());
    if (west > east || south > north) return null;
    return [west, south, east, north].map(function (v) { return v.toFixed(6); }).join(",");
  }

  function refresh() {
    var bbox = viewBbox();
    var mine = ++seq;
    if (bbox === null) {
      render({ features: [] });
      return;
    }
    getJson("/api/entities.geojson?bbox=" + bbox)
      .then(function (doc) {
        if (mine === seq) render(doc);
      })
      .catch(function (err) {
        if (mine === seq) status("could not load cameras: " + err.message);
      });
  }

  function legend() {
    var control = L.control({ position: "topright" });
    control.onAdd = function () {
      var box = el("div", "sv-legend leaflet-control");
      box.appendChild(el("h4", null, "Cameras"));
      var ul = el("ul");
      Object.keys(COLOURS).forEach(function (label) {
        var li = el("li");
        li.appendChild(el("span", "sv-swatch sv-" + label));
        li.appendChild(el("span", null, NAMES[label]));
        ul.appendChild(li);
      });
      box.appendChild(ul);
      box.appendChild(el("div", "sv-note", "larger and darker: more confident"));
      return box;
    };
    control.addTo(map);
  }

  function setup(config) {
    if (config.tile_url) {
      L.tileLayer(config.tile_url, {
        maxZoom: 19,
        attribution: escapeHtml(config.attribution || ""),
        crossOrigin: false,
      }).addTo(map);
    }
    L.control.scale({ imperial: false }).addTo(map);
    legend();
    return getJson("/api/entities.geojson").then(function (doc) {
      var feats = (doc.features || []).filter(function (f) { return f && f.geometry && f.geometry.type === "Point"; });
      if (feats.length) {
        var bounds = L.latLngBounds(feats.map(function (f) {
          return [f.geometry.coordinates[1], f.geometry.coordinates[0]];
        }));
        map.fitBounds(bounds, { padding: [40, 40], maxZoom: 18, animate: false });
      } else {
        map.setView(DEFAULT_VIEW.center, DEFAULT_VIEW.zoom, { animate: false });
      }
      render(doc);
      map.on("moveend", refresh);
      map.on("zoomend", function () {
        entityLayer.eachLayer(function (layer) {
          var d = layer.svDirection;
          if (d) layer.setLatLngs(directionLine(d[0], d[1], d[2], d[3]));
        });
      });
    });
  }

  getJson("/api/config.json")
    .catch(function (err) {
      status("no map configuration (" + err.message + "): showing cameras without tiles");
      return { tile_url: "", attribution: "" };
    })
    .then(setup)
    .catch(function (err) {
      if (!map._loaded) map.setView(DEFAULT_VIEW.center, DEFAULT_VIEW.zoom);
      status("could not load cameras: " + err.message);
    });
})();
