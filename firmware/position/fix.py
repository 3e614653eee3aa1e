"""The GPS fix, the frame position and the source interface: the boundary types of position/.

A ``Fix`` is one epoch the receiver reported *with* a position. "No fix" is a state, not a Fix:
sources count such epochs and report them in their state, and nothing downstream ever sees a
position that the receiver did not give.

Horizontal accuracy ``acc_m`` is a rough radius in metres. gpsd gives it directly (``eph``,
else the root-sum-square of ``epx``/``epy``; gpsd states these as ~95 % confidence). GPX and
NMEA give only HDOP, which is unitless; ``acc_m = HDOP * HDOP_TO_M`` with ``HDOP_TO_M = 5.0``
(a typical consumer-receiver user range error of ~5 m; see docs/position.md).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol, runtime_checkable

HDOP_TO_M: Final = 5.0  # metres of horizontal error per unit of HDOP (rough consumer-receiver UERE)
KNOTS_TO_MPS: Final = 1852.0 / 3600.0


class FixMode(enum.IntEnum):
    """gpsd's TPV ``mode`` values; a ``Fix`` is only ever FIX_2D or FIX_3D."""

    UNKNOWN = 0
    NO_FIX = 1
    FIX_2D = 2
    FIX_3D = 3


@dataclass(frozen=True, slots=True)
class Fix:
    """One position the receiver reported, at the receiver's UTC time (never arrival time).

    >>> Fix(datetime(2025, 6, 1, 8, 30, tzinfo=UTC), 52.52, 13.405, speed_mps=5.0).mode.name
    'FIX_2D'
    """

    t_utc: datetime
    lat_deg: float
    lon_deg: float
    alt_m: float | None = None
    acc_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None  # course over ground, degrees clockwise from true north
    mode: FixMode = FixMode.FIX_2D

    def __post_init__(self) -> None:
        if self.t_utc.tzinfo is None or self.t_utc.utcoffset() is None:
            raise ValueError("Fix.t_utc must be timezone-aware (UTC)")
        if self.t_utc.utcoffset() != UTC.utcoffset(None):
            object.__setattr__(self, "t_utc", self.t_utc.astimezone(UTC))
        if not (math.isfinite(self.lat_deg) and -90.0 <= self.lat_deg <= 90.0):
            raise ValueError(f"Fix.lat_deg out of range: {self.lat_deg}")
        if not (math.isfinite(self.lon_deg) and -180.0 <= self.lon_deg <= 180.0):
            raise ValueError(f"Fix.lon_deg out of range: {self.lon_deg}")
        if self.mode not in (FixMode.FIX_2D, FixMode.FIX_3D):
            raise ValueError("a Fix has a position: mode must be FIX_2D or FIX_3D (no fix is a state, not a Fix)")
        for name in ("alt_m", "acc_m", "speed_mps", "track_deg"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"Fix.{name} must be finite or None, got {value}")
        if self.acc_m is not None and self.acc_m < 0:
            raise ValueError(f"Fix.acc_m must be >= 0, got {self.acc_m}")
        if self.speed_mps is not None and self.speed_mps < 0:
            raise ValueError(f"Fix.speed_mps must be >= 0, got {self.speed_mps}")
        if self.track_deg is not None:
            object.__setattr__(self, "track_deg", self.track_deg % 360.0)

    @property
    def t_s(self) -> float:
        """The fix time as POSIX seconds (float)."""
        return self.t_utc.timestamp()


@runtime_checkable
class PositionSource(Protocol):
    """Anything that yields fixes in time order: a GPX file, an NMEA log, a gpsd connection."""

    def fixes(self) -> Iterator[Fix]:
        """Fixes in the order the receiver reported them; ends when the source does."""
        ...
