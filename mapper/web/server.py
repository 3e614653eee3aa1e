"""The web map: a small standard-library HTTP server over a :class:`~mapper.store.Store`.

``/`` the page, ``/static/...`` its files (Leaflet is shipped, nothing from a CDN),
``/api/entities.geojson?bbox=west,south,east,north&min_confidence=0.5``,
``/api/entities/<id>/rays.geojson``, ``/api/config.json`` (tile URL and attribution) and
``/healthz``. GET and HEAD only; every response carries a Content-Security-Policy that
allows this origin only (plus the tile host for images, when tiles are configured).

    server = serve(store, port=8080)
    server.serve_forever()          # or in a thread; server.shutdown() stops it
"""

from __future__ import annotations

import logging
import math
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from mapper.export import dumps_geojson, feature_collection, ray_feature
from mapper.store import Store

log = logging.getLogger("sousveil.mapper.web")

STATIC: Final = Path(__file__).resolve().parent / "static"
MAX_FEATURES: Final = 5000  # entities in one answer; the most confident are kept
OSM_ATTRIBUTION: Final = "© OpenStreetMap contributors"
_ENTITY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RAYS_PATH = re.compile(r"/api/entities/([^/]+)/rays\.geojson")
_TILE_HOST = re.compile(r"[A-Za-z0-9.{}-]+(:[0-9]{1,5})?")
_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}


class ParameterError(ValueError):
    """A query parameter is malformed; ``parameter`` names it."""

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {reason}")


def tile_source(tile_url: str) -> str:
    """The CSP source of a tile URL template (``{s}`` subdomains become ``*``); '' for no tiles.

    Raises ValueError, naming the problem, for anything but an http(s) template with {z}, {x}, {y}.
    """
    if not tile_url:
        return ""
    parts = urlsplit(tile_url)
    if parts.scheme not in ("http", "https") or not _TILE_HOST.fullmatch(parts.netloc):
        raise ValueError(f"tile URL must be http(s)://host/...{{z}}/{{x}}/{{y}}..., got {tile_url[:80]!r}")
    if any(p not in tile_url for p in ("{z}", "{x}", "{y}")) or re.search(r"[\s\"'<>;,\\]", tile_url):
        raise ValueError(f"tile URL needs {{z}}, {{x}} and {{y}} and no spaces or quotes, got {tile_url[:80]!r}")
    host = re.sub(r"\{[a-z]+\}", "*", parts.netloc)
    if "{" in host or "}" in host or not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
        raise ValueError(f"tile URL host may only have a {{s}} subdomain placeholder, got {parts.netloc!r}")
    return f"{parts.scheme}://{host}"


def content_security_policy(tile_src: str) -> str:
    img = f"'self' {tile_src}" if tile_src else "'self'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {img}; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def parse_bbox(values: list[str] | None) -> tuple[float, float, float, float] | None:
    """``west,south,east,north`` in degrees, or None; ParameterError('bbox') when malformed."""
    if values is None:
        return None
    if len(values) != 1:
        raise ParameterError("bbox", "give it once")
    parts = values[0].split(",")
    if len(parts) != 4:
        raise ParameterError("bbox", "must be four numbers west,south,east,north")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise ParameterError("bbox", "must be four numbers west,south,east,north") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ParameterError("bbox", "must be finite numbers")
    if not (-180.0 <= west <= east <= 180.0):
        raise ParameterError("bbox", "needs -180 <= west <= east <= 180 (split a box across the antimeridian)")
    if not (-90.0 <= south <= north <= 90.0):
        raise ParameterError("bbox", "needs -90 <= south <= north <= 90")
    return west, south, east, north


def parse_min_confidence(values: list[str] | None) -> float:
    """A number within 0..1 (default 0); ParameterError('min_confidence') otherwise."""
    if values is None:
        return 0.0
    if len(values) != 1:
        raise ParameterError("min_confidence", "give it once")
    try:
        x = float(values[0])
    except ValueError:
        raise ParameterError("min_confidence", "must be a number within 0..1") from None
    if not (math.isfinite(x) and 0.0 <= x <= 1.0):
        raise ParameterError("min_confidence", "must be a number within 0..1")
    return x


def static_file(rel: str) -> Path | None:
    """The file under static/ that the URL-encoded ``rel`` names, or None (missing, hidden, or outside)."""
    segments = [unquote(s) for s in rel.split("/")]
    for s in segments:
        if s in ("", ".", "..") or s.startswith(".") or any(c in s for c in "/\\\0"):
            return None
    path = STATIC.joinpath(*segments).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        return None
    return path


class MapServer(ThreadingHTTPServer):
    """The web map's server: a store, the tile settings, and the handler below."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store, tile_url: str, attribution: str) -> None:
        self.store = store
        self.tile_url = tile_url
        self.attribution = attribution
        self.csp = content_security_policy(tile_source(tile_url))
        super().__init__(address, MapHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class MapHandler(BaseHTTPRequestHandler):
    server: MapServer
    server_version = "sousveil-map"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30

    # -- plumbing ---------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        text = format % args
        log.info("%s %s", self.address_string(), "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text))

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", self.server.csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        # the OSM tile servers want a Referer; the default policy sends the origin only
        self.send_header("Referrer-Policy", "strict-origin-when-cross-origin")
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any, content_type: str = "application/json") -> None:
        self._send(status, (dumps_geojson(doc) + "\n").encode("utf-8"), content_type)

    def _error(self, status: int, message: str, parameter: str | None = None) -> None:
        doc: dict[str, Any] = {"error": message}
        if parameter is not None:
            doc["parameter"] = parameter
        self._json(status, doc)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        body = b'{"error":"only GET and HEAD"}\n'
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def do_HEAD(self) -> None:
        self.do_GET()

    # -- routes -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        try:
            if path in ("/", "/index.html"):
                self._static("index.html")
            elif path.startswith("/static/"):
                self._static(path[len("/static/") :])
            elif path == "/api/entities.geojson":
                self._entities(parts.query)
            elif path == "/api/config.json":
                self._json(200, self._config())
            elif path == "/healthz":
                self._json(200, {"status": "ok", **self.server.store.stats()})
            elif m := _RAYS_PATH.fullmatch(path):
                self._rays(unquote(m.group(1)))
            else:
                self._error(404, "not found")
        except ParameterError as e:
            self._error(400, str(e), e.parameter)
        except Exception:
            log.exception("error answering %s", self.path[:200].encode("unicode_escape").decode("ascii"))
            self._error(500, "internal error (see the server log)")

    def _static(self, rel: str) -> None:
        path = static_file(rel)
        if path is None:
            self._error(404, "not found")
            return
        ctype = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        self._send(200, path.read_bytes(), ctype, cache="no-cache")

    def _entities(self, query: str) -> None:
        params = parse_qs(query, keep_blank_values=True)
        bbox = parse_bbox(params.get("bbox"))
        min_conf = parse_min_confidence(params.get("min_confidence"))
        entities = self.server.store.entities(bbox=bbox, min_confidence=min_conf)
        truncated = len(entities) > MAX_FEATURES
        if truncated:
            entities = sorted(entities, key=lambda e: -e.confidence)[:MAX_FEATURES]
        doc = feature_collection(entities)
        doc["truncated"] = truncated  # a foreign member (RFC 7946 section 6.1)
        self._json(200, doc, "application/geo+json")

    def _rays(self, entity_id: str) -> None:
        store = self.server.store
        entity = store.entity(entity_id) if _ENTITY_ID.fullmatch(entity_id) else None
        if entity is None:
            self._error(404, "no such entity")
            return
        doc = {"type": "FeatureCollection", "features": [ray_feature(entity, r) for r in store.rays_of(entity.id)]}
        self._json(200, doc, "application/geo+json")

    def _config(self) -> dict[str, Any]:
        attribution = self.server.attribution
        if not attribution and "openstreetmap.org" in self.server.tile_url:
            attribution = OSM_ATTRIBUTION
        return {"tile_url": self.server.tile_url, "attribution": attribution, "max_features": MAX_FEATURES}


def serve(
    store: Store, host: str = "127.0.0.1", port: int = 8080, tile_url: str = "", attribution: str = ""
) -> MapServer:
    """A bound, not yet running web map server (``port=0`` picks a free one; see ``.url``).

    ``tile_url`` is a Leaflet template such as ``https://tile.openstreetmap.org/{z}/{x}/{y}.png``
    ('' means no tiles: a plain background, fully offline); ``attribution`` is shown as plain
    text. Raises ValueError for a bad tile URL, OSError when the address cannot be bound.
    """
    return MapServer((host, port), store, tile_url, attribution)
