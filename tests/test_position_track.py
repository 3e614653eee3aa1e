"""PositionTrack: interpolation at frame time, heading, speed, and the no-fix rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from firmware.position import Fix, FixMode, FramePosition, NoFix, NoFixReason, PositionTrack
from firmware.position.interpolate import bearing_deg, distance_m

T0 = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


def _t(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def _pos(result: FramePosition | NoFix) -> FramePosition:
    assert isinstance(result, FramePosition), result
    return result


def _nofix(result: FramePosition | NoFix) -> NoFix:
    assert isinstance(result, NoFix), result
    return result


def _track(*fixes: Fix, **kw: float) -> PositionTrack:
    track = PositionTrack(**kw)  # type: ignore[arg-type]
    for fix in fixes:
        track.add(fix)
    return track


def test_midpoint_and_exact_fix() -> None:
    a = Fix(_t(0), 52.0, 13.0, alt_m=40.0, acc_m=4.0, speed_mps=4.0, track_deg=0.0, mode=FixMode.FIX_3D)
    b = Fix(_t(1), 52.0001, 13.0002, alt_m=42.0, acc_m=6.0, speed_mps=6.0, track_deg=10.0, mode=FixMode.FIX_3D)
    track = _track(a, b)
    mid = _pos(track.at(_t(0.5)))
    assert (mid.lat_deg, mid.lon_deg) == (pytest.approx(52.00005), pytest.approx(13.0001))
    assert mid.alt_m == pytest.approx(41.0) and mid.acc_m == 6.0 and mid.speed_mps == pytest.approx(5.0)
    assert mid.heading_deg == pytest.approx(5.0) and mid.heading_from == "track"
    assert mid.fix_dt_s == pytest.approx(0.5)
    quarter = _pos(track.at(_t(0.25)))
    assert quarter.lat_deg == pytest.approx(52.000025)
    at_b = _pos(track.at(_t(1)))
    assert (at_b.lat_deg, at_b.lon_deg, at_b.fix_dt_s, at_b.acc_m) == (52.0001, 13.0002, 0.0, 6.0)


def test_interpolation_is_close_to_the_great_circle() -> None:
    a, b = Fix(_t(0), 60.0, 10.0), Fix(_t(1), 60.0001, 10.0002)
    mid = _pos(_track(a, b).at(_t(0.5)))
    d_a = distance_m(a.lat_deg, a.lon_deg, mid.lat_deg, mid.lon_deg)
    d_b = distance_m(mid.lat_deg, mid.lon_deg, b.lat_deg, b.lon_deg)
    assert abs(d_a - d_b) < 0.01
    assert d_a + d_b == pytest.approx(distance_m(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg), abs=0.01)


def test_antimeridian_short_way() -> None:
    mid = _pos(_track(Fix(_t(0), 0.0, 179.99995), Fix(_t(1), 0.0, -179.99995)).at(_t(0.5)))
    assert abs(mid.lon_deg) == pytest.approx(180.0)


def test_no_fixes_before_first_after_last() -> None:
    assert _nofix(PositionTrack().at(T0)).reason is NoFixReason.NO_FIXES
    track = _track(Fix(_t(0), 52.0, 13.0, acc_m=5.0, speed_mps=5.0), Fix(_t(1), 52.0001, 13.0))
    assert _nofix(track.at(_t(-0.5))).reason is NoFixReason.BEFORE_FIRST
    near = _pos(track.at(_t(-0.1)))  # within tolerance: the fix itself, never extrapolated
    assert (near.lat_deg, near.lon_deg) == (52.0, 13.0)
    assert near.acc_m == pytest.approx(5.0 + 5.0 * 0.1)  # widened by how far the bike could have gone
    pending = _nofix(track.at(_t(2.0)))
    assert pending.reason is NoFixReason.PENDING and pending.retry
    stale = _nofix(track.at(_t(3.5)))
    assert stale.reason is NoFixReason.STALE and not stale.retry and "2.50 s" in stale.detail


def test_tunnel_gap_is_no_fix() -> None:
    track = _track(Fix(_t(0), 52.0, 13.0), Fix(_t(1), 52.0001, 13.0), Fix(_t(9), 52.001, 13.0), max_gap_s=2.0)
    gap = _nofix(track.at(_t(5)))
    assert gap.reason is NoFixReason.GAP and "8.00 s" in gap.detail
    assert isinstance(track.at(_t(0.5)), FramePosition)
    assert isinstance(track.at(_t(9)), FramePosition)  # exactly at the fix after the tunnel
    wide = _track(Fix(_t(0), 52.0, 13.0), Fix(_t(9), 52.001, 13.0), max_gap_s=10.0)
    assert isinstance(wide.at(_t(5)), FramePosition)  # configurable


def test_heading_from_successive_fixes_when_slow_or_no_track() -> None:
    # 1 m/s north-east, receiver track says 200 (noise when slow): bearing of the fixes wins
    a = Fix(_t(0), 52.0, 13.0, speed_mps=1.0, track_deg=200.0)
    b = Fix(_t(1), 52.00001, 13.0000164, speed_mps=1.0, track_deg=200.0)
    mid = _pos(_track(a, b).at(_t(0.5)))
    assert mid.heading_from == "fixes"
    assert mid.heading_deg == pytest.approx(bearing_deg(52.0, 13.0, 52.00001, 13.0000164))
    assert 40 < mid.heading_deg < 50
    # no speed or track at all (a GPX without extensions): speed and heading from the fixes
    c, d = Fix(_t(0), 52.0, 13.0), Fix(_t(1), 52.0, 13.0000736)  # ~5 m east
    mid = _pos(_track(c, d).at(_t(0.5)))
    assert mid.heading_from == "fixes" and mid.heading_deg == pytest.approx(90.0, abs=0.01)
    assert mid.speed_mps == pytest.approx(5.0, rel=0.01)
    at_c = _pos(_track(c, d).at(_t(0)))
    assert at_c.heading_deg == pytest.approx(90.0, abs=0.01) and at_c.speed_mps == pytest.approx(5.0, rel=0.01)


def test_standing_still_has_no_heading() -> None:
    a, b = Fix(_t(0), 52.0, 13.0, speed_mps=0.0, track_deg=123.0), Fix(_t(1), 52.0, 13.0, speed_mps=0.0)
    mid = _pos(_track(a, b).at(_t(0.5)))
    assert mid.heading_deg is None and mid.heading_from is None and mid.speed_mps == 0.0


def test_out_of_order_and_duplicate_fixes() -> None:
    track = _track(Fix(_t(1), 52.0001, 13.0), Fix(_t(0), 52.0, 13.0), Fix(_t(1), 52.0002, 13.0))
    assert len(track) == 2
    assert _pos(track.at(_t(1))).lat_deg == 52.0002  # the later report of one time wins
    assert _pos(track.at(_t(0.5))).lat_deg == pytest.approx(52.0001)


def test_bounded_buffer() -> None:
    track = PositionTrack(max_fixes=5)
    for i in range(10):
        track.add(Fix(_t(i), 52.0, 13.0))
    assert len(track) == 5
    assert _nofix(track.at(_t(2))).reason is NoFixReason.BEFORE_FIRST


def test_fix_validation() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Fix(datetime(2024, 6, 1), 52.0, 13.0)
    with pytest.raises(ValueError, match="lat"):
        Fix(T0, 91.0, 13.0)
    with pytest.raises(ValueError, match="no fix is a state"):
        Fix(T0, 52.0, 13.0, mode=FixMode.NO_FIX)
    with pytest.raises(ValueError, match="timezone"):
        PositionTrack().at(datetime(2024, 6, 1))
    assert Fix(T0, 52.0, 13.0, track_deg=-90.0).track_deg == 270.0
