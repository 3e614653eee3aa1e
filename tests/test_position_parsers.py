"""GPX and NMEA readers: hand-made fixtures, garbage input, and the real shared tracks."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import FIXTURES, SHARED

from firmware.position import Fix, FixMode, GpxSource, NmeaParser, NmeaSource, parse_nmea
from firmware.position.fix import HDOP_TO_M, KNOTS_TO_MPS
from firmware.position.nmea import checksum_ok

TRACKS = FIXTURES / "tracks"
SHARED_TRACKS = SHARED / "data" / "rides" / "tracks"


def test_gpx_11_with_extensions_and_skips() -> None:
    src = GpxSource(TRACKS / "tiny.gpx")
    fixes = list(src.fixes())
    assert [f.t_utc for f in fixes] == [
        datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC),
        datetime(2024, 6, 1, 8, 30, 1, tzinfo=UTC),
        datetime(2024, 6, 1, 8, 30, 3, tzinfo=UTC),  # +02:00 converted to UTC
    ]
    first = fixes[0]
    assert (first.lat_deg, first.lon_deg, first.alt_m) == (52.52, 13.405, 40.0)
    assert first.acc_m == pytest.approx(0.8 * HDOP_TO_M)
    assert (first.speed_mps, first.track_deg, first.mode) == (5.0, 90.0, FixMode.FIX_3D)
    assert fixes[1].acc_m is None and fixes[1].speed_mps is None
    assert fixes[2].mode is FixMode.FIX_2D
    assert (src.stats.points, src.stats.skipped_no_fix, src.stats.skipped_no_time) == (5, 1, 1)


def test_gpx_10_speed_course_hdop() -> None:
    fixes = list(GpxSource(TRACKS / "tiny_gpx10.gpx").fixes())
    assert len(fixes) == 2
    assert fixes[0].t_utc == datetime(2019, 8, 18, 3, 50, 17, 500000, tzinfo=UTC)
    assert (fixes[0].speed_mps, fixes[0].track_deg, fixes[0].acc_m) == (3.6, 184.9, 2.5 * HDOP_TO_M)
    assert fixes[0].lat_deg < 0


def test_nmea_fixture_one_fix_per_epoch() -> None:
    src = NmeaSource(TRACKS / "berlin_ride.nmea")
    fixes = list(src.fixes())
    assert len(fixes) == 10
    assert src.stats.bad_checksum == src.stats.garbage == 0
    assert [f.t_utc.second for f in fixes] == list(range(10))
    f0 = fixes[0]
    assert f0.t_utc == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert (f0.lat_deg, f0.lon_deg, f0.alt_m) == (pytest.approx(52.52), pytest.approx(13.405), 40.0)
    assert f0.speed_mps == pytest.approx(9.7 * KNOTS_TO_MPS)
    assert f0.track_deg == 90.0 and f0.mode is FixMode.FIX_3D
    assert f0.acc_m == pytest.approx(0.9 * HDOP_TO_M)  # GSA's HDOP agrees with GGA's


def _nmea(body: str) -> str:
    x = 0
    for ch in body:
        x ^= ord(ch)
    return f"${body}*{x:02X}"


def test_nmea_checksum() -> None:
    assert checksum_ok("$GPVTG,90.0,T,,M,9.7,N,18.0,K,A*03")
    assert not checksum_ok("$GPVTG,90.0,T,,M,9.7,N,18.0,K,A*04")
    assert not checksum_ok("$GPVTG,90.0,T,,M,9.7,N,18.0,K,A")
    assert not checksum_ok("$GPVTG,90.0,T,,M,9.7,N,18.0,K,A*ZZ")


def test_nmea_no_fix_epochs_yield_nothing() -> None:
    lines = [
        "$GPGGA,095257.809,2712.6404,S,15303.1201,E,0,00,00.0,4.0,M,42.2,M,,*7B",  # quality 0 (real line)
        "$GPGGA,,,,,,0,,,,,,,,*66",  # a receiver with nothing yet (real line)
        "$GPRMC,,V,,,,,,,,,,N*53",
    ]
    parser = NmeaParser(date_utc=date(2007, 4, 8))
    assert list(parse_nmea(lines, parser)) == []
    assert parser.stats.no_fix == 3 and parser.stats.fixes == 0


def test_nmea_gga_only_needs_a_date_and_rolls_over_midnight() -> None:
    lines = [
        _nmea("GPGGA,235959.000,5013.476,N,01710.477,E,1,09,0.8,468.770,M,0.0,M,,"),
        _nmea("GPGGA,000000.000,5013.476,N,01710.479,E,1,09,0.8,471.120,M,0.0,M,,"),
    ]
    undated = NmeaParser()
    assert list(parse_nmea(lines, undated)) == []
    assert undated.stats.undated == 2  # never a guessed date
    fixes = list(parse_nmea(lines, NmeaParser(date_utc=date(2020, 1, 1))))
    assert [f.t_utc for f in fixes] == [
        datetime(2020, 1, 1, 23, 59, 59, tzinfo=UTC),
        datetime(2020, 1, 2, 0, 0, 0, tzinfo=UTC),
    ]


def test_nmea_garbage_is_counted_and_skipped() -> None:
    good = (TRACKS / "berlin_ride.nmea").read_bytes().splitlines()
    rng = random.Random(4)
    junk: list[bytes] = []
    n_bad_checksum = n_truncated = 0
    for i, line in enumerate(good):
        if line.startswith(b"$GPGSA") and i % 8 == 2:  # spoil some GSAs only: every epoch keeps its fix
            junk.append(line[:-2] + (b"00" if not line.endswith(b"00") else b"01"))
            n_bad_checksum += 1
            junk.append(line[: len(line) // 2])
            n_truncated += 1
        junk.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 90))))
        junk.append(line)
    junk += [
        b"\x00\xff\xfe" * 50,
        b"$",
        b"$GPGGA,",
        b"*",
        b"$GPRMC,999999.00,A,9999.0,N,1,E,,,,,,*00",
        b"\xb5b\x01\x07",
    ]
    parser = NmeaParser()
    fixes = list(parse_nmea(junk, parser))
    assert len(fixes) == 10
    assert fixes == list(NmeaSource(TRACKS / "berlin_ride.nmea").fixes())
    assert parser.stats.bad_checksum >= n_bad_checksum
    assert parser.stats.garbage >= n_truncated + len(good)  # each random line is garbage, or a bad checksum


def test_nmea_fuzz_never_raises() -> None:
    rng = random.Random(7)
    base = (TRACKS / "berlin_ride.nmea").read_text().splitlines()[1:]
    parser = NmeaParser()
    for _ in range(3000):
        line = list(rng.choice(base))
        for _ in range(rng.randrange(1, 4)):
            line[rng.randrange(len(line))] = chr(rng.randrange(32, 127))
        parser.feed("".join(line))
    parser.close()
    assert parser.stats.lines == 3000


def _shared(pattern: str) -> list[Path]:
    if not SHARED_TRACKS.is_dir():
        return []
    return sorted(SHARED_TRACKS.glob(pattern))


def _check_track(fixes: list[Fix], name: str) -> None:
    assert len(fixes) >= 20, name
    assert all(b.t_utc >= a.t_utc for a, b in itertools.pairwise(fixes)), f"{name}: time goes back"
    assert fixes[-1].t_utc > fixes[0].t_utc
    assert all(abs(f.lat_deg) > 1e-6 or abs(f.lon_deg) > 1e-6 for f in fixes), f"{name}: null island"
    lats = [f.lat_deg for f in fixes]
    lons = [f.lon_deg for f in fixes]
    assert max(lats) - min(lats) < 2 and max(lons) - min(lons) < 2, f"{name}: jumps across the globe"
    assert 1990 <= fixes[0].t_utc.year <= 2030


@pytest.mark.skipif(not SHARED_TRACKS.is_dir(), reason=f"shared ride tracks absent ({SHARED_TRACKS})")
@pytest.mark.parametrize("path", _shared("*.gpx"), ids=lambda p: p.name)
def test_shared_gpx_tracks_parse(path: Path) -> None:
    src = GpxSource(path)
    _check_track(list(src.fixes()), path.name)
    assert src.stats.skipped_bad == 0


@pytest.mark.skipif(not SHARED_TRACKS.is_dir(), reason=f"shared ride tracks absent ({SHARED_TRACKS})")
@pytest.mark.parametrize("path", _shared("*.nmea"), ids=lambda p: p.name)
def test_shared_nmea_tracks_parse(path: Path) -> None:
    # the GGA-only log has no date in it: give it one, as a user would
    src = NmeaSource(path, date_utc=date(2020, 1, 1) if "gga" in path.name else None)
    fixes = list(src.fixes())
    _check_track(fixes, path.name)
    assert all(b.t_utc > a.t_utc for a, b in itertools.pairwise(fixes)), "one Fix per epoch"
    assert src.stats.bad_checksum == 0
    if "10hz" in path.name:
        dts = [(b.t_utc - a.t_utc).total_seconds() for a, b in itertools.pairwise(fixes)]
        assert sorted(dts)[len(dts) // 2] == pytest.approx(0.1)
