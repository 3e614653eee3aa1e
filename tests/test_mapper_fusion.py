"""Store and fusion: ids stay stable, merges leave aliases, votes and confidence behave, outliers go."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from firmware.mqtt import topic_for
from firmware.position.interpolate import distance_m
from firmware.sighting import Ray, Sighting, from_json, to_json
from mapper.fusion import Fusion, FusionConfig, confidence, fit, make_entity
from mapper.store import SightingRow, SqliteStore, StoreError
from mapper.validate import Checked, check_message
from tests.mqtt_broker import Broker, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures
from tests.sim_world import make_world
from tests.test_mapper_sim import messages, publish_all, start_mapper, wait_until


@pytest.fixture(name="world")
def world_fixture() -> object:
    return make_world(seed=4, n_cameras=12, n_rides=30, n_devices=8, fp_per_km=0.0)


def rows_of(tmp_path: Path, sightings: list[Sighting], name: str = "rows.db") -> list[SightingRow]:
    """The sightings as fusion reads them back from a store."""
    store = SqliteStore(tmp_path / name)
    store.add_sightings(sightings)
    by_id = {r.id: r for r in store.pending(1_000_000)}
    return [by_id[s.id] for s in sightings]


def fused_store(tmp_path: Path, sightings: list[Sighting], name: str = "map.db") -> SqliteStore:
    store = SqliteStore(tmp_path / name)
    store.add_sightings(sightings)
    Fusion(store).run()
    return store


def test_duplicates_are_ignored_and_the_store_survives_a_reopen(tmp_path: Path, world: object) -> None:
    sightings = world.sightings  # type: ignore[attr-defined]
    store = SqliteStore(tmp_path / "map.db")
    assert store.add_sightings(sightings[:5]) == [True] * 5
    assert store.add_sightings(sightings[3:7]) == [False, False, True, True]
    store.close()
    again = SqliteStore(tmp_path / "map.db")
    assert again.stats()["sightings"] == 7 and again.stats()["pending"] == 7


def test_a_file_that_is_not_a_map_store_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "map.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the map store"):
        SqliteStore(bad)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format', 'something-else/9')")
    with pytest.raises(StoreError, match="something-else/9"):
        SqliteStore(other)


def test_entity_ids_are_stable_as_sightings_arrive(tmp_path: Path, world: object) -> None:
    sightings = world.sightings  # type: ignore[attr-defined]
    half = len(sightings) // 2
    store = fused_store(tmp_path, sightings[:half])
    before = {e.id: e for e in store.entities()}
    store.add_sightings(sightings[half:])
    Fusion(store).run()
    after = {e.id: e for e in store.entities()}
    kept = 0
    for eid, old in before.items():
        now = store.entity(eid)  # an absorbed id resolves to the entity that absorbed it
        assert now is not None, eid
        assert distance_m(old.lat_deg, old.lon_deg, now.lat_deg, now.lon_deg) < 15
        assert now.passes >= old.passes
        kept += eid in after
    assert kept >= 0.8 * len(before)  # most ids simply live on


def test_fusing_in_one_go_or_in_pieces_finds_the_same_cameras(tmp_path: Path, world: object) -> None:
    sightings = world.sightings  # type: ignore[attr-defined]
    whole = fused_store(tmp_path, sightings, "whole.db").entities()
    pieces = SqliteStore(tmp_path / "pieces.db")
    for i in range(0, len(sightings), 25):
        pieces.add_sightings(sightings[i : i + 25])
        Fusion(pieces).run()
    strong = [e for e in whole if e.passes >= 5]
    for e in strong:
        assert any(distance_m(e.lat_deg, e.lon_deg, p.lat_deg, p.lon_deg) < 5 for p in pieces.entities()), e


def test_class_by_weighted_vote_and_confidence_from_independent_devices(tmp_path: Path, world: object) -> None:
    sightings = world.sightings  # type: ignore[attr-defined]
    rows = rows_of(tmp_path, sightings[:6])
    one_device = [replace(r, device="aaaaaaaaaaaaaaaa", score=0.9) for r in rows]
    two_devices = [
        replace(r, device="aaaaaaaaaaaaaaaa" if i % 2 else "bbbbbbbbbbbbbbbb", score=0.9) for i, r in enumerate(rows)
    ]
    assert confidence(one_device[:1]) < confidence(one_device[:3]) <= confidence(one_device) <= 0.6
    assert confidence(two_devices) > 0.6 > confidence(one_device[:2])
    assert confidence(two_devices[:2]) > confidence(one_device[:2])  # two riders beat one rider twice
    votes = [replace(r, label="dome", score=0.8) for r in rows[:3]] + [replace(rows[3], label="alpr", score=0.95)]
    e = make_entity("e", votes, fit(votes))
    assert e.label == "dome" and e.votes == {"alpr": 0.95, "dome": 2.4}
    assert e.tags()["camera:type"] == "dome" and e.tags()["source"] == "survey"


def test_a_wild_ray_is_an_outlier_and_does_not_move_the_camera(tmp_path: Path, world: object) -> None:
    w = world  # type: ignore[assignment]
    cam = max(w.passes, key=w.passes.get)  # type: ignore[attr-defined]
    own = rows_of(tmp_path, [s for s in w.sightings if w.truth[s.id] == cam])  # type: ignore[attr-defined]
    clean = fit(own)
    bad = own[0]
    wild = Ray(
        bad.first_seen_utc, bad.rays[0].lat_deg, bad.rays[0].lon_deg, 3.0, (bad.rays[0].bearing_deg + 90) % 360, 5.0
    )
    s0 = next(s for s in w.sightings if s.id == bad.id)  # type: ignore[attr-defined]
    spoilt = replace(s0, rays=(*s0.rays, wild), last_seen_utc=s0.last_seen_utc + timedelta(0))
    rows = [*rows_of(tmp_path, [spoilt], "spoilt.db"), *own[1:]]
    f = fit(rows)
    assert (bad.id, len(s0.rays)) in f.outliers
    assert distance_m(f.lat_deg, f.lon_deg, clean.lat_deg, clean.lon_deg) < 1.0
    store = fused_store(tmp_path, [spoilt])
    (entity,) = store.entities()
    rays = store.rays_of(entity.id)
    assert len(rays) == len(spoilt.rays)


def test_two_entities_of_one_camera_merge_and_the_older_id_survives(tmp_path: Path, world: object) -> None:
    w = world  # type: ignore[assignment]
    cam = max(w.passes, key=w.passes.get)  # type: ignore[attr-defined]
    own = [s for s in w.sightings if w.truth[s.id] == cam]  # type: ignore[attr-defined]
    store = SqliteStore(tmp_path / "map.db")
    # no merging, and joining only with a perfect fit: the passes start separate entities
    strict = FusionConfig(accept_chi2=0.0, merge_m=0.0)
    store.add_sightings(own[:4])
    Fusion(store, strict).run()
    first = store.entities()
    assert len(first) >= 2
    oldest = min(first, key=lambda e: (e.first_seen_utc, e.id))
    store.add_sightings(own[4:])
    Fusion(store).run()  # the default fusion merges them
    final = store.entities()
    near = [e for e in final if distance_m(e.lat_deg, e.lon_deg, oldest.lat_deg, oldest.lon_deg) < 15]
    assert len(near) == 1 and near[0].passes == len(own)
    for e in first:
        assert store.entity(e.id) == near[0]  # every old id resolves to the merged camera


def test_a_full_disk_loses_nothing(broker: Broker, tmp_path: Path, world: object) -> None:
    sightings = world.sightings[:40]  # type: ignore[attr-defined]
    store = SqliteStore(tmp_path / "map.db")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL: as a full disk looks to SQLite
    sub = start_mapper(broker.port, store)
    try:
        publish_all(broker.port, [*messages(sightings), (topic_for(sightings[0]), b"{}")])
        wait_until(lambda: sub.last_error is not None and "full" in sub.last_error)
        assert store.stats()["sightings"] == 0
        store._db.execute("PRAGMA max_page_count = 1073741823")  # space again
        wait_until(lambda: store.stats()["sightings"] == len(sightings))
        wait_until(sub.idle)
    finally:
        sub.close()
    assert sub.last_error is None
    # the refusal was counted with its batch, once however often the batch was tried
    assert {k: v for k, v in store.stats().items() if k.startswith("rejected:")} == {"rejected:schema": 1}


def untidy(s: Sighting) -> bytes:
    """``s`` as a device could send it without to_json: more digits than the wire has, keys in
    another order, spaces, a whole number as 3.0, a bearing that rounds to 360."""
    o = json.loads(to_json(s))
    o["score"] = o["score"] + (0.0004 if o["score"] < 0.5 else -0.0004)
    o["frames"] = float(o["frames"])
    o["observer"] = {k: v + 3.3e-9 if k != "acc_m" else v + 0.04 for k, v in o["observer"].items()}
    if o["estimate"] is not None:
        o["estimate"] = {k: v - 2.1e-9 if k != "sigma_m" else v + 0.04 for k, v in o["estimate"].items()}
    if o["direction_deg"] is not None:
        o["direction_deg"] = 359.97
    for i, r in enumerate(o["rays"]):
        r.update(lat_deg=r["lat_deg"] + 4e-9, lon_deg=r["lon_deg"] - 4e-9, acc_m=r["acc_m"] + 0.04)
        r.update(sigma_deg=r["sigma_deg"] + 0.04, bearing_deg=359.96 if i == 0 else r["bearing_deg"] + 0.04)
    return json.dumps(dict(reversed(o.items())), ensure_ascii=False).encode()


def test_the_subscribers_path_stores_what_add_sightings_stores(tmp_path: Path, world: object) -> None:
    """A message checked in place (check_message, no dataclass per ray) stores what the Sighting
    made from it stores (add_sightings), to the wire's precision, also when it carries more
    digits than the wire has (the store keeps the numbers as sent; the dataclasses round)."""
    sightings = world.sightings[:50]  # type: ignore[attr-defined]
    now = max(s.last_seen_utc for s in sightings) + timedelta(hours=1)
    payloads = [to_json(s) for s in sightings[:25]] + [untidy(s) for s in sightings[25:]]
    assert all(p != to_json(s) for p, s in zip(payloads[25:], sightings[25:], strict=True))
    checked = [check_message(topic_for(s), p, now=now) for s, p in zip(sightings, payloads, strict=True)]
    assert all(isinstance(c, Checked) for c in checked), checked
    a, b = SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db")
    assert a.add_checked(checked) == [True] * 50  # type: ignore[arg-type]
    assert b.add_sightings([c.sighting() for c in checked]) == [True] * 50  # type: ignore[union-attr]
    for x, y in zip(a.pending(), b.pending(), strict=True):  # the same, to the wire's precision
        assert (x.id, x.device, x.first_seen_utc, x.last_seen_utc, x.label, x.frames) == (
            y.id, y.device, y.first_seen_utc, y.last_seen_utc, y.label, y.frames,
        )  # fmt: skip
        assert x.score == pytest.approx(y.score, abs=5e-4)
        assert same_position(x.observer, y.observer)
        assert (x.estimate is None) == (y.estimate is None)
        assert x.estimate is None or y.estimate is None or same_position(x.estimate, y.estimate)
        assert (x.direction_deg is None) == (y.direction_deg is None)
        assert x.direction_deg is None or y.direction_deg is None or turn(x.direction_deg, y.direction_deg) < 0.05
        for rx, ry in zip(x.rays, y.rays, strict=True):
            assert same_position((rx.lat_deg, rx.lon_deg, rx.acc_m), (ry.lat_deg, ry.lon_deg, ry.acc_m))
            assert turn(rx.bearing_deg, ry.bearing_deg) < 0.05 and rx.sigma_deg == pytest.approx(ry.sigma_deg, abs=0.05)
    bodies = dict(a._db.execute("SELECT id, body FROM sightings").fetchall())
    assert [bodies[s.id].encode() for s in sightings] == payloads  # the message as received
    assert [c.sighting() for c in checked[:25]] == sightings[:25]  # type: ignore[union-attr]
    assert [c.sighting() for c in checked[25:]] == [from_json(p) for p in payloads[25:]]  # type: ignore[union-attr]


def same_position(p: tuple[float, float, float], q: tuple[float, float, float]) -> bool:
    """Equal at the wire's precision: 1e-7 degrees (1 cm) and 0.1 m."""
    return abs(p[0] - q[0]) <= 1e-7 and abs(p[1] - q[1]) <= 1e-7 and abs(p[2] - q[2]) <= 0.05


def turn(a: float, b: float) -> float:
    """The angle between two bearings, degrees (359.96 and 0.0 are 0.04 apart)."""
    return abs((a - b + 180.0) % 360.0 - 180.0)
