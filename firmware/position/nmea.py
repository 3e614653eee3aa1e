"""NMEA 0183 reader: GGA, RMC, GNS, VTG, GSA, ZDA from any talker; one Fix per epoch.

Every line is checked: a sentence needs ``$``, a ``*hh`` checksum that matches, and fields
that parse. Anything else (binary junk, truncated lines, bad checksums, other sentences) is
counted in ``NmeaStats`` and skipped; the reader never raises on input.

Sentences of one epoch (the same UTC time of day; untimed VTG/GSA join the current epoch)
are merged into one Fix when the next epoch starts or the input ends. The date comes from
RMC or ZDA; a GGA-only log needs ``date=`` or its epochs are skipped as ``undated`` (a time
is never guessed). Epochs with no valid position (GGA quality 0, RMC status V, GSA mode 1)
are counted as ``no_fix`` and yield nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from firmware.position.fix import HDOP_TO_M, KNOTS_TO_MPS, Fix, FixMode

log = logging.getLogger(__name__)

MAX_SENTENCE = 120  # NMEA says 82 characters; some receivers send longer (RTK GGA), none this long


@dataclass
class NmeaStats:
    lines: int = 0
    sentences: int = 0  # checksum-valid sentences
    bad_checksum: int = 0
    garbage: int = 0  # not a sentence at all, or a field that does not parse
    ignored: int = 0  # valid sentences of types we do not use (GSV, proprietary, ...)
    no_fix: int = 0
    undated: int = 0
    fixes: int = 0


def checksum_ok(sentence: str) -> bool:
    """True for ``$...*hh`` where hh is the XOR of the characters between ``$`` and ``*``."""
    if len(sentence) < 4 or sentence[0] not in "$!" or sentence[-3] != "*":
        return False
    want = 0
    for ch in sentence[1:-3]:
        want ^= ord(ch)
    try:
        return int(sentence[-2:], 16) == want
    except ValueError:
        return False


def _latlon(value: str, hemi: str, degree_digits: int) -> float | None:
    if not value or not hemi:
        return None
    deg = int(value[:degree_digits])
    minutes = float(value[degree_digits:])
    if minutes >= 60.0 or hemi not in ("N", "S", "E", "W"):
        raise ValueError(f"bad coordinate {value},{hemi}")
    out = deg + minutes / 60.0
    return -out if hemi in ("S", "W") else out


def _tod(value: str) -> time | None:
    if len(value) < 6:
        return None
    frac = value[6:]
    micro = round(float("0" + frac) * 1_000_000) if frac else 0
    return time(int(value[0:2]), int(value[2:4]), int(value[4:6]), min(micro, 999_999))


def _opt(value: str) -> float | None:
    return float(value) if value else None


@dataclass
class _Epoch:
    tod: time
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None
    hdop: float | None = None
    speed: float | None = None
    track: float | None = None
    valid: bool | None = None  # None: no sentence said either way
    gsa_mode: int | None = None
    kinds: set[str] = field(default_factory=set)


class NmeaParser:
    """Feed lines, get Fixes. ``date`` seeds the date for logs with no RMC/ZDA."""

    def __init__(self, date_utc: date | None = None) -> None:
        self.stats = NmeaStats()
        self._date = date_utc
        self._last_tod: time | None = None
        self._epoch: _Epoch | None = None

    def feed(self, line: str | bytes) -> list[Fix]:
        """One line in; zero or one finished Fix out (the *previous* epoch, once a new one starts)."""
        self.stats.lines += 1
        if isinstance(line, bytes):
            line = line.decode("ascii", errors="replace")
        s = line.strip()
        if not s or s.startswith("#"):
            return []
        start = s.rfind("$")  # junk glued before a sentence is dropped with the junk
        if start < 0 or len(s) - start > MAX_SENTENCE:
            self.stats.garbage += 1
            return []
        s = s[start:]
        if not checksum_ok(s):
            if "*" in s and len(s) >= 4 and s[-3] == "*":
                self.stats.bad_checksum += 1
            else:
                self.stats.garbage += 1
            return []
        self.stats.sentences += 1
        fields = s[1:-3].split(",")
        kind = fields[0][2:] if len(fields[0]) == 5 and not fields[0].startswith("P") else ""
        try:
            return self._sentence(kind, fields)
        except (ValueError, IndexError) as exc:
            self.stats.garbage += 1
            log.debug("unparsable %s: %s", fields[0], exc)
            return []

    def close(self) -> list[Fix]:
        """End of input: finish the last epoch."""
        out = self._finish()
        self._epoch = None
        return out

    def _sentence(self, kind: str, f: list[str]) -> list[Fix]:
        if kind in ("GGA", "RMC", "GNS", "ZDA"):
            tod = _tod(f[1])
            if tod is None:  # an empty time: the receiver has no fix and no time yet
                self.stats.no_fix += kind != "ZDA"
                return []
            out: list[Fix] = []
            if self._epoch is None or self._epoch.tod != tod:
                out = self._finish()
                self._epoch = _Epoch(tod)
            ep = self._epoch
            ep.kinds.add(kind)
            if kind == "GGA":
                ep.lat, ep.lon = _latlon(f[2], f[3], 2), _latlon(f[4], f[5], 3)
                ep.valid = (ep.valid is not False) and f[6] not in ("", "0")
                ep.hdop = _opt(f[8]) if ep.hdop is None else ep.hdop
                ep.alt = _opt(f[9])
            elif kind == "GNS":
                ep.lat, ep.lon = _latlon(f[2], f[3], 2), _latlon(f[4], f[5], 3)
                ep.valid = (ep.valid is not False) and any(c not in "N" for c in f[6])
                ep.hdop = _opt(f[8]) if ep.hdop is None else ep.hdop
                ep.alt = _opt(f[9])
            elif kind == "RMC":
                lat, lon = _latlon(f[3], f[4], 2), _latlon(f[5], f[6], 3)
                ep.lat = lat if ep.lat is None else ep.lat
                ep.lon = lon if ep.lon is None else ep.lon
                ep.valid = (ep.valid is not False) and f[2] == "A"
                ep.speed = None if not f[7] else float(f[7]) * KNOTS_TO_MPS
                ep.track = _opt(f[8])
                if len(f[9]) == 6:
                    self._set_date(date(2000 + int(f[9][4:6]), int(f[9][2:4]), int(f[9][0:2])), tod)
            elif f[2] and f[3] and f[4]:  # ZDA: hhmmss.ss,dd,mm,yyyy
                self._set_date(date(int(f[4]), int(f[3]), int(f[2])), tod)
            return out
        if self._epoch is None:
            self.stats.ignored += 1
            return []
        if kind == "VTG":
            if self._epoch.track is None and f[1]:
                self._epoch.track = float(f[1])
            if self._epoch.speed is None and len(f) > 7 and f[7]:
                self._epoch.speed = float(f[7]) / 3.6
        elif kind == "GSA":
            if f[2]:
                self._epoch.gsa_mode = int(f[2])
            if len(f) > 16 and f[16]:
                self._epoch.hdop = float(f[16])
        else:
            self.stats.ignored += 1
        return []

    def _set_date(self, d: date, tod: time) -> None:
        self._date = d
        self._last_tod = tod

    def _finish(self) -> list[Fix]:
        ep = self._epoch
        if ep is None:
            return []
        if not ep.valid or ep.gsa_mode == 1 or ep.lat is None or ep.lon is None:
            self.stats.no_fix += 1
            return []
        if self._date is None:
            self.stats.undated += 1
            return []
        if self._last_tod is not None and ep.tod < self._last_tod and _secs(self._last_tod) - _secs(ep.tod) > 43_200:
            self._date += timedelta(days=1)  # midnight passed in a log without a fresh date
        self._last_tod = ep.tod
        mode = FixMode.FIX_3D if ep.gsa_mode == 3 or (ep.gsa_mode is None and ep.alt is not None) else FixMode.FIX_2D
        fix = Fix(
            t_utc=datetime.combine(self._date, ep.tod, tzinfo=UTC),
            lat_deg=ep.lat,
            lon_deg=ep.lon,
            alt_m=ep.alt,
            acc_m=None if ep.hdop is None else ep.hdop * HDOP_TO_M,
            speed_mps=ep.speed,
            track_deg=ep.track,
            mode=mode,
        )
        self.stats.fixes += 1
        return [fix]


def _secs(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def parse_nmea(lines: Iterable[str | bytes], parser: NmeaParser | None = None) -> Iterator[Fix]:
    """Fixes from NMEA lines; pass a parser to read its ``stats`` afterwards."""
    p = parser if parser is not None else NmeaParser()
    for line in lines:
        yield from p.feed(line)
    yield from p.close()


class NmeaSource:
    """Fixes from an NMEA log file (bytes are decoded as ASCII; junk is counted, never fatal)."""

    def __init__(self, path: str | Path, date_utc: date | None = None) -> None:
        self.path = Path(path)
        self.date_utc = date_utc
        self.parser = NmeaParser(date_utc)

    @property
    def stats(self) -> NmeaStats:
        return self.parser.stats

    def fixes(self) -> Iterator[Fix]:
        self.parser = NmeaParser(self.date_utc)
        with self.path.open("rb") as fh:
            yield from parse_nmea(fh, self.parser)
