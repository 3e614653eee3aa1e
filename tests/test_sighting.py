"""The sighting contract: firmware.sighting and firmware/sighting.schema.json must agree.

Every message either passes both the JSON Schema (draft 2020-12, formats checked) and
``from_json``, or is refused by both. The schema side parses strictly first: NaN and
Infinity are not JSON, and a JSON Schema cannot see them (NaN passes ``minimum``).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from PIL import Image

from firmware.sighting import (
    MAX_MESSAGE_BYTES,
    SCHEMA,
    Crop,
    Estimate,
    ModelRef,
    Position,
    Ray,
    Sighting,
    SightingError,
    coarsen_time,
    from_json,
    new_id,
    suggested_tags,
    to_json,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DOC = json.loads((ROOT / "firmware" / "sighting.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA_DOC, format_checker=Draft202012Validator.FORMAT_CHECKER)
T0 = datetime(2025, 6, 1, 8, 30, 0, 250_000, tzinfo=UTC)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def schema_accepts(raw: bytes) -> bool:
    """What a subscriber does: a strict JSON parse, then the schema."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False
    return VALIDATOR.is_valid(doc)


def from_json_accepts(raw: bytes) -> bool:
    try:
        from_json(raw)
    except SightingError:
        return False
    return True


def jpeg_b64(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buf, format="JPEG", quality=70)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make(**changes: Any) -> Sighting:
    rays = tuple(
        Ray(T0 + timedelta(milliseconds=100 * i), 52.5200 + i * 1e-5, 13.4050, 3.5, 40.0 + 2 * i, 4.0) for i in range(5)
    )
    fields: dict[str, Any] = {
        "id": "0b8f5f0e-3c1e-4c8a-9d7e-2f1a6b5c4d3e",
        "device": "3f9a1c0e5b7d2468",
        "first_seen_utc": rays[0].t_utc,
        "last_seen_utc": rays[-1].t_utc,
        "label": "dome",
        "score": 0.81,
        "frames": 9,
        "observer": Position(52.52002, 13.405, 3.5),
        "rays": rays,
        "estimate": Estimate(52.5201234, 13.4052345, 6.2),
        "tags": suggested_tags("dome", 215.0),
        "model": ModelRef("sousveil-cams", "0.1.0", "ab" * 32),
        "direction_deg": 215.0,
    }
    fields.update(changes)
    return Sighting(**fields)


def docs_examples() -> list[bytes]:
    text = (ROOT / "docs" / "sighting.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    return [b.encode("utf-8") for b in blocks]


EXAMPLES: dict[str, Sighting] = {
    "full": make(),
    "minimal": make(
        rays=(Ray("2025-06-01T08:30:00Z", 0.0, 0.0, 0.0, 0.0, 0.0),),
        first_seen_utc="2025-06-01T08:30:00Z",
        last_seen_utc="2025-06-01T08:30:00Z",
        frames=1,
        estimate=None,
        direction_deg=None,
        tags={},
        label="alpr",
        score=0,
    ),
    "crop": make(crop=Crop((100, 40, 124, 60), jpeg_b64(24, 20))),
    "extremes": make(
        observer=Position(-90, 180, 100_000),
        estimate=Estimate(90, -180, 0),
        rays=tuple(Ray(T0, -89.9999999, 179.9999999, 0.1, 359.9, 180.0) for _ in range(64)),
        first_seen_utc=T0,
        last_seen_utc=T0,
        score=1,
        frames=1_000_000,
    ),
}


def valid_obj() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(to_json(EXAMPLES["crop"]))
    return obj


# ---- good messages ----


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip(name: str) -> None:
    s = EXAMPLES[name]
    raw = to_json(s)
    assert from_json(raw) == s
    assert to_json(from_json(raw)) == raw  # deterministic bytes


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_pass_schema_and_from_json(name: str) -> None:
    raw = to_json(EXAMPLES[name])
    VALIDATOR.validate(json.loads(raw))
    assert from_json_accepts(raw)


def test_schema_itself_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA_DOC)
    assert SCHEMA_DOC["properties"]["schema"]["const"] == SCHEMA


def test_docs_examples_pass_both() -> None:
    examples = docs_examples()
    assert examples, "docs/sighting.md has no ```json example"
    for raw in examples:
        VALIDATOR.validate(json.loads(raw))
        s = from_json(raw)
        assert json.loads(to_json(s)) == json.loads(raw)


def test_wire_form_is_compact_sorted_and_rounded() -> None:
    s = make(
        observer=Position(52.123456789, 13.987654321, 3.14159),
        score=0.123456,
        direction_deg=359.96,
        rays=(Ray(T0, 1.23456789012, 2.0, 1.06, 12.345, 0.04),),
        first_seen_utc=T0,
        last_seen_utc=T0,
    )
    raw = to_json(s)
    obj = json.loads(raw)
    assert raw == json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
    assert obj["observer"] == {"acc_m": 3.1, "lat_deg": 52.1234568, "lon_deg": 13.9876543}
    assert obj["score"] == 0.123
    assert obj["direction_deg"] == 0.0  # 359.96 rounds to north, not to 360
    assert obj["rays"][0] == {
        "acc_m": 1.1,
        "bearing_deg": 12.3,
        "lat_deg": 1.2345679,
        "lon_deg": 2.0,
        "sigma_deg": 0.0,
        "t_utc": "2025-06-01T08:30:00.250Z",
    }
    assert "crop" not in obj  # off by default: absent, not null
    assert obj["estimate"] is not None and obj["schema"] == SCHEMA


def test_times_are_utc_z_and_keep_microseconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    t = datetime(2025, 6, 1, 10, 30, 0, 123_456, tzinfo=plus2)
    s = make(first_seen_utc=t, last_seen_utc=t, rays=(Ray(t, 1, 2, 3, 4, 5),))
    obj = json.loads(to_json(s))
    assert obj["first_seen_utc"] == "2025-06-01T08:30:00.123456Z"
    assert from_json(to_json(s)).first_seen_utc == t


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(SightingError, match="first_seen_utc"):
        make(first_seen_utc=datetime(2025, 6, 1))


def test_coarsen_time() -> None:
    t = datetime(2025, 6, 1, 8, 37, 12, 500, tzinfo=UTC)
    assert coarsen_time(t, 15) == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    assert coarsen_time(t, 60) == datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    assert coarsen_time(t, 1440) == datetime(2025, 6, 1, tzinfo=UTC)
    assert coarsen_time(datetime(2025, 6, 1, 8, 30, tzinfo=UTC), 15) == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    for bad in (0, 1441, 2.5, True):
        with pytest.raises(ValueError, match="minutes"):
            coarsen_time(t, bad)  # type: ignore[arg-type]
    s = make(
        first_seen_utc=coarsen_time(T0, 15),
        last_seen_utc=coarsen_time(T0, 15),
        rays=(Ray(coarsen_time(T0, 15), 1, 2, 3, 4, 5),),
    )
    assert schema_accepts(to_json(s)) and from_json(to_json(s)) == s


def test_suggested_tags() -> None:
    assert suggested_tags("alpr") == {
        "man_made": "surveillance",
        "surveillance": "outdoor",
        "surveillance:type": "ALPR",
    }
    assert suggested_tags("ptz", 90)["camera:type"] == "panning"
    assert suggested_tags("fixed", 45.04)["direction"] == "45"
    with pytest.raises(SightingError, match="label"):
        suggested_tags("lamp")


def test_new_id_is_uuid4() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    for i in ids:
        make(id=i)


# ---- hostile messages: refused by both, from_json naming the field ----

HUGE = "x" * 201


def _set_path(obj: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if isinstance(obj, list):
        obj[int(last)] = value
    elif value is _DELETE:
        del obj[last]
    else:
        obj[last] = value


_DELETE = object()

# (path to change, new value, the field from_json must name)
HOSTILE: list[tuple[str, Any, str]] = [
    ("id", "not-a-uuid", "id"),
    ("id", "0b8f5f0e-3c1e-1c8a-9d7e-2f1a6b5c4d3e", "id"),  # UUID1, not 4
    ("id", 12, "id"),
    ("schema", "sousveil.sighting/2", "schema"),
    ("schema", None, "schema"),
    ("device", "3F9A1C0E5B7D2468", "device"),
    ("device", "x" * 17, "device"),
    ("first_seen_utc", "2025-06-01T08:30:00+00:00", "first_seen_utc"),
    ("first_seen_utc", "2025-06-01 08:30:00Z", "first_seen_utc"),
    ("first_seen_utc", "2025-13-01T08:30:00Z", "first_seen_utc"),
    ("first_seen_utc", "2025-06-01T08:30:00", "first_seen_utc"),
    ("last_seen_utc", 1748766600, "last_seen_utc"),
    ("label", "lamp", "label"),
    ("label", ["dome"], "label"),
    ("score", 1.01, "score"),
    ("score", -0.01, "score"),
    ("score", "0.5", "score"),
    ("score", True, "score"),
    ("frames", 0, "frames"),
    ("frames", 2.5, "frames"),
    ("frames", 10**7, "frames"),
    ("frames", "9", "frames"),
    ("observer", None, "observer"),
    ("observer", [52.5, 13.4, 3.0], "observer"),
    ("observer.lat_deg", 90.0000001, "observer.lat_deg"),
    ("observer.lat_deg", -1000.0, "observer.lat_deg"),
    ("observer.lon_deg", 180.5, "observer.lon_deg"),
    ("observer.lon_deg", 1e308, "observer.lon_deg"),
    ("observer.acc_m", -0.5, "observer.acc_m"),
    ("observer.acc_m", None, "observer.acc_m"),
    ("observer.lat_deg", _DELETE, "observer.lat_deg"),
    ("observer.alt_m", 34.0, "observer.alt_m"),
    ("rays", [], "rays"),
    ("rays", {}, "rays"),
    ("rays.0", "ray", "rays[0]"),
    ("rays.0.bearing_deg", 360.0, "rays[0].bearing_deg"),
    ("rays.0.bearing_deg", -1.0, "rays[0].bearing_deg"),
    ("rays.4.sigma_deg", 181.0, "rays[4].sigma_deg"),
    ("rays.0.t_utc", "yesterday", "rays[0].t_utc"),
    ("rays.0.lat_deg", "52.52", "rays[0].lat_deg"),
    ("rays.0.extra", 1, "rays[0].extra"),
    ("rays.2.acc_m", _DELETE, "rays[2].acc_m"),
    ("estimate", {"lat_deg": 1.0, "lon_deg": 2.0}, "estimate.sigma_m"),
    ("estimate", "here", "estimate"),
    ("estimate.sigma_m", -1.0, "estimate.sigma_m"),
    ("estimate.lat_deg", 91, "estimate.lat_deg"),
    ("tags", [], "tags"),
    ("tags", {"man_made": 1}, "tags.man_made"),
    ("tags", {"man_made": HUGE}, "tags.man_made"),
    ("tags", {"man made": "x"}, "tags"),
    ("tags", {"k" * 65: "x"}, "tags"),
    ("tags", {"man_made": ""}, "tags.man_made"),
    ("tags", {f"k{i}": "v" for i in range(33)}, "tags"),
    ("model.name", HUGE, "model.name"),
    ("model.version", "", "model.version"),
    ("model.sha256", "AB" * 32, "model.sha256"),
    ("model.sha256", "ab" * 31, "model.sha256"),
    ("model", None, "model"),
    ("direction_deg", 400, "direction_deg"),
    ("direction_deg", "north", "direction_deg"),
    ("crop", None, "crop"),
    ("crop.box_px", [1, 2, 3], "crop.box_px"),
    ("crop.box_px", [1.5, 2, 30, 40], "crop.box_px[0]"),
    ("crop.box_px", [0, 0, 10, -4], "crop.box_px[3]"),
    ("crop.jpeg_b64", "not base64!", "crop.jpeg_b64"),
    ("crop.jpeg_b64", "A" * 40000, "crop.jpeg_b64"),
    ("crop.url", "http://x", "crop.url"),
    ("id", _DELETE, "id"),
    ("estimate", _DELETE, "estimate"),
    ("direction_deg", _DELETE, "direction_deg"),
    ("route", [[52.5, 13.4]], "route"),  # no track, ever
]


@pytest.mark.parametrize(("path", "value", "field"), HOSTILE, ids=[f"{p}={str(v)[:20]}" for p, v, _ in HOSTILE])
def test_hostile_field_refused_by_both(path: str, value: Any, field: str) -> None:
    obj = valid_obj()
    _set_path(obj, path, copy.deepcopy(value) if value is not _DELETE else value)
    raw = json.dumps(obj).encode("utf-8")
    assert not VALIDATOR.is_valid(json.loads(raw)), "the schema let it through"
    with pytest.raises(SightingError) as err:
        from_json(raw)
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize(
    ("path", "constant"),
    [
        ("score", "NaN"),
        ("observer.lat_deg", "NaN"),
        ("rays.0.bearing_deg", "Infinity"),
        ("estimate.sigma_m", "-Infinity"),
    ],
)
def test_nan_and_infinity_refused_by_both(path: str, constant: str) -> None:
    obj = valid_obj()
    _set_path(obj, path, "@@CONSTANT@@")
    raw = json.dumps(obj).replace('"@@CONSTANT@@"', constant).encode("utf-8")
    assert not schema_accepts(raw)
    with pytest.raises(SightingError, match="finite") as err:
        from_json(raw)
    assert err.value.field == path.replace("rays.0", "rays[0]")


def test_too_many_rays_refused_by_both() -> None:
    obj = valid_obj()
    obj["rays"] = obj["rays"] * 13  # 65
    raw = json.dumps(obj).encode("utf-8")
    assert not schema_accepts(raw)
    with pytest.raises(SightingError, match="rays"):
        from_json(raw)


def test_huge_message_refused_by_both() -> None:
    obj = valid_obj()
    obj["rays"] = obj["rays"] * 200  # 1000 rays, about 100 KiB
    raw = json.dumps(obj).encode("utf-8")
    assert len(raw) > MAX_MESSAGE_BYTES
    assert not schema_accepts(raw)
    with pytest.raises(SightingError, match="bytes"):
        from_json(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"sighting"',
        b"42",
        b"{",
        b"\xff\xfe{}",
        b"[" * 60_000 + b"]" * 60_000,
        b'{"id": 1' + b" " * MAX_MESSAGE_BYTES + b"}",
    ],
)
def test_not_a_sighting_at_all(raw: bytes) -> None:
    assert not schema_accepts(raw) or len(raw) > MAX_MESSAGE_BYTES
    with pytest.raises(SightingError):
        from_json(raw)


# What a JSON Schema cannot say; from_json says it (docs/sighting.md lists these).


def test_first_seen_after_last_seen() -> None:
    obj = valid_obj()
    obj["first_seen_utc"], obj["last_seen_utc"] = obj["last_seen_utc"], obj["first_seen_utc"]
    with pytest.raises(SightingError, match="last_seen_utc"):
        from_json(json.dumps(obj).encode())
    with pytest.raises(SightingError, match="last_seen_utc"):
        make(first_seen_utc=T0 + timedelta(seconds=1), last_seen_utc=T0)


def test_impossible_date() -> None:
    obj = valid_obj()
    obj["first_seen_utc"] = "2025-02-30T08:30:00Z"
    with pytest.raises(SightingError, match="first_seen_utc"):
        from_json(json.dumps(obj).encode())


def test_duplicate_keys() -> None:
    raw = to_json(EXAMPLES["full"])
    raw = b'{"score":0.1,' + raw[1:]
    with pytest.raises(SightingError, match="score: appears twice"):
        from_json(raw)


@pytest.mark.parametrize(("box", "size"), [((0, 0, 10, 10), (24, 20)), ((0, 0, 600, 600), (24, 20))])
def test_crop_never_more_than_the_box(box: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    obj = valid_obj()
    obj["crop"] = {"box_px": list(box), "jpeg_b64": jpeg_b64(*size)}
    assert schema_accepts(json.dumps(obj).encode())  # sizes are beyond a JSON Schema
    with pytest.raises(SightingError, match="crop"):
        from_json(json.dumps(obj).encode())


def test_crop_must_be_a_jpeg() -> None:
    obj = valid_obj()
    obj["crop"]["jpeg_b64"] = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 30).decode()
    with pytest.raises(SightingError, match=r"crop\.jpeg_b64"):
        from_json(json.dumps(obj).encode())


def test_to_json_refuses_an_oversized_message() -> None:
    tags = {f"k{i:02d}": "v" * 200 for i in range(32)}
    s = make(tags=tags, model=ModelRef("m" * 200, "v" * 200, "0" * 64), crop=Crop((0, 0, 512, 512), jpeg_b64(512, 512)))
    raw = to_json(s)  # a large JPEG of flat grey is still small
    assert len(raw) <= MAX_MESSAGE_BYTES and from_json(raw) == s


# ---- fuzzing: the two sides agree ----

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def _leaf_paths(obj: Any, prefix: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [prefix] + [p for k, v in obj.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(obj, list):
        return [prefix] + [p for i, v in enumerate(obj) for p in _leaf_paths(v, f"{prefix}.{i}")]
    return [prefix]


PATHS = [p for p in _leaf_paths(valid_obj()) if p]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), JSON_VALUES)
def test_fuzzed_field_both_sides_agree(path: str, value: Any) -> None:
    obj = valid_obj()
    _set_path(obj, path, value)
    raw = json.dumps(obj).encode("utf-8")
    try:
        from_json(raw)
        accepted = True
    except SightingError:
        accepted = False
    assert accepted == schema_accepts(raw), f"{path}={value!r}"


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_fuzzed_bytes_only_ever_raise_sighting_error(raw: bytes) -> None:
    with pytest.raises(SightingError):
        from_json(raw)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_fuzzed_documents_refused_by_both(doc: Any) -> None:
    raw = json.dumps(doc).encode("utf-8")
    assert not schema_accepts(raw)
    with pytest.raises(SightingError):
        from_json(raw)
