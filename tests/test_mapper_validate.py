"""Every message is checked before it touches the map; hostile ones are refused, counted, never fatal."""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.mqtt import topic_for
from firmware.sighting import (
    Estimate,
    ModelRef,
    Position,
    Ray,
    Sighting,
    SightingError,
    from_obj,
    from_schema_checked,
    suggested_tags,
    to_json,
)
from mapper.store import SqliteStore
from mapper.validate import REASONS, Rejected, RejectLog, check_message, schema_validator, sighting_schema
from tests.mqtt_broker import Broker, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures
from tests.test_mapper_sim import publish_all, start_mapper, wait_until

T0 = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
DEVICE = "3f9a1c0e5b7d2468"


def good(**over: Any) -> Sighting:
    rays = tuple(
        Ray(T0 + timedelta(seconds=0.2 * i), 55.7047 + i * 2e-5, 13.191, 3.5, 40.0 + 3 * i, 6.0) for i in range(8)
    )
    fields: dict[str, Any] = {
        "id": "0b8f5f0e-3c1e-4c8a-9d7e-2f1a6b5c4d3e",
        "device": DEVICE,
        "first_seen_utc": T0,
        "last_seen_utc": T0 + timedelta(seconds=1.4),
        "label": "dome",
        "score": 0.8,
        "frames": 8,
        "observer": Position(55.7048, 13.191, 3.5),
        "rays": rays,
        "estimate": Estimate(55.7049, 13.1913, 4.0),
        "tags": suggested_tags("dome"),
        "model": ModelRef("sousveil-cams", "0.1.0", "ab" * 32),
    }
    fields.update(over)
    return Sighting(**fields)


def obj(s: Sighting) -> dict[str, Any]:
    return json.loads(to_json(s))  # type: ignore[no-any-return]


def check(topic: str, payload: bytes) -> Sighting | Rejected:
    result = check_message(topic, payload, now=T0 + timedelta(hours=1))
    return result if isinstance(result, Rejected) else result.sighting()


def reason(topic: str, payload: bytes) -> str:
    result = check(topic, payload)
    assert isinstance(result, Rejected), result
    return result.reason


def test_a_good_sighting_passes_unchanged() -> None:
    s = good()
    assert check(topic_for(s), to_json(s)) == s


def edit(s: Sighting, **changes: Any) -> bytes:
    o = obj(s)
    o.update(changes)
    return json.dumps(o).encode()


@pytest.mark.parametrize(
    ("make", "want"),
    [
        (lambda s, t: (t.replace("sightings", "other"), to_json(s)), "topic"),
        (lambda s, t: (t.rsplit("/", 1)[0] + "/+", to_json(s)), "topic"),
        (lambda s, t: (t, to_json(s) + b" " * 70_000), "oversized"),
        (lambda s, t: (t, b"\xff\xfe not utf-8"), "json"),
        (lambda s, t: (t, to_json(s).replace(b'"score":0.8', b'"score":NaN')), "json"),
        (lambda s, t: (t, to_json(s).replace(b'"score":0.8', b'"score":Infinity')), "json"),
        (lambda s, t: (t, to_json(s).replace(b'"score":0.8', b'"score":0.8,"score":0.9')), "json"),
        (lambda s, t: (t, b"[" * 5000 + b"]" * 5000), "json"),
        (lambda s, t: (t, b"{}"), "schema"),
        (lambda s, t: (t, b"null"), "schema"),
        (lambda s, t: (t, edit(s, score="0.8")), "schema"),
        (lambda s, t: (t, edit(s, label="speed camera")), "schema"),
        (lambda s, t: (t, edit(s, extra=1)), "schema"),
        (lambda s, t: (t, edit(s, rays=[obj(s)["rays"][0]] * 2000)), "oversized"),
        (lambda s, t: (t, edit(s, rays=[obj(s)["rays"][0]] * 300)), "schema"),
        (lambda s, t: (t, edit(s, tags={f"k{i}": "v" for i in range(100)})), "schema"),
        (lambda s, t: (t, edit(s, observer={"lat_deg": 123.0, "lon_deg": 13.0, "acc_m": 3.0})), "schema"),
        (lambda s, t: (t, edit(s, frames=1e300)), "schema"),
        (lambda s, t: (t, edit(s, first_seen_utc="2026-02-30T08:30:00.000Z")), "contract"),
        (lambda s, t: (t, edit(s, last_seen_utc="2026-05-01T08:29:00.000Z")), "contract"),
        (lambda s, t: (t.replace(DEVICE, "0000000000000000"), to_json(s)), "device"),
        (lambda s, t: (t.replace(t.split("/")[-2], "u33dc").replace(t.split("/")[-3], "u33d"), to_json(s)), "topic"),
    ],
)
def test_hostile_messages_are_refused_with_a_reason(make: Any, want: str) -> None:
    s = good()
    topic, payload = make(s, topic_for(s))
    assert reason(topic, payload) == want


def test_the_camera_must_lie_in_the_topics_cell() -> None:
    s = good()
    far = good(estimate=None, observer=Position(52.52, 13.405, 3.5), rays=tuple(
        Ray(r.t_utc, 52.52, 13.405, 3.5, r.bearing_deg, r.sigma_deg) for r in good().rays))  # fmt: skip
    assert reason(topic_for(s), to_json(far)) == "region"  # Berlin's sighting on Lund's topic


@pytest.mark.parametrize(
    ("over", "want"),
    [
        (
            {"first_seen_utc": datetime(2019, 6, 1, tzinfo=UTC), "last_seen_utc": datetime(2019, 6, 1, tzinfo=UTC)},
            "time",
        ),
        ({"first_seen_utc": T0 + timedelta(days=2), "last_seen_utc": T0 + timedelta(days=2)}, "time"),
        ({"last_seen_utc": T0 + timedelta(minutes=40)}, "impossible"),  # a pass of 40 minutes
        ({"estimate": Estimate(55.7147, 13.191, 4.0)}, "impossible"),  # 1.1 km from the rider
    ],
)
def test_impossible_sightings_are_refused(over: dict[str, Any], want: str) -> None:
    s = good(**over)
    assert reason(topic_for(s), to_json(s)) == want


def test_rays_kilometres_apart_are_impossible() -> None:
    rays = (*good().rays[:-1], Ray(T0, 55.75, 13.191, 3.5, 40.0, 6.0))
    s = good(rays=rays)
    assert reason(topic_for(s), to_json(s)) == "impossible"


def test_every_reason_is_documented() -> None:
    text = (Path(__file__).parents[1] / "docs" / "map.md").read_text(encoding="utf-8")
    for r in REASONS:
        assert f"`{r}`" in text, r


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def _paths(o: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(o, dict):
        for k, v in o.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(o: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    o = json.loads(json.dumps(o))
    cur = o
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return o


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=json_values)
def test_compiled_schema_agrees_with_jsonschema(data: st.DataObject, value: Any) -> None:
    """The mapper's fast validator gives jsonschema's verdict on mutated messages."""
    base = obj(good())
    path = data.draw(st.sampled_from(_paths(base)))
    doc = _mutate(base, path, value)
    reference = jsonschema.Draft202012Validator(sighting_schema()).is_valid(doc)
    try:
        schema_validator()(doc)
        fast = True
    except Exception:
        fast = False
    assert fast == reference, (path, value)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_garbage_never_raises(payload: bytes) -> None:
    s = good()
    result = check(topic_for(s), payload)
    assert isinstance(result, Rejected) and result.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(data=st.data(), value=json_values | st.sampled_from([math.inf, -math.inf, 1e308, -1e308, 2**70, ""]))
def test_mutated_messages_never_raise(data: st.DataObject, value: Any) -> None:
    s = good()
    base = obj(s)
    doc = _mutate(base, data.draw(st.sampled_from(_paths(base))), value)
    payload = json.dumps(doc).encode()  # inf becomes Infinity: refused as not JSON
    result = check(topic_for(s), payload)
    assert isinstance(result, Sighting | Rejected)


def test_the_reject_log_logs_a_few_and_summarises_the_rest(caplog: Any) -> None:
    now = [0.0]
    rl = RejectLog(burst=3, window_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="mapper.validate")
    for _ in range(100):
        rl.add(Rejected("json", "not JSON"), "t")
    assert len(caplog.records) == 3
    now[0] = 11.0
    rl.add(Rejected("json", "not JSON"), "t")
    assert "'json': 97" in caplog.text and len(caplog.records) == 5  # 3, the summary, the next window's first


def test_a_flood_of_hostile_messages_does_not_stop_the_mapper(broker: Broker, tmp_path: Path) -> None:
    t = datetime.now(UTC) - timedelta(minutes=5)  # the subscriber checks times against its own clock
    rays = tuple(Ray(t, r.lat_deg, r.lon_deg, r.acc_m, r.bearing_deg, r.sigma_deg) for r in good().rays)
    s = good(first_seen_utc=t, last_seen_utc=t + timedelta(seconds=1), rays=rays)
    topic = topic_for(s)
    hostile = [
        (topic, b"\x00" * 100),
        (topic, b'{"id": NaN}'),
        (topic, b"[" * 100_000),  # over the size limit and deeply nested
        (topic, edit(s, rays=[obj(s)["rays"][0]] * 500)),
        (topic.replace(DEVICE, "0000000000000000"), to_json(s)),
        ("sousveil/v1/sightings/u/zz/" + DEVICE, to_json(s)),
    ] * 20
    store = SqliteStore(tmp_path / "map.db")
    sub = start_mapper(broker.port, store)
    try:
        t0 = time.monotonic()
        publish_all(broker.port, [*hostile, (topic, to_json(s))])
        wait_until(lambda: sub.counters.received >= len(hostile) + 1)
        wait_until(sub.idle)
        assert time.monotonic() - t0 < 20
    finally:
        sub.close()
    stats = store.stats()
    assert stats["sightings"] == 1 and stats["entities"] == 1  # the good one got through
    assert sum(v for k, v in stats.items() if k.startswith("rejected:")) == len(hostile)
    assert stats["rejected:json"] == 40 and stats["rejected:device"] == 20 and stats["rejected:topic"] == 20


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=json_values | st.sampled_from([359.96, -0.0, 3.0, 1e-9, "2026-02-29T00:00:00Z"]))
def test_the_fast_path_builds_what_from_obj_builds(data: st.DataObject, value: Any) -> None:
    """After the schema, from_schema_checked (the subscriber's path) = from_obj (the full checks)."""
    base = obj(good(direction_deg=12.0))
    doc = _mutate(base, data.draw(st.sampled_from(_paths(base))), value)
    try:
        schema_validator()(doc)
    except Exception:
        return  # the schema refuses it: the fast path never sees it
    try:
        slow: Sighting | str = from_obj(doc)
    except SightingError as e:
        slow = e.field
    try:
        fast: Sighting | str = from_schema_checked(doc)
    except SightingError as e:
        fast = e.field
    assert fast == slow
