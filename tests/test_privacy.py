"""Privacy before publishing (firmware/privacy.py): device id, zones, coarse times, crops."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_sighting import jpeg_b64, make

from firmware.config import PrivacySettings, PrivacyZone
from firmware.position.interpolate import distance_m
from firmware.privacy import (
    Delayed,
    HoldError,
    HoldStore,
    PrivacyFilter,
    apply_privacy,
    coarsen,
    device_id,
    zones_hit,
)
from firmware.sighting import Crop, Estimate, Position, Ray, Sighting, to_json

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
# make(): observer 52.52002, 13.405; estimate 52.5201234, 13.4052345; rays 52.52..52.52004, 13.405


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


# ---- device id ----


def test_id_is_created_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "device-id"
    first = device_id(path, clock=Clock(NOW))
    assert len(first) == 16 and all(c in "0123456789abcdef" for c in first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert device_id(path, clock=Clock(NOW + timedelta(days=400))) == first  # rotate_days 0: never
    assert json.loads(path.read_text())["id"] == first
    assert device_id(tmp_path / "other", clock=Clock(NOW)) != first


def test_id_is_rotated_after_rotate_days(tmp_path: Path) -> None:
    path = tmp_path / "device-id"
    clock = Clock(NOW)
    first = device_id(path, 7, clock)
    clock.t = NOW + timedelta(days=6, hours=23)
    assert device_id(path, 7, clock) == first
    clock.t = NOW + timedelta(days=7)
    second = device_id(path, 7, clock)
    assert second != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    clock.t = NOW + timedelta(days=13)
    assert device_id(path, 7, clock) == second  # the new id's age counts from its own draw
    clock.t = NOW + timedelta(days=14)
    assert device_id(path, 7, clock) not in (first, second)


def test_damaged_or_loose_id_file(tmp_path: Path) -> None:
    path = tmp_path / "device-id"
    path.write_text("not json")
    fresh = device_id(path, clock=Clock(NOW))
    assert len(fresh) == 16
    path.chmod(0o644)
    assert device_id(path, clock=Clock(NOW)) == fresh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- distances and zones ----


def test_distance_known_values() -> None:  # the one haversine, zones use it
    # one degree of latitude on the mean-radius sphere: 2 * pi * 6371008.8 / 360
    assert distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195.08, abs=0.1)
    # Paris (Notre-Dame) to London (Trafalgar Square): about 343.5 km
    assert distance_m(48.8530, 2.3499, 51.5080, -0.1281) == pytest.approx(343_500, rel=0.005)
    assert distance_m(52.52, 13.405, 52.52, 13.405) == 0.0


def zone(lat: float, lon: float, radius_m: float, action: Any = "drop", delay_h: float = 0.0) -> PrivacyZone:
    return PrivacyZone(lat, lon, radius_m, action, delay_h)


def moved(s: Sighting, dlat: float) -> Sighting:
    """The same sighting ``dlat`` degrees further north (observer, estimate, rays)."""
    assert s.estimate is not None
    return replace(
        s,
        observer=Position(s.observer.lat_deg + dlat, s.observer.lon_deg, s.observer.acc_m),
        estimate=Estimate(s.estimate.lat_deg + dlat, s.estimate.lon_deg, s.estimate.sigma_m),
        rays=tuple(replace(r, lat_deg=r.lat_deg + dlat) for r in s.rays),
    )


def test_drop_zone_inside_and_outside() -> None:
    s = make()
    home = PrivacySettings(zones=(zone(52.52002, 13.405, 100.0),))
    assert apply_privacy(s, home, NOW) is None
    far = moved(s, 0.01)  # about 1.1 km north
    assert apply_privacy(far, home, NOW) == far


def test_zone_edge_by_haversine() -> None:
    s = make(estimate=None, rays=(Ray(datetime(2025, 6, 1, 8, 30, tzinfo=UTC), 52.521, 13.405, 3.0, 40.0, 4.0),))
    centre = (52.52002 - 0.001, 13.405)  # observer ~111 m north of the centre, ray ~222 m
    distance = distance_m(*centre, 52.52002, 13.405)
    assert distance == pytest.approx(111.2, abs=0.1)
    assert zones_hit(s, [zone(*centre, distance + 0.5)])
    assert not zones_hit(s, [zone(*centre, distance - 0.5)])


def test_estimate_or_a_ray_inside_is_enough() -> None:
    s = make()
    assert s.estimate is not None
    # a zone around the camera estimate only (observer is ~13 m away, radius 5 m)
    assert distance_m(s.estimate.lat_deg, s.estimate.lon_deg, s.observer.lat_deg, s.observer.lon_deg) > 5
    assert apply_privacy(s, PrivacySettings(zones=(zone(s.estimate.lat_deg, s.estimate.lon_deg, 5.0),)), NOW) is None
    first = s.rays[0]
    assert apply_privacy(s, PrivacySettings(zones=(zone(first.lat_deg, first.lon_deg, 1.0),)), NOW) is None


def test_delay_zone_holds_until_release() -> None:
    s = make()
    settings = PrivacySettings(
        zones=(zone(52.52, 13.405, 200.0, "delay", 2.0), zone(52.5201, 13.405, 200.0, "delay", 24.0))
    )
    result = apply_privacy(s, settings, NOW)
    assert isinstance(result, Delayed)
    assert result.release_utc == NOW + timedelta(hours=24)  # the longest delay of the zones hit
    assert result.sighting == s
    assert apply_privacy(moved(s, 0.01), settings, NOW) == moved(s, 0.01)


def test_drop_wins_over_delay() -> None:
    settings = PrivacySettings(zones=(zone(52.52, 13.405, 200.0, "delay", 2.0), zone(52.52, 13.405, 200.0)))
    assert apply_privacy(make(), settings, NOW) is None


def test_filter_counts_and_releases() -> None:
    clock = Clock(NOW)
    settings = PrivacySettings(
        zones=(zone(52.52, 13.405, 200.0, "delay", 1.0), zone(52.60, 13.405, 200.0)), coarse_time_min=5
    )
    f = PrivacyFilter(settings, clock)
    near_delay, near_drop, far = make(), moved(make(), 0.08), moved(make(), 0.3)
    assert f.submit(near_delay) is None
    assert f.submit(near_drop) is None
    out = f.submit(far)
    assert out is not None and out.first_seen_utc == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    assert (f.dropped, f.delayed, f.held) == (1, 1, 1)
    clock.t = NOW + timedelta(minutes=59)
    assert f.due() == []
    clock.t = NOW + timedelta(hours=1)
    released = f.due()
    assert [s.id for s in released] == [near_delay.id] and f.held == 0
    assert released[0].rays[0].t_utc == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)  # coarsened before holding


def test_the_hold_is_durable_across_runs(tmp_path: Path) -> None:
    """A sighting still held when a ride ends is published by a later run once due, exactly once."""
    path = tmp_path / "state" / "privacy-hold.db"
    settings = PrivacySettings(zones=(zone(52.52, 13.405, 200.0, "delay", 1.0),), hold_file=path)
    clock = Clock(NOW)
    first = PrivacyFilter(settings, clock, hold=HoldStore(path))
    held = make()
    assert first.submit(held) is None and first.held == 1
    first.close()  # the ride ends (or the power goes) with the sighting still held
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    clock.t = NOW + timedelta(minutes=30)
    early = PrivacyFilter(settings, clock, hold=HoldStore(path))
    assert early.held == 1 and early.due() == []
    early.close()

    clock.t = NOW + timedelta(hours=1, minutes=5)
    later = PrivacyFilter(settings, clock, hold=HoldStore(path))
    [released] = later.due()
    assert released == held
    later.close()  # crashed before the sink took it: still on disk
    again = PrivacyFilter(settings, clock, hold=HoldStore(path))
    [released] = again.due()
    assert released.id == held.id  # the same id again; subscribers de-duplicate
    again.delivered(released)
    again.close()
    assert PrivacyFilter(settings, clock, hold=HoldStore(path)).held == 0


def test_a_damaged_hold_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hold.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(HoldError, match=r"privacy hold .*hold\.db"):
        HoldStore(path).load()


# ---- times and crops ----


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (1, datetime(2025, 6, 1, 8, 37, tzinfo=UTC)),
        (15, datetime(2025, 6, 1, 8, 30, tzinfo=UTC)),
        (60, datetime(2025, 6, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_coarse_times(minutes: int, expected: datetime) -> None:
    t0 = datetime(2025, 6, 1, 8, 37, 12, 500_000, tzinfo=UTC)
    rays = tuple(Ray(t0 + timedelta(seconds=i), 52.52, 13.405, 3.5, 40.0, 4.0) for i in range(3))
    s = make(rays=rays, first_seen_utc=rays[0].t_utc, last_seen_utc=rays[-1].t_utc)
    out = apply_privacy(s, PrivacySettings(coarse_time_min=minutes), NOW)
    assert isinstance(out, Sighting)
    assert out.first_seen_utc == expected and out.last_seen_utc == expected
    assert all(r.t_utc == expected for r in out.rays)
    assert out.rays[0].bearing_deg == s.rays[0].bearing_deg and out.id == s.id
    assert coarsen(s, 0) is s
    assert apply_privacy(s, PrivacySettings(), NOW) == s  # 0: exact times


def test_crops_are_stripped_unless_allowed() -> None:
    s = make(crop=Crop((100, 40, 124, 60), jpeg_b64(24, 20)))
    out = apply_privacy(s, PrivacySettings(), NOW)
    assert isinstance(out, Sighting) and out.crop is None
    assert b"crop" not in to_json(out)
    assert apply_privacy(s, PrivacySettings(publish_crops=True), NOW) == s


def test_nothing_beyond_the_sighting_is_published() -> None:
    s = make()
    out = apply_privacy(s, PrivacySettings(coarse_time_min=5), NOW)
    assert isinstance(out, Sighting)
    assert len(out.rays) == len(s.rays)
    assert {(r.lat_deg, r.lon_deg) for r in out.rays} == {(r.lat_deg, r.lon_deg) for r in s.rays}
    assert out.observer == s.observer


def test_a_held_sighting_now_in_a_drop_zone_is_dropped(tmp_path: Path) -> None:
    """The rider turned a delay zone into a drop zone while sightings were held: they are never published."""
    path = tmp_path / "hold.db"
    clock = Clock(NOW)
    delay = PrivacySettings(zones=(zone(52.52, 13.405, 200.0, "delay", 1.0),))
    first = PrivacyFilter(delay, clock, hold=HoldStore(path))
    assert first.submit(make()) is None
    first.close()
    clock.t = NOW + timedelta(hours=2)
    drop = PrivacySettings(zones=(zone(52.52, 13.405, 200.0, "drop"),))
    later = PrivacyFilter(drop, clock, hold=HoldStore(path))
    assert later.due() == [] and later.dropped == 1
    later.close()
    assert HoldStore(path).load() == []
