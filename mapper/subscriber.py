"""The mapper's MQTT side: subscribe to sightings, validate, store, acknowledge, fuse.

paho-mqtt 2.x, MQTT v5, QoS 1. Nothing is lost between the broker and the store:

- the session is persistent (clean start off, a session expiry), so the broker queues
  sightings while the mapper is down;
- acknowledgements are manual: a PUBACK goes back only after the message's batch is
  committed to SQLite (or the message was refused and counted), so a crash before the
  commit makes the broker deliver it again; the store ignores ids it has;
- Receive Maximum caps the unacknowledged messages the broker sends, so a slow disk slows
  the broker down instead of filling memory.

With a share group (default ``sousveil-mapper``) the subscriptions are MQTT v5 shared
subscriptions, ``$share/<group>/<filter>``: every mapper process in the group gets a part of
the messages, so several processes (or hosts writing to one PostGIS) split a busy broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware import geohash
from firmware.mqtt import MqttSettings, configure_auth
from mapper import DEFAULT_GROUP
from mapper.fusion import Fusion
from mapper.store import Store, StoreError
from mapper.validate import Checked, Rejected, RejectLog, check_message

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed write to the store


@dataclass(frozen=True)
class SubscriberSettings:
    """What to take from the broker and how fast to work it.

    ``regions`` are geohash cells (any precision, e.g. ``u33d`` for a city); empty takes
    every region. ``group`` names the share group; None subscribes plainly (every mapper
    gets every message). ``receive_maximum`` caps unacknowledged messages in flight to us.
    """

    regions: tuple[str, ...] = ()
    group: str | None = DEFAULT_GROUP
    receive_maximum: int = 1000
    batch: int = 500
    fuse_every_s: float = 2.0
    fuse_batch: int = 5_000

    def __post_init__(self) -> None:
        for cell in self.regions:
            geohash.bounds(cell)  # ValueError naming a bad cell
        if self.group is not None and (not self.group or any(c in self.group for c in "/+#")):
            raise ValueError(f"share group {self.group!r} must be a non-empty name without '/', '+' or '#'")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be 1..65535, got {self.receive_maximum}")

    def filters(self, prefix: str) -> list[str]:
        """The topic filters to subscribe to, shared when there is a group."""
        plain = [geohash.region_filter(prefix, c) for c in self.regions] or [f"{prefix}/sightings/#"]
        return [f"$share/{self.group}/{f}" if self.group else f for f in plain]


@dataclass
class _Batch:
    """Messages taken from the queue, checked once; kept until the store has them."""

    messages: list[mqtt.MQTTMessage]
    good: list[Checked]
    refused: Counter[str]


@dataclass
class Counters:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    fused: int = 0


class MapSubscriber:
    """Runs the paho client and one ingest thread; :meth:`close` drains, fuses and stops.

    ``mqtt_settings.client_id`` is required: the broker keeps this mapper's session under it.
    ``on_stored`` gets the sighting ids of each committed batch (on the ingest thread).
    """

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        store: Store,
        settings: SubscriberSettings = SubscriberSettings(),
        on_stored: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        if not mqtt_settings.client_id:
            raise ValueError("the mapper needs a client id: the broker keeps its session under it")
        self.mqtt = mqtt_settings
        self.store = store
        self.settings = settings
        self.fusion = Fusion(store)
        self.counters = Counters()
        self.rejects = RejectLog()
        self._on_stored = on_stored
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mapper-ingest", daemon=True)
        self.last_error: str | None = None
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=mqtt_settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        configure_auth(self._client, mqtt_settings)
        self._client.reconnect_delay_set(mqtt_settings.reconnect_min_s, mqtt_settings.reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- paho's thread ------------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Properties | None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker {self.mqtt.host}:{self.mqtt.port} refused the connection: {reason}"
            log.error("%s", self.last_error)
            return
        self.last_error = None
        opts = SubscribeOptions(qos=1)
        filters = self.settings.filters(self.mqtt.topic_prefix)
        client.subscribe([(f, opts) for f in filters])
        log.info("connected to %s:%d, subscribing to %s", self.mqtt.host, self.mqtt.port, ", ".join(filters))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.last_error = f"the broker refused the subscription: {', '.join(refused)} (check the account's ACL)"
            log.error("%s", self.last_error)
        else:
            self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning(
                "disconnected from %s:%d: %s; the broker keeps our session", self.mqtt.host, self.mqtt.port, reason
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(msg)

    # -- the ingest thread ------------------------------------------------------------------------

    def _work(self) -> None:
        last_fuse = time.monotonic()
        retry: _Batch | None = None
        while True:
            batch = retry or self._checked(self._take())
            retry = None
            if batch.messages:
                try:
                    self._store(batch)
                except StoreError as err:
                    # a full disk, a locked or broken file: nothing is acknowledged, so nothing is
                    # lost; the broker holds back (Receive Maximum) while we try again
                    self.last_error = str(err)
                    n = len(batch.messages)
                    log.error("%s; %d messages wait unacknowledged, trying again in %.0f s", err, n, RETRY_S)
                    retry = batch
                    if self._stop.wait(RETRY_S):
                        return
                    continue
            now = time.monotonic()
            more = False
            if now - last_fuse >= self.settings.fuse_every_s or (self._stop.is_set() and not batch.messages):
                # one step at a time: a backlog is fused between batches, not while they wait
                more = self._fuse() >= self.settings.fuse_batch
                if not more:
                    last_fuse = now
            if self._stop.is_set() and not batch.messages and self._queue.empty() and not more:
                return

    def _take(self) -> list[mqtt.MQTTMessage]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.settings.batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _checked(self, messages: list[mqtt.MQTTMessage]) -> _Batch:
        good: list[Checked] = []
        refused: Counter[str] = Counter()
        for msg in messages:
            result = check_message(msg.topic, bytes(msg.payload), self.mqtt.topic_prefix)
            if isinstance(result, Rejected):
                self.rejects.add(result, msg.topic)
                refused[result.reason] += 1
            else:
                good.append(result)
        return _Batch(messages, good, refused)

    def _store(self, batch: _Batch) -> None:
        # one transaction: the new sightings, the refusals and the duplicates (a failed one is
        # tried again whole, so nothing is counted twice)
        new = self.store.add_checked(batch.good, refused=batch.refused)
        stored = [c.obj["id"] for c, is_new in zip(batch.good, new, strict=True) if is_new]
        dups = len(batch.good) - len(stored)
        for msg in batch.messages:  # committed (or refused): now the broker may forget them
            if msg.qos > 0:
                self._client.ack(msg.mid, msg.qos)
        c = self.counters
        c.received += len(batch.messages)
        c.stored += len(stored)
        c.duplicates += dups
        c.rejected += len(batch.messages) - len(batch.good)
        self.last_error = None
        if stored and self._on_stored is not None:
            self._on_stored(stored)

    def _fuse(self) -> int:
        """One fusion step; the number of sightings it fused (0 when it failed)."""
        try:
            n = self.fusion.step(self.settings.fuse_batch)
        except StoreError as err:  # a full disk: the sightings stay pending and are tried again
            log.error("fusion could not be written: %s; the sightings stay pending", err)
            return 0
        except Exception:  # a bug in fusion must not stop ingest: sightings stay pending
            log.exception("fusion failed; the sightings stay pending and are tried again")
            return 0
        self.counters.fused += n
        return n

    # -- the API ----------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.mqtt.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self._worker.start()
        self._client.connect_async(
            self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    def idle(self) -> bool:
        """Nothing queued and nothing pending fusion (for tests and the benchmark)."""
        return self._queue.empty() and self.store.stats()["pending"] == 0

    def close(self) -> None:
        """Disconnect (the session stays on the broker), then store and fuse what had come.

        Messages stored after the disconnect could not be acknowledged: the broker sends them
        again next time and the store ignores them as duplicates.
        """
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._worker.join()
