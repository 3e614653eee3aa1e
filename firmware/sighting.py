"""The sighting: one message per physical camera passed, the contract between bike and map.

Frozen dataclasses with units in their field names; ``to_json`` writes the wire form and
``from_json`` reads it back, strictly, with the standard library only (it runs on the Pi).
firmware/sighting.schema.json is the same contract as a JSON Schema; the tests hold the two
together. Values are stored at the precision they are published with (lat/lon 1e-7 degrees,
metres and degrees 0.1, score 0.001), so a sighting survives a round trip unchanged.

>>> from datetime import UTC, datetime
>>> t = datetime(2025, 6, 1, 8, 30, 0, tzinfo=UTC)
>>> s = Sighting(
...     id="0b8f5f0e-3c1e-4c8a-9d7e-2f1a6b5c4d3e", device="3f9a1c0e5b7d2468",
...     first_seen_utc=t, last_seen_utc=t, label="dome", score=0.8, frames=1,
...     observer=Position(52.52, 13.405, 4.0), rays=(Ray(t, 52.52, 13.405, 4.0, 45.0, 5.0),),
...     estimate=None, tags=suggested_tags("dome"), model=ModelRef("sousveil-cams", "0.1.0", "0" * 64))
>>> from_json(to_json(s)) == s
True
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final

SCHEMA: Final = "sousveil.sighting/1"
LABELS: Final = ("fixed", "dome", "ptz", "alpr")
MAX_RAYS: Final = 64
MAX_STR: Final = 200  # characters, any free-text field
MAX_TAGS: Final = 32
MAX_TAG_KEY: Final = 64
MAX_FRAMES: Final = 1_000_000
MAX_ACC_M: Final = 100_000.0  # a position worse than this is no position
MAX_SIGMA_M: Final = 100_000.0
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_CROP_SIDE_PX: Final = 512
MAX_CROP_B64: Final = 32 * 1024  # characters of base64: 24 KiB of JPEG at most

_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
DEVICE_ID = re.compile(r"[0-9a-f]{16}")
"""A pseudonymous device id: 16 lowercase hex digits (64 random bits)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAG_KEY = re.compile(r"[A-Za-z0-9_:.\-]+")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# ISO-8601 / RFC 3339 in UTC, 'Z' only, 0..6 fractional digits; the schema has the same pattern.
_UTC = re.compile(r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d{1,6}))?Z")


class SightingError(ValueError):
    """A sighting, or a message claiming to be one, breaks the contract; ``field`` names where."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


@contextmanager
def _at(prefix: str) -> Iterator[None]:
    """Prefix the field named by a SightingError raised inside, e.g. 'lat_deg' -> 'rays[2].lat_deg'."""
    try:
        yield
    except SightingError as e:
        raise SightingError(f"{prefix}.{e.field}" if e.field else prefix, e.reason) from None


# ---- value checks: each names its field and returns the stored (normalised) value ----


def _number(name: str, value: object, lo: float, hi: float, *, places: int, hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SightingError(name, f"must be a number, got {type(value).__name__}")
    raw = float(value)
    if not math.isfinite(raw):
        raise SightingError(name, f"must be a finite number, got {raw!r}")
    x = round(raw, places)
    if x == 0.0:
        x = 0.0  # no '-0.0' on the wire
    if raw < lo or raw > hi or (hi_open and raw >= hi):
        raise SightingError(name, f"must be within {lo:g}..{hi:g}{' (exclusive)' if hi_open else ''}, got {value!r}")
    return x


def _bearing(name: str, value: object) -> float:
    x = _number(name, value, 0.0, 360.0, places=1, hi_open=True)
    return 0.0 if x == 360.0 else x  # 359.96 rounds to 360.0, which is north


def _integer(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 3.0 as an integer too
    if isinstance(value, bool) or not isinstance(value, int):
        raise SightingError(name, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SightingError(name, f"must be within {lo}..{hi}, got {value}")
    return value


def _string(name: str, value: object, *, pattern: re.Pattern[str] | None = None, max_len: int = MAX_STR) -> str:
    if not isinstance(value, str):
        raise SightingError(name, f"must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise SightingError(name, f"must have 1..{max_len} characters, got {len(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise SightingError(name, f"{value[:40]!r} does not match {pattern.pattern}")
    return value


def parse_utc(text: str) -> datetime:
    """An ISO-8601 UTC time with 'Z' (e.g. '2025-06-01T08:30:00.250Z') as an aware datetime."""
    m = _UTC.fullmatch(text)
    if not m:
        raise ValueError(f"{text[:40]!r} is not an ISO-8601 UTC time like 2025-06-01T08:30:00.250Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "").ljust(6, "0"))
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)  # ValueError on 30 Feb


def format_utc(t: datetime) -> str:
    """The wire form of an aware datetime: milliseconds, or microseconds where they are not whole."""
    t = t.astimezone(UTC)
    frac = f".{t.microsecond // 1000:03d}" if t.microsecond % 1000 == 0 else f".{t.microsecond:06d}"
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _time(name: str, value: object) -> datetime:
    if isinstance(value, str):
        try:
            return parse_utc(value)
        except ValueError as e:
            raise SightingError(name, str(e)) from None
    if not isinstance(value, datetime):
        raise SightingError(name, f"must be a datetime or an ISO-8601 UTC string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SightingError(name, "must be timezone-aware (UTC); a naive datetime is ambiguous")
    return value.astimezone(UTC)


def coarsen_time(t: datetime, minutes: int) -> datetime:
    """``t`` rounded down to a multiple of ``minutes`` since midnight UTC (privacy option).

    >>> coarsen_time(datetime(2025, 6, 1, 8, 37, 12, tzinfo=UTC), 15).isoformat()
    '2025-06-01T08:30:00+00:00'
    """
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
        raise ValueError(f"minutes must be an int within 1..1440, got {minutes!r}")
    t = _time("t", t)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    step = timedelta(minutes=minutes)
    return midnight + ((t - midnight) // step) * step


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses: normalise in __post_init__ only


# ---- the parts ----


@dataclass(frozen=True)
class Position:
    """The rider's position (WGS84 degrees) and its horizontal accuracy in metres."""

    lat_deg: float
    lon_deg: float
    acc_m: float

    def __post_init__(self) -> None:
        _set(self, "lat_deg", _number("lat_deg", self.lat_deg, -90.0, 90.0, places=7))
        _set(self, "lon_deg", _number("lon_deg", self.lon_deg, -180.0, 180.0, places=7))
        _set(self, "acc_m", _number("acc_m", self.acc_m, 0.0, MAX_ACC_M, places=1))


@dataclass(frozen=True)
class Ray:
    """One bearing to the camera: where the rider was, when, and which way (clockwise from north).

    ``t_utc`` takes an aware datetime or an ISO-8601 UTC string; it is stored as a datetime.
    ``sigma_deg`` is the one-sigma angular uncertainty of ``bearing_deg``.
    """

    t_utc: datetime
    lat_deg: float
    lon_deg: float
    acc_m: float
    bearing_deg: float
    sigma_deg: float

    def __post_init__(self) -> None:
        _set(self, "t_utc", _time("t_utc", self.t_utc))
        _set(self, "lat_deg", _number("lat_deg", self.lat_deg, -90.0, 90.0, places=7))
        _set(self, "lon_deg", _number("lon_deg", self.lon_deg, -180.0, 180.0, places=7))
        _set(self, "acc_m", _number("acc_m", self.acc_m, 0.0, MAX_ACC_M, places=1))
        _set(self, "bearing_deg", _bearing("bearing_deg", self.bearing_deg))
        _set(self, "sigma_deg", _number("sigma_deg", self.sigma_deg, 0.0, 180.0, places=1))


@dataclass(frozen=True)
class Estimate:
    """The device's own fix of the camera (intersection of the rays) and its one-sigma radius in metres."""

    lat_deg: float
    lon_deg: float
    sigma_m: float

    def __post_init__(self) -> None:
        _set(self, "lat_deg", _number("lat_deg", self.lat_deg, -90.0, 90.0, places=7))
        _set(self, "lon_deg", _number("lon_deg", self.lon_deg, -180.0, 180.0, places=7))
        _set(self, "sigma_m", _number("sigma_m", self.sigma_m, 0.0, MAX_SIGMA_M, places=1))


@dataclass(frozen=True)
class ModelRef:
    """The model that saw the camera: its name, version and the sha256 of its file (lowercase hex)."""

    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        _string("name", self.name)
        _string("version", self.version)
        _string("sha256", self.sha256, pattern=_SHA256, max_len=64)


@dataclass(frozen=True)
class Crop:
    """An image of the camera, off by default: a JPEG no larger than the camera's own box.

    ``box_px`` is (x0, y0, x1, y1) in the pixels of the frame the detector saw; the JPEG's
    size must not exceed the box, and neither side may exceed MAX_CROP_SIDE_PX.
    """

    box_px: tuple[int, int, int, int]
    jpeg_b64: str

    def __post_init__(self) -> None:
        box = self.box_px
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise SightingError("box_px", "must be four integers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (_integer(f"box_px[{i}]", v, 0, 65535) for i, v in enumerate(box))
        if not (0 < x1 - x0 <= MAX_CROP_SIDE_PX and 0 < y1 - y0 <= MAX_CROP_SIDE_PX):
            raise SightingError("box_px", f"needs x0 < x1, y0 < y1, sides at most {MAX_CROP_SIDE_PX} px, got {box!r}")
        _set(self, "box_px", (x0, y0, x1, y1))
        text = _string("jpeg_b64", self.jpeg_b64, pattern=_B64, max_len=MAX_CROP_B64)
        try:
            jpeg = base64.b64decode(text, validate=True)
        except binascii.Error as e:
            raise SightingError("jpeg_b64", f"is not base64: {e}") from None
        size = _jpeg_size(jpeg)
        if size is None:
            raise SightingError("jpeg_b64", "is not a baseline or progressive JPEG")
        if size[0] > x1 - x0 or size[1] > y1 - y0:
            raise SightingError("jpeg_b64", f"image {size[0]}x{size[1]} is larger than the box {x1 - x0}x{y1 - y0}")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF segment, or None when it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def suggested_tags(label: str, direction_deg: float | None = None) -> dict[str, str]:
    """The OpenStreetMap tags a sighting of ``label`` suggests (for a human to review, never upload)."""
    if label not in LABELS:
        raise SightingError("label", f"must be one of {', '.join(LABELS)}, got {label!r}")
    tags = {"man_made": "surveillance", "surveillance": "outdoor"}
    if label == "alpr":
        tags["surveillance:type"] = "ALPR"
    else:
        tags["surveillance:type"] = "camera"
        tags["camera:type"] = {"fixed": "fixed", "dome": "dome", "ptz": "panning"}[label]
    if direction_deg is not None:
        tags["direction"] = f"{_bearing('direction_deg', direction_deg):g}"
    return tags


@dataclass(frozen=True)
class Sighting:
    """One physical camera passed: everything a map needs, nothing of the rider's track.

    ``id`` is a UUID4 and the idempotency key; ``device`` a pseudonymous id (16 hex digits)
    that may rotate; ``observer`` the rider's position at the best frame; ``rays`` the
    bearings, a few seconds of positions near this one camera; ``estimate`` the device's own
    fix of the camera, if it could make one.
    """

    id: str
    device: str
    first_seen_utc: datetime
    last_seen_utc: datetime
    label: str
    score: float
    frames: int
    observer: Position
    rays: tuple[Ray, ...]
    estimate: Estimate | None
    tags: Mapping[str, str]
    model: ModelRef
    direction_deg: float | None = None
    crop: Crop | None = None
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        _string("id", self.id, pattern=_UUID4, max_len=36)
        if self.schema != SCHEMA:
            raise SightingError("schema", f"must be {SCHEMA!r}, got {str(self.schema)[:40]!r}")
        _string("device", self.device, pattern=DEVICE_ID, max_len=16)
        first = _time("first_seen_utc", self.first_seen_utc)
        last = _time("last_seen_utc", self.last_seen_utc)
        if first > last:
            raise SightingError("last_seen_utc", f"is before first_seen_utc ({format_utc(last)} < {format_utc(first)})")
        _set(self, "first_seen_utc", first)
        _set(self, "last_seen_utc", last)
        if self.label not in LABELS:
            raise SightingError("label", f"must be one of {', '.join(LABELS)}, got {str(self.label)[:40]!r}")
        _set(self, "score", _number("score", self.score, 0.0, 1.0, places=3))
        _set(self, "frames", _integer("frames", self.frames, 1, MAX_FRAMES))
        for name, kind in (("observer", Position), ("model", ModelRef)):
            if not isinstance(getattr(self, name), kind):
                raise SightingError(name, f"must be a {kind.__name__}")
        if self.estimate is not None and not isinstance(self.estimate, Estimate):
            raise SightingError("estimate", "must be an Estimate or None")
        if self.crop is not None and not isinstance(self.crop, Crop):
            raise SightingError("crop", "must be a Crop or None")
        rays = self.rays
        if not isinstance(rays, list | tuple) or not 1 <= len(rays) <= MAX_RAYS:
            got = len(rays) if isinstance(rays, list | tuple) else type(rays).__name__
            raise SightingError("rays", f"must be 1..{MAX_RAYS} rays, got {got}")
        for i, ray in enumerate(rays):
            if not isinstance(ray, Ray):
                raise SightingError(f"rays[{i}]", "must be a Ray")
        _set(self, "rays", tuple(rays))
        _set(self, "tags", _tags(self.tags))
        if self.direction_deg is not None:
            _set(self, "direction_deg", _bearing("direction_deg", self.direction_deg))


def _tags(tags: object) -> dict[str, str]:
    if not isinstance(tags, Mapping):
        raise SightingError("tags", f"must be an object of OSM tags, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise SightingError("tags", f"must have at most {MAX_TAGS} tags, got {len(tags)}")
    out: dict[str, str] = {}
    for key in sorted(tags, key=str):
        _string("tags", key, pattern=_TAG_KEY, max_len=MAX_TAG_KEY)
        out[key] = _string(f"tags.{key}", tags[key])
    return out


def new_id() -> str:
    """A fresh sighting id (UUID4)."""
    return str(uuid.uuid4())


# ---- the wire ----


def _to_obj(value: object) -> object:
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return [_to_obj(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        out = {}
        for f in fields(value):  # type: ignore[arg-type]
            v = getattr(value, f.name)
            if f.name == "crop" and v is None:
                continue  # off by default: absent, not null
            out[f.name] = None if v is None else _to_obj(v)
        return out
    return value


def to_json(s: Sighting) -> bytes:
    """The wire form: compact UTF-8 JSON, keys sorted, no NaN; at most MAX_MESSAGE_BYTES."""
    if not isinstance(s, Sighting):
        raise TypeError(f"to_json takes a Sighting, got {type(s).__name__}")
    data = json.dumps(_to_obj(s), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    out = data.encode("utf-8")
    if len(out) > MAX_MESSAGE_BYTES:
        raise SightingError("", f"message is {len(out)} bytes, more than {MAX_MESSAGE_BYTES}")
    return out


_REQUIRED = frozenset(f.name for f in fields(Sighting) if f.name != "crop")
_OPTIONAL = frozenset({"crop"})


def _members(
    obj: object, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SightingError(where, f"must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        name = unknown[0]
        raise SightingError(f"{where}.{name}" if where else name, "unknown field")
    missing = sorted(required - set(obj))
    if missing:
        name = missing[0]
        raise SightingError(f"{where}.{name}" if where else name, "missing field")
    return obj


def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _parse_part(cls: type[Any], obj: object, where: str) -> Any:
    members = _members(obj, where, _names(cls))
    with _at(where):
        return cls(**members)


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` object_pairs_hook that refuses a key twice in one object (SightingError)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SightingError(key, "appears twice in one object")
        out[key] = value
    return out


def from_json(data: bytes | str) -> Sighting:
    """Read and check one message; SightingError names the first field that breaks the contract."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SightingError("", f"message must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SightingError("", f"message is {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=float, object_pairs_hook=no_duplicate_keys)
    except SightingError:
        raise
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SightingError("", f"message is not UTF-8 JSON: {e}") from None
    return from_obj(obj)


def from_obj(obj: object) -> Sighting:
    """Check one message already parsed from JSON (by a parser that refused repeated keys);
    ``from_json`` is this after the size and JSON checks. SightingError names the field."""
    top = _members(obj, "", _REQUIRED, _OPTIONAL)
    args = dict(top)
    args["observer"] = _parse_part(Position, top["observer"], "observer")
    args["model"] = _parse_part(ModelRef, top["model"], "model")
    if top["estimate"] is not None:
        args["estimate"] = _parse_part(Estimate, top["estimate"], "estimate")
    if "crop" in top:
        args["crop"] = _parse_part(Crop, top["crop"], "crop")
    rays = top["rays"]
    if not isinstance(rays, list) or not 1 <= len(rays) <= MAX_RAYS:
        got = len(rays) if isinstance(rays, list) else type(rays).__name__
        raise SightingError("rays", f"must be an array of 1..{MAX_RAYS} rays, got {got}")
    args["rays"] = tuple(_parse_part(Ray, r, f"rays[{i}]") for i, r in enumerate(rays))
    if not isinstance(top["tags"], dict):
        raise SightingError("tags", f"must be an object of OSM tags, got {type(top['tags']).__name__}")
    if not isinstance(top["schema"], str) or top["schema"] != SCHEMA:
        raise SightingError("schema", f"must be {SCHEMA!r}")
    return Sighting(**args)


def _trusted(cls: type[Any], **values: Any) -> Any:
    """An instance of a frozen dataclass with ``values`` set as they are (no __post_init__)."""
    out = object.__new__(cls)
    out.__dict__.update(values)  # frozen: __setattr__ refuses, the instance dict does not
    return out


def _r(value: float, places: int) -> float:
    return round(float(value), places) + 0.0  # + 0.0: no '-0.0'


def parse_checked_utc(name: str, text: str) -> datetime:
    """A time the schema's pattern has already held to ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z``: read by
    datetime.fromisoformat (C, Python >= 3.11) exactly as parse_utc reads it, 20x faster;
    SightingError naming ``name`` for a date that does not exist (30 February)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise SightingError(name, f"{text[:40]!r} is not a real time: {e}") from None


def from_schema_checked(obj: dict[str, Any]) -> Sighting:
    """A Sighting from a parsed message that sighting.schema.json has already accepted.

    The subscriber's fast path: the schema has checked every type, range, pattern, length and
    field name, so this only adds what a schema cannot say (real calendar dates,
    ``first_seen_utc <= last_seen_utc``, the crop, through ``Crop`` itself) and rounds numbers
    to the wire precision as the dataclasses do. Given a schema-valid message it returns what
    ``from_obj`` returns, or raises the same SightingError (tests/test_mapper_validate.py holds
    the two together); anything not schema-checked must go through ``from_obj``.
    """
    o, e = obj["observer"], obj["estimate"]
    rays = tuple(
        _trusted(
            Ray,
            t_utc=parse_checked_utc(f"rays[{i}].t_utc", r["t_utc"]),
            lat_deg=_r(r["lat_deg"], 7),
            lon_deg=_r(r["lon_deg"], 7),
            acc_m=_r(r["acc_m"], 1),
            bearing_deg=_r(r["bearing_deg"], 1) % 360.0,
            sigma_deg=_r(r["sigma_deg"], 1),
        )
        for i, r in enumerate(obj["rays"])
    )
    first = parse_checked_utc("first_seen_utc", obj["first_seen_utc"])
    last = parse_checked_utc("last_seen_utc", obj["last_seen_utc"])
    if first > last:
        raise SightingError("last_seen_utc", f"is before first_seen_utc ({format_utc(last)} < {format_utc(first)})")
    m = obj["model"]
    direction = obj["direction_deg"]
    out: Sighting = _trusted(
        Sighting,
        id=obj["id"],
        device=obj["device"],
        first_seen_utc=first,
        last_seen_utc=last,
        label=obj["label"],
        score=_r(obj["score"], 3),
        frames=int(obj["frames"]),
        observer=_trusted(Position, lat_deg=_r(o["lat_deg"], 7), lon_deg=_r(o["lon_deg"], 7), acc_m=_r(o["acc_m"], 1)),
        rays=rays,
        estimate=None
        if e is None
        else _trusted(Estimate, lat_deg=_r(e["lat_deg"], 7), lon_deg=_r(e["lon_deg"], 7), sigma_m=_r(e["sigma_m"], 1)),
        tags={k: obj["tags"][k] for k in sorted(obj["tags"])},
        model=_trusted(ModelRef, name=m["name"], version=m["version"], sha256=m["sha256"]),
        direction_deg=None if direction is None else _r(direction, 1) % 360.0,
        crop=_parse_part(Crop, obj["crop"], "crop") if "crop" in obj else None,
        schema=obj["schema"],
    )
    return out


__all__ = [
    "DEVICE_ID",
    "LABELS",
    "MAX_MESSAGE_BYTES",
    "MAX_RAYS",
    "SCHEMA",
    "Crop",
    "Estimate",
    "ModelRef",
    "Position",
    "Ray",
    "Sighting",
    "SightingError",
    "coarsen_time",
    "format_utc",
    "from_json",
    "from_obj",
    "from_schema_checked",
    "new_id",
    "no_duplicate_keys",
    "parse_checked_utc",
    "parse_utc",
    "suggested_tags",
    "to_json",
]
