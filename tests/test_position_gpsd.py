"""The gpsd client against a real gpsd fed by gpsfake, and TPV parsing on its own."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest import FIXTURES

from firmware.position import FixMode, FramePosition, GpsdClient, GpsdReader, NmeaSource, PositionTrack, parse_tpv

LOG = FIXTURES / "tracks" / "berlin_ride.nmea"
GPSFAKE = shutil.which("gpsfake")
GpsFake = tuple[int, list[subprocess.Popen[bytes]]]  # the port, and the gpsfake runs on it


def test_parse_tpv() -> None:
    tpv = {
        "class": "TPV", "mode": 3, "time": "2024-06-01T08:30:01.000Z", "lat": 52.52, "lon": 13.405,
        "altMSL": 40.0, "alt": 40.0, "eph": 17.1, "speed": 4.99, "track": 90.0,
    }  # fmt: skip
    fix = parse_tpv(tpv)
    assert fix is not None
    assert fix.t_utc == datetime(2024, 6, 1, 8, 30, 1, tzinfo=UTC)
    assert (fix.acc_m, fix.speed_mps, fix.track_deg, fix.alt_m, fix.mode) == (17.1, 4.99, 90.0, 40.0, FixMode.FIX_3D)
    no_eph = parse_tpv({**tpv, "eph": None, "epx": 3.0, "epy": 4.0})
    assert no_eph is not None and no_eph.acc_m == pytest.approx(5.0)
    assert parse_tpv({**tpv, "mode": 1}) is None  # no fix: a state, not a position
    assert parse_tpv({k: v for k, v in tpv.items() if k != "time"}) is None  # gpsd before RMC: no time
    assert parse_tpv({**tpv, "lat": "x"}) is None
    assert parse_tpv({**tpv, "class": "SKY"}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gpsfake(port: int) -> subprocess.Popen[bytes]:
    assert GPSFAKE is not None
    return subprocess.Popen(
        [GPSFAKE, "-1", "-n", "-q", "-c", "0.1", "-P", str(port), str(LOG)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: gpsfake and the gpsd it started end together
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def gpsfake_port() -> Iterator[GpsFake]:
    port = _free_port()
    procs = [_start_gpsfake(port)]
    yield port, procs
    for proc in procs:
        _stop(proc)


def _wait(cond: object, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if callable(cond) and cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(GPSFAKE is None, reason="gpsfake not installed (apt install gpsd-clients gpsd)")
def test_real_gpsd_fixes_match_log_and_client_reconnects(
    gpsfake_port: tuple[int, list[subprocess.Popen[bytes]]],
) -> None:
    port, procs = gpsfake_port
    expected = list(NmeaSource(LOG).fixes())
    track = PositionTrack()
    client = GpsdClient("127.0.0.1", port, backoff_s=0.1, max_backoff_s=0.5)
    reader = GpsdReader(client, track)
    reader.start()
    try:
        assert _wait(lambda: len(track) == len(expected), 10.0), f"got {len(track)} of {len(expected)} fixes"
        got = [track.at(f.t_utc) for f in expected]
        for want, pos in zip(expected, got, strict=True):
            assert isinstance(pos, FramePosition), pos
            assert pos.fix_dt_s == 0.0  # a fix at exactly the log's time (TPV time, not arrival time)
            assert pos.lat_deg == pytest.approx(want.lat_deg, abs=1e-7)
            assert pos.lon_deg == pytest.approx(want.lon_deg, abs=1e-7)
        # frames fall between fixes: 10 fps against 1 Hz fixes, positions interpolated at frame times
        for a, b in itertools.pairwise(expected):
            gap = (b.t_utc - a.t_utc).total_seconds()
            for frac in (0.1, 0.5, 0.8):
                pos = track.at(a.t_utc + timedelta(seconds=frac * gap))
                assert isinstance(pos, FramePosition), pos
                assert pos.fix_dt_s == pytest.approx(min(frac, 1 - frac) * gap, abs=1e-3)
                assert pos.lat_deg == pytest.approx(a.lat_deg + frac * (b.lat_deg - a.lat_deg), abs=1e-7)
                assert pos.lon_deg == pytest.approx(a.lon_deg + frac * (b.lon_deg - a.lon_deg), abs=1e-7)
                assert pos.heading_deg is not None and pos.speed_mps is not None  # the bike was moving
        state = client.state()
        assert state.connected and state.mode is FixMode.FIX_3D and state.reconnects == 0
        assert state.last_fix_age_s is not None and state.last_fix_age_s < 10
        assert state.last_acc_m == pytest.approx(17.1)  # gpsd's eph for the log's HDOP 0.9

        _stop(procs[0])  # gpsd goes away
        assert _wait(lambda: not client.state().connected, 5.0)
        assert client.state().last_error is not None
        track_before = len(track)
        procs.append(_start_gpsfake(port))  # gpsd is back on the same port
        assert _wait(lambda: client.state().connected and client.state().reconnects >= 1, 10.0)
        # gpsfake replays the same log: the same times, so the track is refreshed, not grown
        assert _wait(lambda: client.state().last_fix_age_s is not None and client.state().last_fix_age_s < 0.5, 10.0)
        assert len(track) == track_before
    finally:
        reader.stop()
    assert not client.state().connected


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_state_has_accuracy_satellites_and_the_current_fix() -> None:
    clock = FakeClock()
    client = GpsdClient(clock=clock)
    client._connected = True  # as after a connect; the lines below are what gpsd sends
    tpv = {"class": "TPV", "mode": 3, "time": "2024-06-01T08:30:01.000Z", "lat": 52.52, "lon": 13.405, "eph": 4.46}

    def send(obj: dict[str, object]) -> None:
        client._handle(json.dumps(obj).encode())

    state = client.state()
    assert (state.last_acc_m, state.satellites_used, state.has_fix(2.0)) == (None, None, False)
    send({"class": "SKY", "uSat": 9, "nSat": 14})
    send(tpv)
    state = client.state()
    assert state.last_acc_m == 4.46 and state.satellites_used == 9 and state.has_fix(2.0)
    clock.now_s += 2.5  # no TPV for 2.5 s: the fix is stale
    assert not client.state().has_fix(2.0) and client.state().has_fix(3.0)
    send({**tpv, "eph": None, "epx": 3.0, "epy": 4.0})
    assert client.state().last_acc_m == pytest.approx(5.0) and client.state().has_fix(2.0)
    send({"class": "TPV", "mode": 1})  # fix lost: mode 1; the accuracy stays the last fix's
    state = client.state()
    assert state.mode is FixMode.NO_FIX and not state.has_fix(2.0) and state.last_acc_m == pytest.approx(5.0)
    # older gpsd: no uSat, count the satellites marked used
    send(
        {"class": "SKY", "satellites": [{"PRN": 1, "used": True}, {"PRN": 3, "used": False}, {"PRN": 6, "used": True}]}
    )
    assert client.state().satellites_used == 2


def test_client_without_gpsd_reports_disconnected() -> None:
    client = GpsdClient("127.0.0.1", _free_port(), backoff_s=0.05, max_backoff_s=0.1)
    reader = GpsdReader(client, PositionTrack())
    reader.start()
    try:
        assert _wait(lambda: client.state().last_error is not None, 3.0)
        state = client.state()
        assert not state.connected and state.mode is FixMode.UNKNOWN and state.last_fix_age_s is None
    finally:
        reader.stop()
