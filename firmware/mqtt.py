"""Publish sightings to the map broker over MQTT v5, from the durable outbox, never losing one.

paho-mqtt keeps QoS 1 messages in memory only, so the outbox (firmware/outbox.py) is the one
queue: ``submit`` stores a sighting on disk first, one sender thread publishes pending rows
while connected (a bounded window in flight), and a row leaves the outbox only when the
broker's PUBACK carries a success reason code. See docs/mqtt.md::

    settings = MqttSettings(host="map.example.org", port=8883, client_id="bike-3f9a",
                            username="bike-3f9a", password_file=Path("/etc/sousveil/mqtt-password"),
                            ca_file=Path("/etc/ssl/certs/ca-certificates.crt"))
    with Outbox(Path("/var/lib/sousveil/outbox.db")) as box:
        pub = MqttPublisher(settings, box, device_id="3f9a1c0e5b7d2468")
        pub.start()
        pub.submit(sighting)  # durable on return; delivered when the broker is reachable
        pub.flush(5.0)
        pub.close()  # leaves the retained status 'offline'
"""

from __future__ import annotations

import json
import logging
import os
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware.geohash import DEFAULT_TOPIC_PRECISION, sighting_topic, status_topic
from firmware.outbox import Outbox
from firmware.sighting import Sighting, to_json

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "sousveil/v1"
RETRY_S = 1.0  # the sender looks at the outbox at least this often, even without a nudge


class MqttConfigError(ValueError):
    """The MQTT settings cannot work (the message names the setting, never the password)."""


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker. Times in seconds.

    The password is never part of the settings: ``password_file`` names a file that holds it
    (first line, trailing newline stripped) and ``password_env`` an environment variable;
    the file wins when both are set. TLS is on when ``tls`` is true or any of ``ca_file``,
    ``cert_file``, ``key_file`` is set; ``tls_insecure`` (skip the host name check) is for
    tests only.
    """

    host: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    topic_prefix: str = DEFAULT_PREFIX
    topic_precision: int = DEFAULT_TOPIC_PRECISION
    session_expiry_s: int = 3600
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60
    max_inflight: int = 20

    def __post_init__(self) -> None:
        if not self.host:
            raise MqttConfigError("mqtt.host: must name the broker")
        if not 0 < self.port < 65536:
            raise MqttConfigError(f"mqtt.port: must be 1..65535, got {self.port}")
        if self.keepalive_s < 1:
            raise MqttConfigError(f"mqtt.keepalive_s: must be >= 1, got {self.keepalive_s}")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise MqttConfigError(f"mqtt.session_expiry_s: must be 0..4294967295, got {self.session_expiry_s}")
        if not 1 <= self.reconnect_min_s <= self.reconnect_max_s:
            raise MqttConfigError(
                f"mqtt.reconnect_min_s/reconnect_max_s: need 1 <= min <= max, got"
                f" {self.reconnect_min_s}/{self.reconnect_max_s}"
            )
        if not 1 <= self.max_inflight <= 65535:
            raise MqttConfigError(f"mqtt.max_inflight: must be 1..65535, got {self.max_inflight}")
        if (self.password_file or self.password_env) and not self.username:
            raise MqttConfigError("mqtt.username: a password is configured but no username")
        if bool(self.cert_file) != bool(self.key_file):
            raise MqttConfigError("mqtt.cert_file/key_file: a client certificate needs both")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.ca_file, self.cert_file, self.key_file))

    def read_password(self) -> str | None:
        """The password from ``password_file`` or ``password_env``; None when neither is set."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise MqttConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}") from None
            lines = text.splitlines()
            if not lines or not lines[0]:
                raise MqttConfigError(f"mqtt.password_file: {self.password_file} is empty")
            return lines[0]
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise MqttConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return value
        return None


def configure_auth(client: mqtt.Client, s: MqttSettings) -> None:
    """Set the username/password and TLS of ``s`` on ``client``.

    Raises MqttConfigError (the password file/env), ValueError or OSError (ssl.SSLError: the certificates).
    """
    if s.username:
        client.username_pw_set(s.username, s.read_password())
    if s.uses_tls:
        client.tls_set(
            ca_certs=str(s.ca_file) if s.ca_file else None,
            certfile=str(s.cert_file) if s.cert_file else None,
            keyfile=str(s.key_file) if s.key_file else None,
        )
        if s.tls_insecure:
            client.tls_insecure_set(True)


def topic_for(sighting: Sighting, prefix: str = DEFAULT_PREFIX, precision: int = DEFAULT_TOPIC_PRECISION) -> str:
    """The region topic of a sighting: the camera's estimate when there is one, else the rider's
    position; the last level is the sighting's device id (the broker's ACL binds it to the account)."""
    where = sighting.estimate if sighting.estimate is not None else sighting.observer
    return sighting_topic(prefix, where.lat_deg, where.lon_deg, sighting.device, precision)


@dataclass(frozen=True, slots=True)
class PublisherState:
    """What the publisher is doing, for status and logs."""

    connected: bool
    last_error: str | None  # the last refusal or connection error, None after a good connect
    connects: int  # successful connects since start
    acked: int  # outbox rows the broker acknowledged since start
    rejected: int  # PUBACKs with a failure reason code since start (the rows stay in the outbox)


class _RetryNoise(logging.Filter):
    """paho's network thread logs 'Client is not connected' at ERROR on every reconnect try
    while the broker is away; the publisher already says so once (a warning with the cause)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Client is not connected"):
            log.debug("paho: %s", record.getMessage())
            return False
        return True


PAHO_LOG = logging.getLogger(__name__ + ".paho")
PAHO_LOG.addFilter(_RetryNoise())

# events from paho's thread (and the caller) to the sender thread
_NUDGE = ("nudge",)
_STOP = ("stop",)


class MqttPublisher:
    """Publishes the outbox to one broker; one paho network thread plus one sender thread.

    Only the sender thread calls ``Outbox.pending``/``mark_inflight``/``ack_mid``/
    ``requeue_inflight``: paho's callbacks only put events on a queue. That keeps the paho
    mutex (held while it calls ``on_publish``) and the outbox lock apart, and orders an ack
    after the ``mark_inflight`` of the same publish.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        device_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.device_id = device_id
        self.status_topic = status_topic(settings.topic_prefix, device_id)  # validates the id
        self._clock = clock
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._cond = threading.Condition()  # guards the counters below; notified on every change
        self._connected = False
        self._last_error: str | None = None
        self._connects = 0
        self._acked = 0
        self._rejected = 0
        self._status: dict[str, Any] = {}
        self._inflight: set[int] = set()  # mids published on this connection, PUBACK not yet seen
        self._sender: threading.Thread | None = None
        self._closed = False
        self._client = self._make_client()

    def __repr__(self) -> str:  # the settings hold no password; the paho client does, so it stays out
        return f"MqttPublisher(host={self.settings.host!r}, port={self.settings.port}, device_id={self.device_id!r})"

    # -- set-up -----------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=MQTTProtocolVersion.MQTTv5)
        client.enable_logger(PAHO_LOG)
        configure_auth(client, s)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.max_inflight_messages_set(s.max_inflight)
        will = json.dumps({"device": self.device_id, "state": "offline", "reason": "connection lost"})
        client.will_set(self.status_topic, will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        """Connect in the background (the broker may be down: the outbox waits) and start sending."""
        if self._sender is not None:
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._client.loop_start()

    # -- paho callbacks (paho's network thread): record and hand over, nothing else -----------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if reason.is_failure:
            error = f"broker {self.settings.host}:{self.settings.port} refused the connection: {reason}"
            with self._cond:
                changed = error != self._last_error
                self._last_error = error
                self._cond.notify_all()
            if changed:
                log.error("%s", error)
            return
        # paho would resend its in-memory copies now; the outbox is the one queue, so drop them
        client.drop_out_messages()
        with self._cond:
            self._connected = True
            self._last_error = None
            self._connects += 1
            self._cond.notify_all()
        log.info(
            "connected to %s:%s (session present: %s)", self.settings.host, self.settings.port, flags.session_present
        )
        self._events.put(("connected",))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = f"cannot connect to {self.settings.host}:{self.settings.port}"
        # paho calls this inside its ``except OSError`` and passes no exception: name the cause
        # (refused, unreachable, TLS certificate not trusted, ...) from the one being handled
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):
            error += f": TLS handshake failed: {exc}"
        elif exc is not None:
            error += f": {exc}"
        with self._cond:
            changed = error != self._last_error
            self._last_error = error
            self._cond.notify_all()
        if changed:
            log.warning("%s; retrying with backoff, sightings wait in the outbox", error)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and not self._closed:
            log.warning(
                "disconnected from %s:%s: %s; sightings wait in the outbox",
                self.settings.host,
                self.settings.port,
                reason,
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Properties) -> None:
        self._events.put(("puback", mid, not reason.is_failure, str(reason)))

    # -- the sender thread: the only one that drives the outbox's in-flight state ---------------------

    def _send_loop(self) -> None:
        while True:
            try:
                event = self._events.get(timeout=RETRY_S)
            except queue.Empty:
                event = _NUDGE
            try:
                if event == _STOP:
                    return
                self._handle(event)
                if self.connected:
                    self._fill_window()
            except Exception:  # keep sending: a bad event must not stop delivery for good
                log.exception("mqtt sender: unexpected error; retrying")
                time.sleep(RETRY_S)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "connected":
            self._inflight.clear()
            requeued = self.outbox.requeue_inflight()
            if requeued:
                log.info("resending %d unacknowledged sightings", requeued)
            self._send_status()
        elif kind == "puback":
            _, mid, ok, reason = event
            self._inflight.discard(mid)
            if not ok:
                with self._cond:
                    self._rejected += 1
                log.warning("broker refused message %s (%s); it stays in the outbox", mid, reason)
                return
            if self.outbox.ack_mid(mid) is not None:
                with self._cond:
                    self._acked += 1
                    self._cond.notify_all()
        elif kind == "status" and self.connected:  # offline: sent on the next connect
            self._send_status()

    def _fill_window(self) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for entry in self.outbox.pending(room):
            info = self._client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.outbox.mark_inflight(entry.id, info.mid)
                self._inflight.add(info.mid)
            else:  # offline since we looked; paho's memory copy is dropped on the next connect
                self.outbox.attempt(entry.id)
                return

    def _send_status(self) -> None:
        with self._cond:
            body = {**self._status, "device": self.device_id, "state": "online", "time_s": round(self._clock(), 3)}
        self._client.publish(self.status_topic, json.dumps(body, sort_keys=True), qos=1, retain=True)

    # -- the API ----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def state(self) -> PublisherState:
        with self._cond:
            return PublisherState(self._connected, self._last_error, self._connects, self._acked, self._rejected)

    def submit(self, sighting: Sighting) -> bool:
        """Store the sighting in the outbox (durable on return) and wake the sender.

        Returns False when a sighting with this id is already waiting. Raises OutboxFull when
        the outbox refuses it (the caller decides: pause, warn the rider).
        """
        topic = topic_for(sighting, self.settings.topic_prefix, self.settings.topic_precision)
        stored = self.outbox.put(sighting.id, topic, to_json(sighting), qos=1)
        self._events.put(_NUDGE)
        return stored

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Set the retained status (a JSON object; ``device``, ``state`` and ``time_s`` are added).

        Sent now when connected and again on every connect; only the latest one matters.
        """
        with self._cond:
            self._status = dict(status)
        self._events.put(("status",))

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; True when connected."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the outbox is empty; True when it is."""
        deadline = time.monotonic() + timeout
        self._events.put(_NUDGE)
        while True:
            if self.outbox.stats().depth == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(min(remaining, 0.1))

    def close(self, timeout: float = 2.0) -> None:
        """Stop: leave the retained status 'offline', disconnect cleanly, stop both threads.

        Nothing waiting is lost: undelivered sightings stay in the outbox for the next start.
        """
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._events.put(_STOP)
            self._sender.join(timeout)
        if self.connected:
            body = json.dumps({"device": self.device_id, "state": "offline", "reason": "stopped"})
            info = self._client.publish(self.status_topic, body, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish the offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
