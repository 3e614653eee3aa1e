"""GPX track reader (GPX 1.0 and 1.1, stdlib xml.etree): one Fix per ``trkpt`` with a time.

Reads ``ele``, ``hdop`` (-> ``acc_m = hdop * HDOP_TO_M``), ``fix`` (``none`` -> skipped and
counted), and speed/course from GPX 1.0's ``speed``/``course`` or any 1.1 extension element of
that local name (Garmin TrackPointExtension and others). Points without a time, or with a
bad time or coordinate, are skipped and counted: a GPX source never invents a time.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from firmware.position.fix import HDOP_TO_M, Fix, FixMode

log = logging.getLogger(__name__)

_FIX_MODES = {"2d": FixMode.FIX_2D, "3d": FixMode.FIX_3D, "dgps": FixMode.FIX_3D, "pps": FixMode.FIX_3D}


@dataclass
class GpxStats:
    points: int = 0
    fixes: int = 0
    skipped_no_time: int = 0
    skipped_no_fix: int = 0
    skipped_bad: int = 0


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_gpx_time(text: str) -> datetime:
    """An ISO-8601 GPX time as an aware UTC datetime; a time without zone is taken as UTC (GPX says UTC)."""
    t = datetime.fromisoformat(text.strip())
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    return float(text)


class GpxSource:
    """Fixes from a GPX file's track points, in file order.

    >>> src = GpxSource("ride.gpx")  # doctest: +SKIP
    >>> for fix in src.fixes(): ...  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stats = GpxStats()

    def fixes(self) -> Iterator[Fix]:
        self.stats = GpxStats()
        for _, elem in ET.iterparse(self.path, events=("end",)):
            if _local(elem.tag) != "trkpt":
                continue
            self.stats.points += 1
            fix = self._point(elem)
            elem.clear()  # keep memory flat on long rides
            if fix is not None:
                self.stats.fixes += 1
                yield fix
        if self.stats.points != self.stats.fixes:
            log.info("%s: %d of %d track points used (%s)", self.path, self.stats.fixes, self.stats.points, self.stats)

    def _point(self, pt: ET.Element) -> Fix | None:
        values: dict[str, str] = {}
        for child in pt.iter():
            if child is pt or child.text is None:
                continue
            name = _local(child.tag).lower()
            values.setdefault(name, child.text)  # the first wins: GPX core before extensions
        if "time" not in values:
            self.stats.skipped_no_time += 1
            return None
        fix_kind = values.get("fix", "").strip().lower()
        if fix_kind == "none":
            self.stats.skipped_no_fix += 1
            return None
        try:
            t = parse_gpx_time(values["time"])
            alt = _float(values.get("ele"))
            hdop = _float(values.get("hdop"))
            mode = _FIX_MODES.get(fix_kind, FixMode.FIX_3D if alt is not None else FixMode.FIX_2D)
            return Fix(
                t_utc=t,
                lat_deg=float(pt.attrib["lat"]),
                lon_deg=float(pt.attrib["lon"]),
                alt_m=alt,
                acc_m=None if hdop is None else hdop * HDOP_TO_M,
                speed_mps=_float(values.get("speed")),
                track_deg=_float(values.get("course")),
                mode=mode,
            )
        except (KeyError, ValueError) as exc:
            self.stats.skipped_bad += 1
            log.debug("%s: skipped a track point: %s", self.path, exc)
            return None
