"""gpsd client: its JSON protocol over TCP (default 127.0.0.1:2947), stdlib only.

Sends ``?WATCH={"enable":true,"json":true}``, reads one JSON object per line and turns each
TPV with a 2D/3D fix into a Fix (time from TPV ``time``, never arrival time). TPVs with mode
0/1 are the no-fix state: they update ``state()`` and yield nothing. When gpsd goes away
the client reconnects with exponential backoff. ``GpsdReader`` runs the client on a thread
and feeds a PositionTrack; ``state()`` is what the status topic reports.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from firmware.position.fix import Fix, FixMode
from firmware.position.gpx import parse_gpx_time
from firmware.position.interpolate import PositionTrack

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 2947
WATCH: Final = b'?WATCH={"enable":true,"json":true}\n'
MAX_LINE: Final = 64 * 1024  # gpsd's longest reports (SKY with many satellites) are a few KiB


def _num(obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def tpv_mode(obj: dict[str, Any]) -> FixMode:
    m = obj.get("mode")
    return FixMode(m) if isinstance(m, int) and m in (0, 1, 2, 3) else FixMode.UNKNOWN


def parse_tpv(obj: dict[str, Any]) -> Fix | None:
    """A Fix from one gpsd TPV report, or None when it carries no fix (mode < 2, no time, no lat/lon)."""
    if obj.get("class") != "TPV" or tpv_mode(obj) < FixMode.FIX_2D:
        return None
    t, lat, lon = obj.get("time"), _num(obj, "lat"), _num(obj, "lon")
    if not isinstance(t, str) or lat is None or lon is None:
        return None
    acc = _num(obj, "eph")
    if acc is None:
        epx, epy = _num(obj, "epx"), _num(obj, "epy")
        acc = math.hypot(epx, epy) if epx is not None and epy is not None else None
    mode = tpv_mode(obj)
    alt = _num(obj, "altMSL") if _num(obj, "altMSL") is not None else _num(obj, "alt")
    try:
        return Fix(
            t_utc=parse_gpx_time(t),
            lat_deg=lat,
            lon_deg=lon,
            alt_m=alt if mode == FixMode.FIX_3D else None,
            acc_m=acc,
            speed_mps=_num(obj, "speed"),
            track_deg=_num(obj, "track"),
            mode=mode,
        )
    except ValueError as exc:
        log.debug("gpsd TPV rejected: %s", exc)
        return None


@dataclass(frozen=True, slots=True)
class GpsdState:
    """For the status topic and the LED. ``last_fix_age_s`` is by the injected monotonic clock;
    None before any fix. ``last_acc_m`` is the last fix's horizontal accuracy (TPV ``eph``, else
    from ``epx``/``epy``; None when gpsd gave neither). ``satellites_used`` is from the last SKY."""

    connected: bool
    mode: FixMode
    last_fix_age_s: float | None
    satellites_used: int | None
    reconnects: int
    last_error: str | None
    last_acc_m: float | None = None

    def has_fix(self, max_age_s: float) -> bool:
        """Connected, the current mode is a 2D/3D fix, and the last fix is at most ``max_age_s`` old."""
        return (
            self.connected
            and self.mode >= FixMode.FIX_2D
            and self.last_fix_age_s is not None
            and self.last_fix_age_s <= max_age_s
        )


class GpsdClient:
    """A reconnecting gpsd JSON client; ``fixes()`` yields until ``stop()``.

    >>> client = GpsdClient()  # doctest: +SKIP
    >>> for fix in client.fixes(): print(fix.lat_deg, fix.lon_deg)  # doctest: +SKIP
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        read_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.backoff_s, self.max_backoff_s, self.read_timeout_s = backoff_s, max_backoff_s, read_timeout_s
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connected = False
        self._mode = FixMode.UNKNOWN
        self._last_fix_at: float | None = None
        self._sats: int | None = None
        self._acc: float | None = None
        self._connects = 0
        self._error: str | None = None

    def stop(self) -> None:
        self._stop.set()

    def state(self) -> GpsdState:
        with self._lock:
            age = None if self._last_fix_at is None else self._clock() - self._last_fix_at
            return GpsdState(
                self._connected, self._mode, age, self._sats, max(0, self._connects - 1), self._error, self._acc
            )

    def fixes(self) -> Iterator[Fix]:
        delay = self.backoff_s
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    sock.settimeout(self.read_timeout_s)
                    sock.sendall(WATCH)
                    with self._lock:
                        self._connected, self._connects, self._error = True, self._connects + 1, None
                    log.info("connected to gpsd at %s:%d", self.host, self.port)
                    delay = self.backoff_s
                    yield from self._read(sock)
                    raise ConnectionError("gpsd closed the connection")
            except OSError as exc:  # ConnectionError, timeouts on connect, refused
                with self._lock:
                    was, self._connected, self._error = self._connected, False, str(exc) or type(exc).__name__
                    self._mode = FixMode.UNKNOWN
                if was:
                    log.warning("gpsd at %s:%d lost: %s", self.host, self.port, exc)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.max_backoff_s)
        with self._lock:
            self._connected = False

    def _read(self, sock: socket.socket) -> Iterator[Fix]:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(8192)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE:
                log.warning("gpsd sent a line over %d bytes; dropped", MAX_LINE)
                buf = b""
            for line in lines:
                fix = self._handle(line)
                if fix is not None:
                    yield fix

    def _handle(self, line: bytes) -> Fix | None:
        try:
            obj = json.loads(line)
        except ValueError:
            log.debug("gpsd sent a line that is not JSON: %r", line[:80])
            return None
        if not isinstance(obj, dict):
            return None
        cls = obj.get("class")
        if cls == "SKY":
            used = obj.get("uSat")
            if not isinstance(used, int) and isinstance(obj.get("satellites"), list):
                used = sum(1 for s in obj["satellites"] if isinstance(s, dict) and s.get("used"))
            with self._lock:
                self._sats = used if isinstance(used, int) else None
            return None
        if cls != "TPV":
            return None
        fix = parse_tpv(obj)
        with self._lock:
            self._mode = tpv_mode(obj)
            if fix is not None:
                self._last_fix_at = self._clock()
                self._acc = fix.acc_m
        return fix


class GpsdReader:
    """Runs a GpsdClient on a daemon thread and adds every fix to ``track``."""

    def __init__(self, client: GpsdClient, track: PositionTrack) -> None:
        self.client, self.track = client, track
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("GpsdReader already started")
        self._thread = threading.Thread(target=self._run, name="gpsd-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for fix in self.client.fixes():
            self.track.add(fix)

    def stop(self, timeout_s: float = 2.0) -> None:
        self.client.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
