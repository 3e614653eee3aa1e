"""PositionTrack: a time-ordered buffer of fixes that answers "where was the bike at time t?".

The position of a frame is interpolated between the two fixes that bracket the frame's UTC
time. Nothing is extrapolated beyond ``tolerance_s``: a frame after the newest fix is
``PENDING`` (the next fix may still come; ask again) until ``max_gap_s`` has passed, then
``STALE``; a frame in a gap between fixes wider than ``max_gap_s`` (a tunnel) is ``GAP``.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
>>> track = PositionTrack()
>>> track.add(Fix(t0, 52.0, 13.0)); track.add(Fix(t0 + timedelta(seconds=1), 52.0001, 13.0))
>>> round(track.at(t0 + timedelta(seconds=0.5)).lat_deg, 6)
52.00005
>>> track.at(t0 + timedelta(seconds=10)).reason.name
'STALE'
"""

from __future__ import annotations

import bisect
import enum
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from firmware.position.fix import Fix, FixMode

EARTH_RADIUS_M: Final = 6_371_008.8
MOVING_MPS: Final = 1.5  # below this a receiver's track_deg is noise; use successive fixes instead
MIN_BEARING_M: Final = 1.0  # fixes closer than this give no usable bearing


class NoFixReason(enum.Enum):
    NO_FIXES = "no fixes yet"
    BEFORE_FIRST = "frame is before the first fix"
    PENDING = "frame is after the newest fix; the next fix has not arrived yet"
    STALE = "newest fix is older than max_gap_s"
    GAP = "fixes around the frame are more than max_gap_s apart"


@dataclass(frozen=True, slots=True)
class NoFix:
    """No position for this time, and why. ``PENDING`` may resolve if asked again later."""

    t_utc: datetime
    reason: NoFixReason
    detail: str

    @property
    def retry(self) -> bool:
        return self.reason is NoFixReason.PENDING


@dataclass(frozen=True, slots=True)
class FramePosition:
    """The bike's position at one time, interpolated from real fixes.

    ``fix_dt_s``: seconds to the nearer bracketing fix (0 at a fix). ``heading_from`` says
    where ``heading_deg`` came from: ``"track"`` (receiver course over ground), ``"fixes"``
    (bearing between successive fixes) or ``None`` (standing still: no heading).
    """

    t_utc: datetime
    lat_deg: float
    lon_deg: float
    alt_m: float | None
    acc_m: float | None
    speed_mps: float | None
    heading_deg: float | None
    heading_from: str | None
    fix_dt_s: float
    mode: FixMode


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _lerp_angle(a: float, b: float, w: float) -> float:
    return (a + (((b - a + 180.0) % 360.0) - 180.0) * w) % 360.0


def _lerp_opt(a: float | None, b: float | None, w: float) -> float | None:
    if a is None or b is None:
        return a if w < 0.5 else b
    return a + (b - a) * w


class PositionTrack:
    """A bounded, thread-safe, time-ordered buffer of fixes (one reader thread adds, the pipeline asks).

    ``max_gap_s``: widest gap between fixes (or between a frame and the newest fix) bridged.
    ``tolerance_s``: how far outside the fixes a frame may be and still take the nearest fix's
    position (its accuracy is widened by the distance that could have been covered).
    """

    def __init__(self, max_gap_s: float = 2.0, tolerance_s: float = 0.2, max_fixes: int = 3600) -> None:
        if max_gap_s <= 0 or tolerance_s < 0 or max_fixes < 2:
            raise ValueError("max_gap_s > 0, tolerance_s >= 0 and max_fixes >= 2 are required")
        self.max_gap_s = max_gap_s
        self.tolerance_s = tolerance_s
        self.max_fixes = max_fixes
        self._times: list[float] = []
        self._fixes: list[Fix] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._fixes)

    def add(self, fix: Fix) -> None:
        """Insert a fix in time order; a fix at an existing time replaces it."""
        t = fix.t_s
        with self._lock:
            i = bisect.bisect_left(self._times, t)
            if i < len(self._times) and self._times[i] == t:
                self._fixes[i] = fix
                return
            self._times.insert(i, t)
            self._fixes.insert(i, fix)
            if len(self._fixes) > self.max_fixes:
                del self._times[0], self._fixes[0]

    def at(self, t_utc: datetime) -> FramePosition | NoFix:  # noqa: PLR0911 (one return per case reads best)
        """The position at ``t_utc`` (aware datetime), or a NoFix saying why there is none."""
        if t_utc.tzinfo is None:
            raise ValueError("t_utc must be timezone-aware (UTC)")
        t = t_utc.timestamp()
        with self._lock:
            times, fixes = self._times, self._fixes
            if not fixes:
                return NoFix(t_utc, NoFixReason.NO_FIXES, "no fix received")
            i = bisect.bisect_left(times, t)
            if i < len(times) and times[i] == t:
                return self._at_fix(t_utc, i, 0.0)
            if i == 0:
                dt = times[0] - t
                if dt <= self.tolerance_s:
                    return self._at_fix(t_utc, 0, dt)
                return NoFix(t_utc, NoFixReason.BEFORE_FIRST, f"{dt:.2f} s before the first fix")
            if i == len(times):
                dt = t - times[-1]
                if dt <= self.tolerance_s:
                    return self._at_fix(t_utc, i - 1, dt)
                if dt <= self.max_gap_s:
                    return NoFix(t_utc, NoFixReason.PENDING, f"{dt:.2f} s after the newest fix")
                return NoFix(t_utc, NoFixReason.STALE, f"newest fix is {dt:.2f} s old")
            a, b = fixes[i - 1], fixes[i]
            gap = times[i] - times[i - 1]
            if gap > self.max_gap_s:
                return NoFix(t_utc, NoFixReason.GAP, f"fixes {gap:.2f} s apart around the frame")
            return self._between(t_utc, a, b, (t - times[i - 1]) / gap, gap)

    def _at_fix(self, t_utc: datetime, i: int, dt: float) -> FramePosition:
        fix = self._fixes[i]
        speed = fix.speed_mps
        nb = self._fixes[i + 1] if i + 1 < len(self._fixes) else None
        na = self._fixes[i - 1] if i > 0 else None
        a, b = (fix, nb) if nb is not None and nb.t_s - fix.t_s <= self.max_gap_s else (na, fix)
        if a is not None and b is not None and b.t_s - a.t_s > self.max_gap_s:
            a = None
        if speed is None and a is not None and b is not None:
            speed = distance_m(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg) / (b.t_s - a.t_s)
        heading, source = _heading(fix.track_deg, speed, a, b)
        acc = fix.acc_m
        if acc is not None and dt > 0:
            acc += (speed or 0.0) * dt  # the bike may have moved this far since/before the fix
        return FramePosition(t_utc, fix.lat_deg, fix.lon_deg, fix.alt_m, acc, speed, heading, source, dt, fix.mode)

    def _between(self, t_utc: datetime, a: Fix, b: Fix, w: float, gap: float) -> FramePosition:
        # Linear in lat/lon is within centimetres of the great circle over the ~10 m of one 1 s gap.
        dlon = ((b.lon_deg - a.lon_deg + 180.0) % 360.0) - 180.0  # across the antimeridian, the short way
        lon = ((a.lon_deg + dlon * w + 180.0) % 360.0) - 180.0
        lat = a.lat_deg + (b.lat_deg - a.lat_deg) * w
        if a.speed_mps is not None and b.speed_mps is not None:
            speed: float | None = a.speed_mps + (b.speed_mps - a.speed_mps) * w
        else:
            speed = distance_m(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg) / gap
        track: float | None
        if a.track_deg is not None and b.track_deg is not None:
            track = _lerp_angle(a.track_deg, b.track_deg, w)
        else:
            track = a.track_deg if w < 0.5 else b.track_deg
        heading, source = _heading(track, speed, a, b)
        acc = None if a.acc_m is None or b.acc_m is None else max(a.acc_m, b.acc_m)
        mode = min(a.mode, b.mode)
        dt = min(w, 1.0 - w) * gap
        return FramePosition(t_utc, lat, lon, _lerp_opt(a.alt_m, b.alt_m, w), acc, speed, heading, source, dt, mode)


def _heading(track: float | None, speed: float | None, a: Fix | None, b: Fix | None) -> tuple[float | None, str | None]:
    if track is not None and speed is not None and speed > MOVING_MPS:
        return track, "track"
    if a is not None and b is not None and distance_m(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg) >= MIN_BEARING_M:
        return bearing_deg(a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg), "fixes"
    return None, None
