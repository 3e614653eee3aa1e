"""``sousveil run`` on the bike: the Pi camera (picamera2 test double), sd_notify to a real unix
datagram socket, the GPIO panel on gpiozero's MockFactory (pause, resume, long-press stop, the LED
from the current fix state, ERROR on gpsd loss and on a failure), a hung camera that stops the
watchdog, a real SIGTERM to a `sousveil run` process, and the device status
(firmware/device_status.py) read from sysfs-like files in tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fake_picamera2
import numpy as np
import pytest
from conftest import ROOT
from gpiozero.pins.mock import MockFactory
from PIL import Image

from firmware import device_status as ds
from firmware import replay_cli, run_cli
from firmware.camera_pi import CameraError
from firmware.frames import Frame
from firmware.gpio import LedState, Panel
from firmware.outbox import Outbox
from firmware.position.fix import FixMode
from firmware.position.gpsd import GpsdState
from firmware.sdnotify import Notifier
from tests.mqtt_broker import Broker, Subscriber, broker_factory_fixture, broker_fixture, free_port  # noqa: F401
from tests.test_frames import _write_video
from tests.test_gpio import group_sizes, pulses, wait_for
from tests.test_pipeline import T0, bike_at, draw, write_gpx

BUTTON = 22
LED = 17


PANELS: list[Panel] = []
"""The [gpio] panels ``sousveil run`` opened in this test (see ``led``)."""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUSVEIL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(replay_cli, "LOCAL_BROKER", ("127.0.0.1", free_port()))
    fake_picamera2.Picamera2.instances.clear()
    PANELS.clear()
    open_panel = run_cli.open_panel

    def recording(*args: Any, **kwargs: Any) -> Panel | None:
        panel = open_panel(*args, **kwargs)
        if panel is not None:
            PANELS.append(panel)
        return panel

    monkeypatch.setattr(run_cli, "open_panel", recording)


def led() -> str | None:
    """The state the LED shows now (its blink pattern per state: tests/test_gpio.py); None when
    no panel was opened, or after it closed."""
    return PANELS[-1].led.state if PANELS else None


class NotifySocket:
    """A unix datagram socket standing in for systemd's, drained on a thread (as systemd does:
    a full queue would block the sender)."""

    def __init__(self, path: Path) -> None:
        self.address = str(path)
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        return self.messages


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    try:
        yield sock
    finally:
        sock.close()


def write_gpx_now(path: Path, seconds: int) -> Path:
    """A 1 Hz track from 10 s ago to ``seconds`` from now: the live camera's frames (stamped with the
    wall clock) have a current fix all along."""
    return write_gpx(path, seconds + 10, start=datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10))


def pi_config(tmp_path: Path, gpio: bool, gps: str | None = None) -> Path:
    """A picamera2 config; ``gps`` is its [gps] table, default a GPX track around now."""
    if gps is None:
        gps = f"source = 'gpx'\npath = '{write_gpx_now(tmp_path / 'ride.gpx', 60)}'\n"
    config = tmp_path / "pi.toml"
    config.write_text(
        "[detector]\nnum_threads = 2\n"
        "[camera]\nsource = 'picamera2'\nwidth = 320\nheight = 240\nfps = 30.0\nmax_exposure_us = 4000\n"
        f"[gps]\n{gps}"
        f"[output]\nfile = '{tmp_path / 'live.jsonl'}'\n"
        + (f"[gpio]\nenabled = true\nbutton_pin = {BUTTON}\nled_pin = {LED}\nlong_press_s = 0.3\n" if gpio else ""),
        encoding="utf-8",
    )
    return config


class LiveRun:
    """``run_live`` on a thread; ``result`` gets its return value or exception."""

    def __init__(self, config: Path, picamera2_module: Any, **kwargs: Any) -> None:
        self.flag = run_cli.StopFlag()
        self.stats = run_cli.LiveStats()
        self.result: list[int | BaseException] = []
        self.finished_at: float | None = None

        def target() -> None:
            try:
                self.result.append(
                    run_cli.run_live(
                        config, flag=self.flag, picamera2_module=picamera2_module, stats=self.stats, **kwargs
                    )
                )
            except BaseException as exc:
                self.result.append(exc)
            self.finished_at = time.monotonic()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def stop(self) -> list[int | BaseException]:
        self.flag.stop("test teardown")
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.result


def test_picamera2_notify_and_button(
    tmp_path: Path, notify_socket: NotifySocket, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = MockFactory()
    run = LiveRun(
        pi_config(tmp_path, gpio=True),
        fake_picamera2.module(),
        pin_factory=factory,
        environ={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "20000"},
        status_interval_s=0.05,
        thermal_path=tmp_path / "none",
        throttled_path=tmp_path / "none",
    )
    stats = run.stats
    try:
        pin = factory.pin(BUTTON)
        assert wait_for(lambda: stats.frames >= 3), run.result
        assert led() == LedState.RUNNING  # the GPX track has fixes
        pin.drive_low()  # short press: pause
        time.sleep(0.05)
        pin.drive_high()
        assert wait_for(lambda: stats.skipped >= 3)
        assert stats.paused and led() == LedState.PAUSED
        frames = stats.frames
        time.sleep(0.1)
        assert stats.frames == frames  # nothing processed while paused
        pin.drive_low()  # short press: resume
        time.sleep(0.05)
        pin.drive_high()
        assert wait_for(lambda: stats.frames >= frames + 3), (stats, run.result)
        assert not stats.paused and led() == LedState.RUNNING
        pin.drive_low()  # long press: clean shutdown
        run.thread.join(10)
        pin.drive_high()
    finally:
        result = run.stop()
    assert result == [0]
    messages = notify_socket.close()
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"
    assert any(m.startswith("STATUS=paused") for m in messages)
    assert any(m.startswith("STATUS=running") for m in messages)
    assert "long press" in capsys.readouterr().err
    assert fake_picamera2.Picamera2.instances[-1].closed


def test_picamera2_without_gpio_stops_on_flag(tmp_path: Path, notify_socket: NotifySocket) -> None:
    run = LiveRun(
        pi_config(tmp_path, gpio=False),
        fake_picamera2.module(af=False),
        environ={"NOTIFY_SOCKET": notify_socket.address},
    )
    assert wait_for(lambda: run.stats.frames >= 3), run.result
    run.flag.set(signal.SIGTERM)
    run.thread.join(10)
    assert run.result == [0] and PANELS == [] and run.stats.skipped == 0
    messages = notify_socket.close()
    assert messages[0].startswith("READY=1") and messages[-1] == "STOPPING=1"
    assert "WATCHDOG=1" not in messages  # no WATCHDOG_USEC: no pings


def test_config_reads_gpio_and_camera_keys(tmp_path: Path) -> None:
    from firmware.config import ConfigFileError, load_config

    config = tmp_path / "c.toml"
    config.write_text(
        "[camera]\nsource = 'picamera2'\nmax_exposure_us = 2000\nfocus = 'continuous'\nlens_position_dioptre = 0.5\n"
        "[gpio]\nenabled = true\nled_pin = 5\nbuzzer_pin = -1\nbutton_pin = 6\nlong_press_s = 2.0\n",
        encoding="utf-8",
    )
    c = load_config(config, state_dir=tmp_path)
    assert (c.camera.max_exposure_us, c.camera.focus, c.camera.lens_position_dioptre) == (2000, "continuous", 0.5)
    assert c.gpio.enabled and c.gpio.settings().buzzer_pin is None and c.gpio.settings().led_pin == 5
    assert c.camera.picamera2().focus == "continuous" and c.camera.picamera2().max_exposure_us == 2000
    config.write_text("[gpio]\nled_pin = 22\n", encoding="utf-8")  # same as the button
    with pytest.raises(ConfigFileError, match="gpio"):
        load_config(config, state_dir=tmp_path)
    config.write_text("[camera]\nfps = 10.0\nmax_exposure_us = 200000\n", encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"camera\.max_exposure_us: 200000 µs does not fit in one frame"):
        load_config(config, state_dir=tmp_path)


def test_device_status_reads_sysfs_files(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.write_text("48312\n", encoding="ascii")
    thr = tmp_path / "get_throttled"
    thr.write_text("50005\n", encoding="ascii")
    assert ds.cpu_temp_c(temp) == pytest.approx(48.312)
    assert ds.throttled(thr) == 0x50005
    assert ds.throttled_flags(0x50005) == ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]
    gps = GpsdState(True, FixMode.FIX_3D, 0.4, 9, 0, None, last_acc_m=4.46)
    status = ds.device_status(
        fps=9.876, inference_ms=61.23, gps=gps, outbox_depth=3, paused=False, thermal_path=temp, throttled_path=thr
    )
    assert status["cpu_temp_c"] == pytest.approx(48.312) and status["throttled"] == 0x50005
    assert status["fps"] == 9.88 and status["inference_ms"] == 61.2 and status["gps_mode"] == 3
    assert status["gps_fix_age_s"] == 0.4 and status["outbox_depth"] == 3 and status["paused"] is False
    assert status["gps_acc_m"] == 4.5 and status["gps_sats_used"] == 9
    assert "9.9 fps" in ds.status_line(status) and "gps mode 3 ±4 m 9 sats" in ds.status_line(status)
    assert status["outbox_overflowed"] == 0 and "outbox full" not in ds.status_line(status)
    assert status["camera_dropped"] is None and status["camera_clock_steps"] is None  # not the Pi camera
    assert "camera" not in ds.status_line(status)
    full = ds.device_status(
        fps=9.0,
        inference_ms=60.0,
        gps=gps,
        outbox_depth=100,
        paused=False,
        outbox_overflowed=2,
        outbox_dropped=5,
        camera_dropped=7,
        camera_clock_steps=1,
    )
    assert (full["outbox_overflowed"], full["outbox_dropped"]) == (2, 5)
    assert (full["camera_dropped"], full["camera_clock_steps"]) == (7, 1)
    line = ds.status_line(full)
    assert "outbox full: 2 in its overflow file" in line and "outbox full: 5 dropped" in line
    assert "camera dropped 7 frames" in line
    json.dumps(status)  # JSON-ready
    no_sky = ds.device_status(
        fps=None,
        inference_ms=None,
        gps=GpsdState(True, FixMode.NO_FIX, None, None, 0, None),
        outbox_depth=None,
        paused=False,
        thermal_path=temp,
        throttled_path=thr,
    )
    assert no_sky["gps_acc_m"] is None and no_sky["gps_sats_used"] is None
    assert "gps mode 1," in ds.status_line(no_sky) + ","


def test_device_status_none_when_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert ds.cpu_temp_c(missing) is None and ds.throttled(missing) is None
    garbage = tmp_path / "garbage"
    garbage.write_text("hot\n", encoding="ascii")
    assert ds.cpu_temp_c(garbage) is None and ds.throttled(garbage) is None
    status = ds.device_status(
        fps=None,
        inference_ms=None,
        gps=None,
        outbox_depth=None,
        paused=True,
        thermal_path=missing,
        throttled_path=missing,
    )
    assert status["cpu_temp_c"] is None and status["throttled"] is None and status["throttled_flags"] is None
    assert status["gps_mode"] is None and status["paused"] is True
    assert status["gps_acc_m"] is None and status["gps_sats_used"] is None
    assert ds.status_line(status).startswith("paused")


# ---- the LED shows the current fix state, and ERROR ----


def test_led_waits_for_a_current_fix_not_any_fix(tmp_path: Path) -> None:
    """A track whose fixes all lie in the past (the live camera's frames are stamped now): fixes
    exist, but none places the current frames, so the LED says waiting, not running."""
    old = write_gpx(tmp_path / "old.gpx", 6)  # 2026-05-01, long before these frames
    run = LiveRun(
        pi_config(tmp_path, gpio=True, gps=f"source = 'gpx'\npath = '{old}'\n"),
        fake_picamera2.module(),
        pin_factory=MockFactory(),
        environ={},
    )
    try:
        assert wait_for(lambda: run.stats.frames >= 3), run.result
        assert led() == LedState.WAITING_FOR_FIX
    finally:
        assert run.stop() == [0]


class FakeGpsd:
    """One gpsd client connection on loopback; ``mode`` (3, 1 or None for silence) is what a feeder
    thread sends every 0.1 s as a TPV; ``close()`` is gpsd going away (and staying away)."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.mode: int | None = None
        self.connected = threading.Event()
        self._closed = threading.Event()
        self._conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        self._conn = conn
        conn.recv(1024)  # ?WATCH
        self.connected.set()
        while not self._closed.wait(0.1):
            if self.mode is None:
                continue
            lat, lon = bike_at(0.0)
            tpv = {"class": "TPV", "mode": self.mode, "time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
            if self.mode >= 2:
                tpv |= {"lat": lat, "lon": lon, "eph": 3.2, "speed": 7.0, "track": 0.0}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(tpv).encode() + b"\n")

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        if self._conn is not None:
            self._conn.close()


def test_led_follows_gpsd_fix_mode_age_and_loss(tmp_path: Path) -> None:
    gpsd = FakeGpsd()
    factory = MockFactory()
    run = LiveRun(
        pi_config(tmp_path, gpio=True, gps=f"source = 'gpsd'\nport = {gpsd.port}\nmax_gap_s = 0.5\n"),
        fake_picamera2.module(),
        pin_factory=factory,
        environ={},
    )
    try:
        assert gpsd.connected.wait(30) and wait_for(lambda: run.stats.frames >= 2), run.result
        assert wait_for(lambda: led() == "waiting_for_fix")  # connected, no TPV yet
        gpsd.mode = 3
        assert wait_for(lambda: led() == "running"), led()
        gpsd.mode = None  # silence: the last fix grows older than max_gap_s
        assert wait_for(lambda: led() == "waiting_for_fix"), led()
        gpsd.mode = 3
        assert wait_for(lambda: led() == "running"), led()
        gpsd.mode = 1  # gpsd says: no fix
        assert wait_for(lambda: led() == "waiting_for_fix"), led()
        pin = factory.pin(BUTTON)
        pin.drive_low()  # pause: the LED shows paused...
        time.sleep(0.05)
        pin.drive_high()
        assert wait_for(lambda: led() == "paused"), led()
        gpsd.close()  # ...but gpsd lost is an error, shown while paused too
        assert wait_for(lambda: led() == "error"), led()
        assert run.stats.skipped > 0
    finally:
        gpsd.close()
        assert run.stop() == [0]


def test_a_failure_shows_error_on_the_led_before_exiting(tmp_path: Path) -> None:
    factory = MockFactory()
    run = LiveRun(
        pi_config(tmp_path, gpio=True),
        fake_picamera2.module(cameras=False),  # no camera: open() fails after the model loaded
        pin_factory=factory,
        environ={},
        error_hold_s=3.0,
    )
    assert wait_for(lambda: led() == LedState.ERROR, 60), run.result
    seen = time.monotonic()
    pin = factory.pin(LED)
    pin.clear_states()
    time.sleep(2.4)  # two 1.08 s cycles (3 x 0.16 s, 0.6 s dark): one whole group between two gaps
    states = [(s.timestamp, bool(s.state)) for s in pin.states]
    assert run.result == []  # still holding the ERROR pattern
    run.thread.join(10)
    assert run.finished_at is not None and run.finished_at - seen >= 2.5
    assert len(run.result) == 1 and isinstance(run.result[0], CameraError), run.result
    assert "no camera 0" in str(run.result[0])
    assert 3 in group_sizes(pulses(states)), pulses(states)  # the triple blink
    assert not pin.state and led() is None  # closed: off


def test_a_stop_request_cuts_the_error_hold_short(tmp_path: Path) -> None:
    run = LiveRun(
        pi_config(tmp_path, gpio=True),
        fake_picamera2.module(cameras=False),
        pin_factory=MockFactory(),
        environ={},
        error_hold_s=60.0,
    )
    assert wait_for(lambda: led() == LedState.ERROR, 60), run.result
    run.flag.set(signal.SIGTERM)
    run.thread.join(3)
    assert not run.thread.is_alive() and isinstance(run.result[0], CameraError)


# ---- the status: the camera's own counts; the buzzer: once per frame ----


class DroppingCamera(fake_picamera2.Picamera2):
    """A camera that drops frames 3 and 4 (the pipeline fell behind, every buffer was held)."""

    def __init__(self, camera_num: int = 0) -> None:
        super().__init__(camera_num)
        self.skip = {3, 4}


def test_status_counts_the_frames_the_camera_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    device_status = ds.device_status

    def recording(**kwargs: Any) -> dict[str, Any]:
        status = device_status(**kwargs)
        sent.append(status)
        return status

    monkeypatch.setattr(ds, "device_status", recording)
    run = LiveRun(
        pi_config(tmp_path, gpio=False), SimpleNamespace(Picamera2=DroppingCamera), environ={}, status_interval_s=0.01
    )
    try:
        assert wait_for(lambda: any(s["camera_dropped"] == 2 for s in sent), 60), (sent[-1:], run.result)
        assert all(isinstance(s["camera_clock_steps"], int) for s in sent)
        assert "camera dropped 2 frames" in ds.status_line(sent[-1])
    finally:
        assert run.stop() == [0]


class StubPipeline:
    """Frame k publishes ``per_frame[k]`` sightings."""

    def __init__(self, per_frame: list[int]) -> None:
        self.per_frame = per_frame
        self.published = 0
        self.detector = None

    def process(self, frame: Frame) -> None:
        self.published += self.per_frame[frame.index]


class StubPanel:
    paused = False

    def __init__(self, pipeline: StubPipeline) -> None:
        self.pipeline = pipeline
        self.signals: list[int] = []  # pipeline.published at each beep

    def set_state(self, state: LedState) -> None:
        pass

    def sighting(self) -> None:
        self.signals.append(self.pipeline.published)


def test_one_beep_per_frame_however_many_sightings_it_published() -> None:
    """A frame that publishes three sightings beeps once: each beep would cut the one before short."""
    pipeline = StubPipeline([0, 3, 0, 1])
    panel = StubPanel(pipeline)
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), True, k, T0 + timedelta(seconds=k), k, "stub") for k in range(4)]
    run_cli._frame_loop(
        frames,  # type: ignore[arg-type]
        pipeline,  # type: ignore[arg-type]
        SimpleNamespace(at=lambda t: None, max_gap_s=2.0),  # type: ignore[arg-type]
        None,
        panel,  # type: ignore[arg-type]
        Notifier(None),
        SimpleNamespace(maybe=lambda pipeline, stats: None),  # type: ignore[arg-type]
        run_cli.StopFlag(),
        run_cli.LiveStats(),
    )
    assert panel.signals == [3, 4]


# ---- a recorded video runs at [camera] fps, as the camera would ----


def test_a_video_is_thinned_to_the_camera_fps(tmp_path: Path) -> None:
    pytest.importorskip("av")
    video = tmp_path / "ride30.mp4"
    _write_video(video, [round(k * 1000 / 30) for k in range(30)], fps=30)  # 1 s at 30 fps
    config = tmp_path / "video.toml"
    config.write_text(
        "[detector]\nnum_threads = 2\n"
        f"[camera]\nsource = 'video'\npath = '{video}'\nfps = 10.0\n"
        f"[gps]\nsource = 'gpx'\npath = '{write_gpx(tmp_path / 'ride.gpx', 10)}'\n"
        f"[output]\nfile = '{tmp_path / 'out.jsonl'}'\n",
        encoding="utf-8",
    )
    stats = run_cli.LiveStats()
    assert run_cli.run_live(config, stats=stats, environ={}) == 0
    assert stats.frames == 10  # a third of the 30


# ---- the watchdog: fed by frames only ----


class HangingCamera(fake_picamera2.Picamera2):
    """A camera whose capture hangs after 8 frames (libcamera wedged, a loose ribbon)."""

    def __init__(self, camera_num: int = 0) -> None:
        super().__init__(camera_num)
        self.hang_after = 8


def test_a_hung_camera_stops_the_watchdog(tmp_path: Path, notify_socket: NotifySocket) -> None:
    def pings() -> int:
        return sum(1 for m in list(notify_socket.messages) if m == "WATCHDOG=1")

    run = LiveRun(
        pi_config(tmp_path, gpio=False),
        SimpleNamespace(Picamera2=HangingCamera),
        environ={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "20000"},  # a ping every >= 10 ms
        status_interval_s=0.01,
    )
    try:
        assert wait_for(lambda: bool(HangingCamera.instances), 60), run.result
        cam = HangingCamera.instances[-1]
        assert cam.hanging.wait(60), run.result
        time.sleep(0.1)  # datagrams in flight
        before = pings()
        assert before >= 1 and notify_socket.messages[0].startswith("READY=1")
        time.sleep(0.6)  # 30 watchdog intervals: systemd would have killed it long ago
        assert pings() == before, "WATCHDOG=1 sent while the camera hung"
        assert run.thread.is_alive()
        run.flag.set(signal.SIGTERM)
        cam.unhang()  # one more frame: it pings again, then sees the flag
        assert wait_for(lambda: pings() > before)
    finally:
        for cam in HangingCamera.instances:
            cam.unhang()
        assert run.stop() == [0]
    assert notify_socket.close()[-1] == "STOPPING=1"


# ---- `sousveil run` as systemd runs it: a process, a real SIGTERM ----


def _frames_folder(folder: Path, n: int) -> None:
    """``n`` frames 0.1 s apart from T0, each the same view of a dome 16 m ahead: the tracker
    never sees it leave, so its track is still open when SIGTERM comes and only the stop's flush
    (the tracker's finish, then the outbox drained to the broker) can publish it."""
    folder.mkdir()
    view = np.ascontiguousarray(draw(24)[100:460, 480:1120])  # 640x360, the dome in the upper band
    still = folder / "still.png.src"
    Image.fromarray(view).save(still, format="PNG")
    for k in range(n):
        name = (T0 + timedelta(seconds=k / 10)).strftime("%Y%m%dT%H%M%S.%fZ") + ".png"
        (folder / name).symlink_to(still)


def test_sigterm_stops_sousveil_run_cleanly(tmp_path: Path, notify_socket: NotifySocket, broker: Broker) -> None:
    frames = tmp_path / "frames"
    _frames_folder(frames, 600)
    gpx = write_gpx(tmp_path / "ride.gpx", 80)
    config = tmp_path / "run.toml"
    config.write_text(
        "[detector]\nnum_threads = 2\n"
        f"[camera]\nsource = 'images'\npath = '{frames}'\n"
        f"[gps]\nsource = 'gpx'\npath = '{gpx}'\n"
        f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n",
        encoding="utf-8",
    )
    state = tmp_path / "state"
    env = {**os.environ, "SOUSVEIL_STATE_DIR": str(state), "NOTIFY_SOCKET": notify_socket.address}
    entry = Path(sys.executable).parent / "sousveil"
    cmd = [str(entry)] if entry.exists() else [sys.executable, "-m", "firmware"]
    subscriber = Subscriber(broker.port, "sousveil/v1/sightings/#")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([*cmd, "run", "--config", str(config)], cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        try:
            assert wait_for(lambda: any(m.startswith("READY=1") for m in notify_socket.messages), 120), err.read_text()
            time.sleep(3.0)  # some frames: the dome's track is confirmed (and stays open)
            assert proc.poll() is None, err.read_text()
            assert subscriber.messages == []  # nothing closed yet: all that comes is the stop's flush
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    try:
        messages = subscriber.wait_for(1, timeout=5.0)
    finally:
        subscriber.close()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    assert rc == 0, stderr_text
    assert "stopped by signal 15; finishing" in stderr_text
    summary = next(line for line in stdout_text.splitlines() if "sightings published" in line)
    frames_done = int(summary.split(" frames", 1)[0])
    published = int(summary.split(" sightings published", 1)[0].rsplit(" ", 1)[1])
    assert 0 < frames_done < 600, summary  # stopped by the signal, not by the end of the frames
    assert published >= 1 and len(messages) == published, (summary, len(messages))
    body = json.loads(messages[0].payload)
    assert body["frames"] >= 3 and body["device"] and body["rays"]
    outbox = Outbox(state / "outbox.db")
    try:
        assert outbox.stats().depth == 0  # every sighting acknowledged by the broker before exit
    finally:
        outbox.close()
    assert notify_socket.close()[-1] == "STOPPING=1"
