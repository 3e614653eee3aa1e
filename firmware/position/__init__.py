"""Position sources for the ride pipeline: gpsd, a GPX file, an NMEA log; and the frame-time track.

See docs/position.md. Every source yields ``Fix`` objects; ``PositionTrack.at(t)`` gives the
position at a frame's UTC time, or a ``NoFix`` with a reason.
"""

from firmware.position.fix import HDOP_TO_M, Fix, FixMode, PositionSource
from firmware.position.gpsd import GpsdClient, GpsdReader, GpsdState, parse_tpv
from firmware.position.gpx import GpxSource
from firmware.position.interpolate import FramePosition, NoFix, NoFixReason, PositionTrack
from firmware.position.nmea import NmeaParser, NmeaSource, NmeaStats, parse_nmea

__all__ = [
    "HDOP_TO_M",
    "Fix",
    "FixMode",
    "FramePosition",
    "GpsdClient",
    "GpsdReader",
    "GpsdState",
    "GpxSource",
    "NmeaParser",
    "NmeaSource",
    "NmeaStats",
    "NoFix",
    "NoFixReason",
    "PositionSource",
    "PositionTrack",
    "parse_nmea",
    "parse_tpv",
]
