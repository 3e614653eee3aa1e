"""The map's outputs: GeoJSON, an OSM review file for JOSM, CSV and KML.

Every writer takes entities (and, for GeoJSON, optionally their rays) and writes to an open
text stream or a path (written to a temporary file, then renamed); it returns how many
entities it wrote. :func:`export` reads a store and picks the writer by name, for
``sousveil map export``.

The OSM file is for review only: ``upload="never"``, new nodes with negative ids, a
``fixme`` tag on each. Nothing here talks to OpenStreetMap; a human opens the file in JOSM,
checks each node against imagery or a survey, and uploads with their own account.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from firmware.geometry import from_local
from firmware.position.interpolate import distance_m
from firmware.sighting import format_utc
from mapper import FORMATS
from mapper.entity import Entity, EntityRay
from mapper.store import Store

Format = Literal["geojson", "osm", "csv", "kml"]  # FORMATS (in mapper/__init__.py, light for the CLI's parser)
GENERATOR: Final = "sousveil-mapper"
PLACES: Final = 7  # decimal places of a coordinate (about 1 cm)
OSM_MAX_VALUE: Final = 255  # characters; the OSM API refuses longer keys and values
RAY_DEFAULT_M: Final = 50.0  # drawn length of a ray whose rider stood on the entity
RAY_MIN_M: Final = 5.0
RAY_MAX_M: Final = 1000.0
# one colour per class, shared with mapper/web/static/map.js and map.css
COLOURS: Final = {"fixed": "#1f77b4", "dome": "#2ca02c", "ptz": "#ff7f0e", "alpr": "#d62728"}
CSV_FIELDS: Final = (
    "id",
    "lat",
    "lon",
    "sigma_m",
    "label",
    "confidence",
    "passes",
    "devices",
    "first_seen_utc",
    "last_seen_utc",
    "check_date",
    "direction_deg",
    "method",
)
KML_NS: Final = "http://www.opengis.net/kml/2.2"
# characters XML 1.0 cannot carry at all (not even escaped)
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class ExportError(RuntimeError):
    """An export cannot be written (unknown format, unwritable path)."""


# ---- helpers ----------------------------------------------------------------------------------


def _coord(x: float) -> float:
    r = round(x, PLACES)
    return 0.0 if r == 0.0 else r  # no '-0.0'


def _xml_text(s: str) -> str:
    """``s`` with characters XML 1.0 cannot carry replaced by U+FFFD (ElementTree escapes the rest)."""
    return _XML_ILLEGAL.sub("\ufffd", s)


@contextlib.contextmanager
def _opened(out: TextIO | Path, newline: str | None = None) -> Iterator[TextIO]:
    """``out`` itself, or a temporary file beside the path that replaces it once complete."""
    if not isinstance(out, Path):
        yield out
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(tmp, out)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ExportError(f"cannot write {out}: {e.strerror or e}") from None


# ---- GeoJSON (RFC 7946) -----------------------------------------------------------------------


def entity_properties(e: Entity) -> dict[str, Any]:
    """The properties of an entity's GeoJSON Point (also what the web map's popup shows)."""
    return {
        "kind": "entity",
        "id": e.id,
        "label": e.label,
        "confidence": round(e.confidence, 3),
        "sigma_m": round(e.sigma_m, 2),
        "passes": e.passes,
        "devices": e.devices,
        "first_seen_utc": format_utc(e.first_seen_utc),
        "last_seen_utc": format_utc(e.last_seen_utc),
        "check_date": e.check_date,
        "method": e.method,
        "direction_deg": e.direction_deg,
        "tags": e.tags(),
    }


def entity_feature(e: Entity) -> dict[str, Any]:
    """One entity as a GeoJSON Feature with a Point geometry ([lon, lat])."""
    return {
        "type": "Feature",
        "id": e.id,
        "geometry": {"type": "Point", "coordinates": [_coord(e.lon_deg), _coord(e.lat_deg)]},
        "properties": entity_properties(e),
    }


def ray_feature(e: Entity, r: EntityRay) -> dict[str, Any]:
    """A ray as a LineString from the rider along the bearing, about as far as the entity."""
    dist = distance_m(r.lat_deg, r.lon_deg, e.lat_deg, e.lon_deg)
    length = min(max(dist, RAY_MIN_M), RAY_MAX_M) if dist > 0.5 else RAY_DEFAULT_M
    b = math.radians(r.bearing_deg)  # at most a kilometre: the local plane is exact enough
    lat2, lon2 = from_local(length * math.sin(b), length * math.cos(b), r.lat_deg, r.lon_deg)
    return {
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": [[_coord(r.lon_deg), _coord(r.lat_deg)], [_coord(lon2), _coord(lat2)]],
        },
        "properties": {
            "kind": "ray",
            "entity_id": e.id,
            "sighting_id": r.sighting_id,
            "bearing_deg": r.bearing_deg,
            "sigma_deg": r.sigma_deg,
            "outlier": r.outlier,
        },
    }


def feature_collection(
    entities: Sequence[Entity], rays: Mapping[str, Sequence[EntityRay]] | None = None
) -> dict[str, Any]:
    """A FeatureCollection: a Point per entity, then (with ``rays``) a LineString per ray of each."""
    features = [entity_feature(e) for e in entities]
    if rays is not None:
        for e in entities:
            features.extend(ray_feature(e, r) for r in rays.get(e.id, ()))
    return {"type": "FeatureCollection", "features": features}


def dumps_geojson(doc: Mapping[str, Any]) -> str:
    """Compact JSON; NaN or infinity is a bug and raises ValueError."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_geojson(
    entities: Sequence[Entity], out: TextIO | Path, *, rays: Mapping[str, Sequence[EntityRay]] | None = None
) -> int:
    """Write a GeoJSON FeatureCollection (RFC 7946); returns the number of entities."""
    text = dumps_geojson(feature_collection(entities, rays))
    with _opened(out) as f:
        f.write(text + "\n")
    return len(entities)


# ---- OSM review file (JOSM) -------------------------------------------------------------------


def review_note(e: Entity) -> str:
    """The ``fixme`` a reviewer reads (and removes once the node is checked)."""
    return (
        f"sousveil: {e.passes} passes by {e.devices} devices, confidence {e.confidence:.2f},"
        f" sigma {e.sigma_m:.1f} m; check before upload"
    )


def osm_tags(e: Entity) -> dict[str, str]:
    """The tags of an entity's review node: its suggested tags plus the ``fixme``; values cut to 255."""
    tags = {**e.tags(), "fixme": review_note(e)}
    return {_xml_text(k)[:OSM_MAX_VALUE]: _xml_text(v)[:OSM_MAX_VALUE] for k, v in tags.items()}


def osm_selection(
    entities: Sequence[Entity], min_confidence: float = 0.0, include_observer: bool = False
) -> list[Entity]:
    """The entities that go into the review file: confident enough; not observer-placed unless asked."""
    return [e for e in entities if e.confidence >= min_confidence and (include_observer or e.method != "observer")]


def osm_document(entities: Sequence[Entity]) -> ET.Element:
    """``<osm version="0.6" upload="never">`` with one new node (negative id, no version) per entity."""
    root = ET.Element("osm", {"version": "0.6", "generator": GENERATOR, "upload": "never"})
    for i, e in enumerate(entities, start=1):
        node = ET.SubElement(
            root, "node", {"id": str(-i), "lat": f"{e.lat_deg:.{PLACES}f}", "lon": f"{e.lon_deg:.{PLACES}f}"}
        )
        for k, v in osm_tags(e).items():
            ET.SubElement(node, "tag", {"k": k, "v": v})
    return root


def _write_xml(root: ET.Element, out: TextIO | Path) -> None:
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    with _opened(out) as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")


def write_osm(
    entities: Sequence[Entity], out: TextIO | Path, *, min_confidence: float = 0.0, include_observer: bool = False
) -> int:
    """Write the OSM review file for JOSM (never uploaded by us); returns the number of nodes."""
    chosen = osm_selection(entities, min_confidence, include_observer)
    _write_xml(osm_document(chosen), out)
    return len(chosen)


# ---- CSV --------------------------------------------------------------------------------------


def _cell(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_row(e: Entity) -> list[str]:
    """One entity as the CSV columns of :data:`CSV_FIELDS`."""
    return [
        _cell(e.id),
        f"{e.lat_deg:.{PLACES}f}",
        f"{e.lon_deg:.{PLACES}f}",
        f"{round(e.sigma_m, 2)}",
        _cell(e.label),
        f"{round(e.confidence, 3)}",
        str(e.passes),
        str(e.devices),
        format_utc(e.first_seen_utc),
        format_utc(e.last_seen_utc),
        e.check_date,
        "" if e.direction_deg is None else f"{e.direction_deg:g}",
        _cell(e.method),
    ]


def write_csv(entities: Sequence[Entity], out: TextIO | Path) -> int:
    """Write one CSV row per entity under a header; returns the number of entities."""
    with _opened(out, newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        w.writerows(csv_row(e) for e in entities)
    return len(entities)


# ---- KML 2.2 ----------------------------------------------------------------------------------


def _kml_colour(hex_rgb: str) -> str:
    r, g, b = hex_rgb[1:3], hex_rgb[3:5], hex_rgb[5:7]
    return f"ff{b}{g}{r}"  # KML is aabbggrr


def kml_description(e: Entity) -> str:
    """The balloon text. Viewers render it as HTML, so every line is HTML-escaped first."""
    lines = [
        f"{e.label} camera, confidence {e.confidence:.2f}, sigma {e.sigma_m:.1f} m",
        f"{e.passes} passes by {e.devices} devices",
        f"first seen {format_utc(e.first_seen_utc)}, last seen {format_utc(e.last_seen_utc)}",
        *(f"{k}={v}" for k, v in e.tags().items()),
    ]
    return "<br/>".join(html.escape(_xml_text(line)) for line in lines)


def kml_document(entities: Sequence[Entity]) -> ET.Element:
    """A KML 2.2 document: a Style per class, a Placemark per entity with ExtendedData."""
    root = ET.Element("kml", {"xmlns": KML_NS})
    doc = ET.SubElement(root, "Document")
    ET.SubElement(doc, "name").text = "sousveil cameras"
    for label, colour in COLOURS.items():
        style = ET.SubElement(doc, "Style", {"id": f"sv-{label}"})
        icon = ET.SubElement(style, "IconStyle")
        ET.SubElement(icon, "color").text = _kml_colour(colour)
        ET.SubElement(icon, "scale").text = "1.0"
    for e in entities:
        pm = ET.SubElement(doc, "Placemark", {"id": f"sv-{e.id}"})
        ET.SubElement(pm, "name").text = _xml_text(f"{e.label} {e.id[:8]}")
        ET.SubElement(pm, "description").text = kml_description(e)
        ET.SubElement(pm, "styleUrl").text = f"#sv-{e.label}"
        data = ET.SubElement(pm, "ExtendedData")
        for key, value in zip(CSV_FIELDS, csv_row(e), strict=True):
            d = ET.SubElement(data, "Data", {"name": key})
            ET.SubElement(d, "value").text = _xml_text(value)
        for k, v in e.tags().items():
            d = ET.SubElement(data, "Data", {"name": _xml_text(f"tag:{k}")})
            ET.SubElement(d, "value").text = _xml_text(v)
        point = ET.SubElement(pm, "Point")
        ET.SubElement(point, "coordinates").text = f"{e.lon_deg:.{PLACES}f},{e.lat_deg:.{PLACES}f}"
    return root


def write_kml(entities: Sequence[Entity], out: TextIO | Path) -> int:
    """Write a KML 2.2 file; returns the number of entities."""
    _write_xml(kml_document(entities), out)
    return len(entities)


# ---- from a store -----------------------------------------------------------------------------


def export(
    store: Store,
    fmt: str,
    out: TextIO | Path,
    *,
    rays: bool = False,
    min_confidence: float = 0.0,
    include_observer: bool = False,
) -> int:
    """Write the store's entities with confidence >= ``min_confidence`` as ``fmt``; returns the count.

    ``rays`` adds each entity's bearing rays (GeoJSON only); ``include_observer`` keeps
    observer-placed entities in the OSM file (the other formats always have them, flagged
    by ``method``).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if rays and fmt != "geojson":
        raise ExportError(f"rays: only the geojson format can carry rays, not {fmt}")
    if not (math.isfinite(min_confidence) and 0.0 <= min_confidence <= 1.0):
        raise ExportError(f"min_confidence must be within 0..1, got {min_confidence!r}")
    entities = store.entities(min_confidence=min_confidence)
    if fmt == "geojson":
        ray_map = {e.id: store.rays_of(e.id) for e in entities} if rays else None
        return write_geojson(entities, out, rays=ray_map)
    if fmt == "osm":
        return write_osm(entities, out, include_observer=include_observer)
    if fmt == "csv":
        return write_csv(entities, out)
    return write_kml(entities, out)
