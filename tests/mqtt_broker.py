"""A real mosquitto on loopback for tests: start, kill (SIGKILL), restart on the same port.

Used as fixtures from tests/test_mqtt.py and tests/test_mqtt_tls.py; skips with a clear reason
when mosquitto (or, for TLS, openssl) is missing (scripts/test.sh installs mosquitto).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker.local import LocalBroker, find_mosquitto, free_port, make_tls

MOSQUITTO = find_mosquitto()
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class ServerCert:
    """A throwaway CA and a server certificate it signed, all PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_server_cert(directory: Path) -> ServerCert:
    """A fresh CA and a server certificate for localhost and 127.0.0.1 signed by it, made by
    deploy/broker/make-ca.sh (broker.local.make_tls) as an operator would make them."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed (apt-get install openssl); needed to make the test certificates")
    ca = make_tls(directory)
    return ServerCert(ca, directory / "server.crt", directory / "server.key")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """Another CA of its own in ``directory/name``: (certificate, key)."""
    tls = make_server_cert(directory / name)
    return tls.ca_file, tls.ca_file.with_suffix(".key")


class Broker(LocalBroker):
    """One mosquitto process with its own config in ``directory``; ``users`` turns on a password file.

    ``tls`` makes the one listener TLS-only (no client certificate required). ``start`` and
    ``stop`` (SIGTERM) are LocalBroker's; ``kill`` is a crash, ``restart`` comes back on the same port.
    """

    def __init__(self, directory: Path, users: dict[str, str] | None = None, tls: ServerCert | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/test.sh does it)")
        port = free_port()
        self.tls = tls
        lines = [
            f"listener {port} 127.0.0.1",
            "persistence false",
            f"log_dest file {directory / 'mosquitto.log'}",
            "log_type all",
            # started as root (CI containers) mosquitto would switch to user 'mosquitto', who cannot read tmp_path
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                "require_certificate false",
            ]
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd is not installed")
            pwfile = directory / "passwd"
            for i, (user, password) in enumerate(users.items()):
                args = [MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password]
                subprocess.run(args, check=True, capture_output=True)
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        super().__init__(directory, "\n".join(lines) + "\n", port)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crash or a pulled cable at the broker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


# registered under their short names; tests import the *_fixture functions (no name clash with parameters)
@pytest.fixture(name="broker_factory")
def broker_factory_fixture(tmp_path: Path) -> Iterator[Any]:
    brokers: list[Broker] = []

    def make(users: dict[str, str] | None = None, start: bool = True, tls: ServerCert | None = None) -> Broker:
        d = tmp_path / f"broker{len(brokers)}"
        d.mkdir()
        b = Broker(d, users, tls)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        b.kill()


@pytest.fixture(name="broker")
def broker_fixture(broker_factory: Any) -> Broker:
    b: Broker = broker_factory()
    return b


@pytest.fixture(name="tls_broker")
def tls_broker_fixture(broker_factory: Any, tmp_path: Path) -> Broker:
    """A mosquitto whose only listener is TLS, with a fresh CA; ``tls_broker.tls.ca_file`` trusts it."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/test.sh does it)")
    b: Broker = broker_factory(tls=make_server_cert(tmp_path / "pki"))
    return b


class Subscriber:
    """A paho v5 client that records what arrives on ``topic`` (a filter)."""

    def __init__(
        self,
        port: int,
        topic: str,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ):
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.topic = topic
        self.qos = qos
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file is not None:  # TLS, verifying the broker against this CA
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=self.qos)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def expect_resubscribe(self) -> None:
        """Call before the broker goes away; then ``wait_subscribed`` waits for the SUBACK after it is back."""
        self._subscribed.clear()

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        return self._subscribed.wait(timeout)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        """Wait until at least ``count`` messages arrived; return them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---- the shipped map broker (deploy/broker/, issue 7): TLS, accounts, ACL ----


class V5Client:
    """A paho v5 client over TLS for the map broker tests: connect, publish QoS 1 and see the PUBACK's reason."""

    def __init__(self, port: int, ca_file: Path | None, username: str | None = None, password: str | None = None):
        self.port = port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.connack: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self.disconnected.set()
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self.acks[mid] = reason
            self._cond.notify_all()

    def connect(self, timeout: float = 5.0) -> Any:
        """The CONNACK's reason code (``.is_failure``), or None when none came (TLS failed, closed)."""
        self.client.reconnect_delay_set(60, 60)  # no retries inside a test
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10)
        except OSError:
            return None
        self.client.loop_start()
        self.connected.wait(timeout)
        return self.connack

    def publish(self, topic: str, payload: bytes | str, timeout: float = 5.0, retain: bool = False) -> Any:
        """The PUBACK's reason code (ReasonCode), or None when no PUBACK came within ``timeout``."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            self._cond.wait_for(lambda: info.mid in self.acks or self.disconnected.is_set(), timeout)
            return self.acks.get(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MapBroker:
    """The shipped deploy/broker/mosquitto.conf with TLS from make-ca.sh and accounts from ``sousveil broker``."""

    def __init__(self, directory: Path, extra_conf: str = "") -> None:
        from broker.accounts import BrokerAccounts

        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/test.sh does it)")
        if OPENSSL is None:
            pytest.skip("openssl is not installed (apt-get install openssl)")
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.ca_file = make_tls(directory / "tls")
        self.accounts = BrokerAccounts(directory)
        self.secrets = directory / "enrol"
        (directory / "passwd").touch(mode=0o640)
        (directory / "acl").touch(mode=0o640)
        self.broker = LocalBroker.shipped(directory, extra=extra_conf)
        self.port = self.broker.port

    def add_device(self, name: str) -> tuple[str, str]:
        """(device id, password) of a new device account (enrol before ``broker.start()``, or reload)."""
        e = self.accounts.add_device(name, self.secrets)
        return e.account.username, e.password_file.read_text().strip()

    def add_reader(self, name: str) -> str:
        return self.accounts.add_reader(name, self.secrets).password_file.read_text().strip()

    def client(self, username: str | None = None, password: str | None = None, tls: bool = True) -> V5Client:
        return V5Client(self.port, self.ca_file if tls else None, username, password)

    def subscriber(self, topic: str, username: str, password: str) -> Subscriber:
        """A reader's Subscriber on ``topic`` over TLS (it has its SUBACK when this returns)."""
        return Subscriber(self.port, topic, username=username, password=password, ca_file=self.ca_file)


@pytest.fixture(name="map_broker_factory")
def map_broker_factory_fixture(tmp_path: Path) -> Iterator[Any]:
    """``make(name, extra_conf="") -> MapBroker`` (not started: enrol first, then ``.broker.start()``)."""
    made: list[MapBroker] = []

    def make(name: str = "map", extra_conf: str = "") -> MapBroker:
        b = MapBroker(tmp_path / name, extra_conf)
        made.append(b)
        return b

    yield make
    for b in made:
        b.broker.stop()
