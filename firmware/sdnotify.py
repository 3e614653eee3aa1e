"""A stdlib sd_notify(3) client: tell systemd we are ready, alive, and stopping.

systemd starts ``sousveil run`` with ``Type=notify`` and ``WatchdogSec=``; it passes the
notification socket in ``$NOTIFY_SOCKET`` and the watchdog interval in ``$WATCHDOG_USEC``.
Outside systemd (a shell, the tests) those are unset and every method is a no-op, so the
frame loop can call it unconditionally::

    notifier = Notifier.from_env()
    notifier.ready("camera and model up")      # once, after start-up succeeded
    while not stop_requested:
        frame = camera.read()
        notifier.watchdog()                     # every frame; sends at most every interval/2
    notifier.stopping()

A send that fails (systemd gone, socket removed) is logged once and otherwise ignored:
losing a notification must never take the bike down. See docs/service.md.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to ``address``; a no-op when ``address`` is None.

    ``address`` is a filesystem path or an abstract socket name starting with ``@``
    (as systemd writes it in ``$NOTIFY_SOCKET``). ``watchdog_usec`` is the interval
    systemd expects pings within (0: no watchdog). ``clock`` returns monotonic seconds.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._watchdog_usec = max(0, watchdog_usec)
        self._clock = clock
        self._last_ping_s: float | None = None
        self._warned = False

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Notifier:
        """A notifier configured from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is enabled only when ``WATCHDOG_USEC`` is a positive integer and
        ``WATCHDOG_PID`` is unset or names this process (as sd_watchdog_enabled(3) does).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not (address.startswith("/") or address.startswith("@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying systemd", address)
            address = None
        watchdog_usec = _parse_watchdog_usec(env)
        return cls(address, watchdog_usec=watchdog_usec, clock=clock)

    @property
    def watchdog_interval_s(self) -> float | None:
        """The interval systemd expects watchdog pings within, in seconds; None if no watchdog."""
        if self._address is None or self._watchdog_usec == 0:
            return None
        return self._watchdog_usec / 1_000_000

    def ready(self, status: str = "") -> None:
        """Start-up is complete (``READY=1``), optionally with a status line."""
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> None:
        """A free-form status line, shown by ``systemctl status``."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Ping the watchdog (``WATCHDOG=1``); cheap to call every frame.

        Sends at most once per half watchdog interval, as sd_watchdog_enabled(3) advises.
        """
        interval_s = self.watchdog_interval_s
        if interval_s is None:
            return
        now = self._clock()
        if self._last_ping_s is not None and now - self._last_ping_s < interval_s / 2:
            return
        self._last_ping_s = now
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun (``STOPPING=1``)."""
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            # Non-blocking: a full notify queue (nobody reading it) must never stall the frame
            # loop; the message is dropped and logged instead.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.connect(address)
                sock.send(message.encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s (further failures not logged)", self._address, exc)
            else:
                log.debug("cannot notify systemd at %s: %s", self._address, exc)


def _parse_watchdog_usec(env: Mapping[str, str]) -> int:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return 0
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog off", raw)
        return 0
    if usec <= 0:
        return 0
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return 0  # the watchdog is meant for another process (e.g. our parent)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not an integer; watchdog off", pid)
            return 0
    return usec


def _one_line(text: str) -> str:
    # each notification field is one line; a newline would start a new (bogus) assignment
    return " ".join(text.splitlines())
