"""firmware.sdnotify against real unix datagram sockets, as systemd would listen on them."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.sdnotify import Notifier


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path in tmp_path, as systemd's $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on sock, decoded."""
    out: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return out


def test_ready_status_stopping_reach_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})

    notifier.ready()
    notifier.ready("camera and model up")
    notifier.status("12.5 fps, no fix")
    notifier.stopping()

    assert received(sock) == [
        "READY=1",
        "READY=1\nSTATUS=camera and model up",
        "STATUS=12.5 fps, no fix",
        "STOPPING=1",
    ]


def test_status_is_kept_on_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("broker down\nREADY=1")
    assert received(sock) == ["STATUS=broker down READY=1"]


def test_abstract_namespace_socket() -> None:
    name = f"sousveil-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_watchdog_is_rate_limited_to_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = FakeClock()
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}, clock=clock)
    assert notifier.watchdog_interval_s == 30.0

    notifier.watchdog()  # first call always pings
    assert received(sock) == ["WATCHDOG=1"]

    for _ in range(100):  # a frame loop at 10 fps for 10 s
        clock.now_s += 0.1
        notifier.watchdog()
    assert received(sock) == []

    clock.now_s += 4.99  # 14.99 s since the ping: still under half the interval
    notifier.watchdog()
    assert received(sock) == []

    clock.now_s += 0.01  # 15 s: half the interval
    notifier.watchdog()
    notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]

    clock.now_s += 15.0
    notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]


def test_watchdog_without_watchdog_usec_sends_nothing(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()
    notifier.ready()
    assert received(sock) == ["READY=1"]


def test_watchdog_pid_of_this_process_enables_it(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval_s == 2.0
    notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]


def test_watchdog_meant_for_another_pid_is_off(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()
    assert received(sock) == []


@pytest.mark.parametrize("usec", ["0", "-5", "soon", ""])
def test_bad_or_zero_watchdog_usec_means_no_watchdog(usec: str, listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    assert Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec}).watchdog_interval_s is None


def test_missing_env_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    notifier = Notifier.from_env()  # reads os.environ
    assert notifier.watchdog_interval_s is None
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_watchdog_usec_without_socket_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()


def test_relative_notify_socket_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relative").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("relative/notify")  # something listens there: still nothing is sent
        with caplog.at_level(logging.WARNING, logger="firmware.sdnotify"):
            notifier = Notifier.from_env({"NOTIFY_SOCKET": "relative/notify", "WATCHDOG_USEC": "1000000"})
        notifier.ready("up")
        notifier.watchdog()
        assert received(sock) == []
    assert notifier.watchdog_interval_s is None
    assert "NOTIFY_SOCKET" in caplog.text


def test_socket_that_disappears_raises_nothing_and_logs_once(
    listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = listener
    clock = FakeClock()
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}, clock=clock)
    notifier.ready()
    assert received(sock) == ["READY=1"]

    sock.close()
    Path(path).unlink()  # systemd went away

    with caplog.at_level(logging.WARNING, logger="firmware.sdnotify"):
        notifier.status("still here")
        for _ in range(5):
            clock.now_s += 1.0
            notifier.watchdog()
        notifier.stopping()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify systemd" in warnings[0].getMessage()


def test_socket_closed_but_path_left_behind_raises_nothing(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    sock.close()  # the path remains, nobody listens: ECONNREFUSED
    notifier.ready()
    notifier.stopping()


def test_abstract_socket_nobody_listens_on_raises_nothing() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": f"@sousveil-gone-{uuid.uuid4().hex}"})
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
