"""A local mosquitto running the shipped map-broker config (deploy/broker/mosquitto.conf) in one folder.

For the tests and the benchmarks (scripts/bench_*.py): the shipped config's
``/etc/mosquitto/sousveil`` paths point into ``directory``, the listener moves to
``bind``:``port``, and what Debian's main config would add (persistence location, log file,
the user to run as) is appended. ``LocalBroker`` also runs any other config text.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONF = REPO / "deploy" / "broker" / "mosquitto.conf"
BRIDGE_CONF = REPO / "deploy" / "broker" / "bridge-national.conf"
MAKE_CA = REPO / "deploy" / "broker" / "make-ca.sh"
CONF_DIR = "/etc/mosquitto/sousveil"


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def render_config(template: str, directory: Path, port: int, bind: str = "127.0.0.1") -> str:
    """The shipped config with its paths moved into ``directory`` and its listener on ``bind``:``port``."""
    text = template.replace(CONF_DIR, str(directory))
    if "\nlistener 8883\n" not in text:
        raise ValueError("the config has no 'listener 8883' line to move")
    text = text.replace("\nlistener 8883\n", f"\nlistener {port} {bind}\n")
    extra = [
        "",
        "# ---- added by broker/local.py (Debian's main config sets these) ----",
        f"persistence_location {directory}/",
        f"log_dest file {directory / 'mosquitto.log'}",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root mosquitto would switch to 'mosquitto'
    ]
    return text + "\n".join(extra) + "\n"


def make_tls(directory: Path, *names: str) -> Path:
    """Run deploy/broker/make-ca.sh for ``names`` into ``directory`` (default: localhost, 127.0.0.1)."""
    done = subprocess.run(
        ["sh", str(MAKE_CA), "--dir", str(directory), *(names or ("localhost", "127.0.0.1"))],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"make-ca.sh failed ({done.returncode}): {done.stderr.strip()}")
    return directory / "ca.crt"


class LocalBroker:
    """mosquitto with ``conf_text`` written to ``directory/mosquitto.conf``; ``start``, ``stop``.

    ``start`` reads the file then, so a caller may edit ``conf`` in between."""

    def __init__(self, directory: Path, conf_text: str, port: int) -> None:
        self.dir = directory
        self.port = port
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.conf.write_text(conf_text, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def shipped(cls, directory: Path, port: int | None = None, extra: str = "") -> LocalBroker:
        """The shipped config in ``directory`` (accounts there, TLS files in ``directory/tls``)."""
        port = free_port() if port is None else port
        text = render_config(SHIPPED_CONF.read_text(encoding="utf-8"), directory, port)
        return cls(directory, text + extra, port)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = 5.0) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err.strip()} {log.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 5.0, after: int = 0) -> bool:
        """True once ``text`` appears in the log beyond byte ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace")[after:]:
                return True
            time.sleep(0.02)
        return False

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def rss_kib(self) -> int:
        """The broker's resident memory (VmRSS) in KiB; 0 when it is not running."""
        if not self.alive():
            return 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
