"""``sousveil run`` on the bike: the Pi camera (picamera2 test double), sd_notify to a real unix
datagram socket, the GPIO panel on gpiozero's MockFactory (pause, resume, long-press stop), and
the device status (firmware/device_status.py) read from sysfs-like files in tmp_path."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fake_picamera2
import pytest
from gpiozero.pins.mock import MockFactory

from firmware import device_status as ds
from firmware import replay_cli, run_cli
from firmware.position.fix import FixMode
from firmware.position.gpsd import GpsdState
from tests.mqtt_broker import free_port
from tests.test_pipeline import write_gpx

BUTTON = 22


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUSVEIL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(replay_cli, "LOCAL_BROKER", ("127.0.0.1", free_port()))
    fake_picamera2.Picamera2.instances.clear()


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


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def pi_config(tmp_path: Path, gpio: bool) -> Path:
    gpx = write_gpx(tmp_path / "ride.gpx", 6)
    config = tmp_path / "pi.toml"
    config.write_text(
        "[detector]\nnum_threads = 2\n"
        "[camera]\nsource = 'picamera2'\nwidth = 320\nheight = 240\nfps = 30.0\nmax_exposure_us = 4000\n"
        f"[gps]\nsource = 'gpx'\npath = '{gpx}'\n"
        f"[output]\nfile = '{tmp_path / 'live.jsonl'}'\n"
        + (f"[gpio]\nenabled = true\nbutton_pin = {BUTTON}\nlong_press_s = 0.3\n" if gpio else ""),
        encoding="utf-8",
    )
    return config


def test_picamera2_notify_and_button(
    tmp_path: Path, notify_socket: NotifySocket, capsys: pytest.CaptureFixture[str]
) -> None:
    address = notify_socket.address
    factory = MockFactory()
    stats = run_cli.LiveStats()
    flag = run_cli.StopFlag()
    result: list[int | BaseException] = []

    def target() -> None:
        try:
            result.append(
                run_cli.run_live(
                    pi_config(tmp_path, gpio=True),
                    flag=flag,
                    picamera2_module=fake_picamera2.module(),
                    pin_factory=factory,
                    environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"},
                    status_interval_s=0.05,
                    stats=stats,
                    thermal_path=tmp_path / "none",
                    throttled_path=tmp_path / "none",
                )
            )
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        pin = factory.pin(BUTTON)
        assert wait_for(lambda: stats.frames >= 3), result
        assert stats.led == "running"  # the GPX track has fixes
        pin.drive_low()  # short press: pause
        time.sleep(0.05)
        pin.drive_high()
        assert wait_for(lambda: stats.skipped >= 3)
        assert stats.paused and stats.led == "paused"
        frames = stats.frames
        time.sleep(0.1)
        assert stats.frames == frames  # nothing processed while paused
        pin.drive_low()  # short press: resume
        time.sleep(0.05)
        pin.drive_high()
        assert wait_for(lambda: stats.frames >= frames + 3), (stats, result)
        assert not stats.paused and stats.led == "running"
        pin.drive_low()  # long press: clean shutdown
        thread.join(10)
        pin.drive_high()
    finally:
        flag.stop("test teardown")
        thread.join(10)
    assert result == [0]
    messages = notify_socket.close()
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"
    assert any(m.startswith("STATUS=paused") for m in messages)
    assert any(m.startswith("STATUS=running") for m in messages)
    assert "long press" in capsys.readouterr().err
    assert fake_picamera2.Picamera2.instances[-1].closed


def test_picamera2_without_gpio_stops_on_flag(tmp_path: Path, notify_socket: NotifySocket) -> None:
    address = notify_socket.address
    stats = run_cli.LiveStats()
    flag = run_cli.StopFlag()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_cli.run_live(
                pi_config(tmp_path, gpio=False),
                flag=flag,
                picamera2_module=fake_picamera2.module(af=False),
                environ={"NOTIFY_SOCKET": address},
                stats=stats,
            )
        ),
        daemon=True,
    )
    thread.start()
    assert wait_for(lambda: stats.frames >= 3)
    flag.set(15)
    thread.join(10)
    assert result == [0] and stats.led is None and stats.skipped == 0
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
    assert run_cli.picamera2_settings(c).focus == "continuous"
    config.write_text("[gpio]\nled_pin = 22\n", encoding="utf-8")  # same as the button
    with pytest.raises(ConfigFileError, match="gpio"):
        load_config(config, state_dir=tmp_path)
    config.write_text("[camera]\nfps = 10.0\nmax_exposure_us = 200000\n", encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"camera\.max_exposure_us"):
        load_config(config, state_dir=tmp_path)


def test_device_status_reads_sysfs_files(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.write_text("48312\n", encoding="ascii")
    thr = tmp_path / "get_throttled"
    thr.write_text("50005\n", encoding="ascii")
    assert ds.cpu_temp_c(temp) == pytest.approx(48.312)
    assert ds.throttled(thr) == 0x50005
    assert ds.throttled_flags(0x50005) == ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]
    gps = GpsdState(True, FixMode.FIX_3D, 0.4, 9, 0, None)
    status = ds.device_status(
        fps=9.876, inference_ms=61.23, gps=gps, outbox_depth=3, paused=False, thermal_path=temp, throttled_path=thr
    )
    assert status["cpu_temp_c"] == pytest.approx(48.312) and status["throttled"] == 0x50005
    assert status["fps"] == 9.88 and status["inference_ms"] == 61.2 and status["gps_mode"] == 3
    assert status["gps_fix_age_s"] == 0.4 and status["outbox_depth"] == 3 and status["paused"] is False
    assert "9.9 fps" in ds.status_line(status)


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
    assert ds.status_line(status).startswith("paused")
