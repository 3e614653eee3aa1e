"""Reliability end to end: the device process killed mid-publish, the broker killed mid-stream: nothing lost.

A real mosquitto on loopback with persistence, a real Outbox + MqttPublisher + MqttSink (wired the way
firmware/replay_cli.py ``_mqtt_sink`` does), and a subscriber with a persistent QoS 1 session that
existed before anything was published, so it misses nothing and de-duplicates by sighting id
(QoS 1 is at least once: repeats are allowed and counted, losses are not).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.mqtt import MqttPublisher, MqttSettings
from firmware.outbox import Outbox, OutboxStats
from firmware.sighting import Sighting, to_json
from firmware.sinks import MqttSink
from tests.mqtt_broker import Broker, broker_factory_fixture  # noqa: F401 - fixture
from tests.test_mqtt import sighting as mqtt_sighting

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "3f9a1c0e5b7d2468"
CLIENT_ID = f"sousveil-{DEVICE}"  # what _mqtt_sink picks: one stable session per device
ALL = "sousveil/v1/sightings/#"
T0 = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
SCHEMA_DOC = json.loads((ROOT / "firmware" / "sighting.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA_DOC, format_checker=Draft202012Validator.FORMAT_CHECKER)
N = 300  # enough that a kill after the first tenth lands mid-stream


def sighting(i: int) -> Sighting:
    return mqtt_sighting(i, lon_step=1e-3)  # spread over several region topics


def persistent_broker(broker_factory: Any) -> Broker:
    """A mosquitto (not started) that keeps sessions and queued messages across restarts.

    ``autosave_on_changes`` with interval 1 writes the database after every change, so a SIGKILL
    loses at most the change being made; no limit on the queue of an offline subscriber.
    """
    b: Broker = broker_factory(start=False)
    conf = b.conf.read_text(encoding="utf-8")
    assert "persistence false\n" in conf
    persistence = (
        f"persistence true\npersistence_location {b.dir}/\nautosave_interval 1\nautosave_on_changes true\n"
        "max_queued_messages 0\n"
    )
    b.conf.write_text(conf.replace("persistence false\n", persistence), encoding="utf-8")
    return b


def stop_cleanly(b: Broker) -> None:
    """SIGTERM: mosquitto writes its database and exits (the sessions survive)."""
    assert b.proc is not None
    b.proc.terminate()
    b.proc.wait(5)
    b.proc = None
    assert (b.dir / "mosquitto.db").exists(), "mosquitto wrote no persistence database"


def outbox_stats(path: Path) -> OutboxStats:
    with Outbox(path) as box:
        return box.stats()


def strict_json(raw: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=reject)


class SessionSubscriber:
    """A QoS 1 subscriber with a persistent session (expiry 1 h): it gets what was published while it
    was away, as a map backend does. Records every copy; ``unique`` is what a de-duplicating backend keeps."""

    def __init__(self, port: int, client_id: str) -> None:
        self.copies: list[tuple[str, bytes]] = []  # (sighting id, payload) of every message, repeats included
        self.unique: dict[str, bytes] = {}
        self.sessions_present: list[bool] = []  # one per CONNACK
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        # clean_start=False from the first connect (a fresh client id has no session to resume): mosquitto
        # 2.0 writes a v5 session to its database only when it was opened without clean start
        self.client.connect("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        with self._cond:
            self.sessions_present.append(bool(flags.session_present))
        if not flags.session_present:  # only the first time: the broker keeps the subscription after that
            client.subscribe(ALL, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        sid = str(json.loads(msg.payload)["id"])
        with self._cond:
            self.copies.append((sid, bytes(msg.payload)))
            self.unique.setdefault(sid, bytes(msg.payload))
            self._cond.notify_all()

    def seen(self) -> int:
        with self._cond:
            return len(self.unique)

    def wait_seen(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.unique) >= count, timeout)

    def snapshot(self) -> tuple[list[tuple[str, bytes]], dict[str, bytes]]:
        with self._cond:
            return list(self.copies), dict(self.unique)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_delivery(sub: SessionSubscriber, sent: list[Sighting]) -> int:
    """Every sighting arrived, each exactly once after de-duplication, schema-valid and byte for byte
    what the device sent; repeats (allowed by QoS 1) carry the same bytes. Returns the number of repeats."""
    expected = {s.id: to_json(s) for s in sent}
    copies, unique = sub.snapshot()
    assert len(unique) == len(sent), f"{len(sent) - len(set(expected) & set(unique))} sightings missing"
    assert set(unique) == set(expected)
    for sid, payload in copies:
        assert payload == expected[sid], f"sighting {sid}: a copy differs from what the device sent"
    for payload in unique.values():
        errors = [e.message for e in VALIDATOR.iter_errors(strict_json(payload))]
        assert not errors, errors
    return len(copies) - len(unique)


# The device side, as its own process: the real Outbox, MqttPublisher and MqttSink.
#   queue:  start the publisher (the broker is down), submit every sighting in the file, say
#           "queued <depth>", then keep publishing in the background until killed
#   resume: start on the same outbox and client id, flush, say "flushed <depth>", close
CHILD = """
import logging, sys, time
from pathlib import Path
from firmware.mqtt import MqttPublisher, MqttSettings
from firmware.outbox import Outbox
from firmware.sighting import from_json
from firmware.sinks import MqttSink

mode, port, db, device, client_id = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
logging.basicConfig(level=logging.INFO, format="%(asctime)s " + mode + " %(levelname)s %(name)s: %(message)s")
settings = MqttSettings(host="127.0.0.1", port=port, client_id=client_id, keepalive_s=2,
                        reconnect_min_s=1, reconnect_max_s=1)
outbox = Outbox(db)
publisher = MqttPublisher(settings, outbox, device)
publisher.start()
sink = MqttSink(publisher)
if mode == "queue":
    for line in Path(sys.argv[6]).read_bytes().splitlines():
        assert sink.submit(from_json(line))
    print("queued", outbox.stats().depth, flush=True)
    while True:
        time.sleep(60)
else:
    done = sink.flush(20.0)
    print("flushed", outbox.stats().depth, flush=True)
    sink.close()
    sys.exit(0 if done else 1)
"""


def child(mode: str, port: int, db: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, str(port), str(db), DEVICE, CLIENT_ID, *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def read_line(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise AssertionError(f"device process said nothing within {timeout} s; its log:\n{log.read_text()}")
    return line


@dataclass
class KillRun:
    seen_at_kill: int  # sightings the subscriber had when the device process was killed
    waiting_after_kill: int  # outbox rows after the kill (> 0: it died mid-publish)
    inflight_after_kill: int  # of those, published and not yet acknowledged when it died
    duplicates: int
    seconds: float


def device_killed_mid_publish(broker_factory: Any, workdir: Path, n: int) -> KillRun | None:
    """One run of the scenario; None when the kill came too late to be mid-publish (the caller retries)."""
    start = time.monotonic()
    workdir.mkdir()
    db, log = workdir / "outbox.db", workdir / "device.log"
    sent = [sighting(i) for i in range(n)]
    batch = workdir / "sightings.jsonl"
    batch.write_bytes(b"".join(to_json(s) + b"\n" for s in sent))

    broker = persistent_broker(broker_factory)
    broker.start()
    sub = SessionSubscriber(broker.port, f"backend-{workdir.name}")  # its session exists before any publish
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stop_cleanly(broker)  # the broker is down, the subscriber's session is on its disk

        device = child("queue", broker.port, db, log, str(batch))
        procs.append(device)
        assert read_line(device, 30, log) == f"queued {n}"
        stats = outbox_stats(db)
        assert (stats.depth, stats.inflight) == (n, 0), "with the broker down everything waits in the outbox"
        assert sub.seen() == 0

        broker.start()  # the device connects on its next retry (1 s) and drains the outbox
        if not sub.wait_seen(max(1, n // 10), 15):
            raise AssertionError(f"the subscriber got {sub.seen()} of {n}; device log:\n{log.read_text()}")
        seen_at_kill = sub.seen()
        device.send_signal(signal.SIGKILL)  # mid-publish: no clean shutdown, no DISCONNECT
        device.wait(5)
        after = outbox_stats(db)
        if after.depth == 0 or seen_at_kill >= n:
            return None  # it had finished already: not the test we want
        assert 0 < seen_at_kill < n
        assert after.depth < n, "the broker acknowledged nothing before the kill"

        resumed = child("resume", broker.port, db, log)  # the same outbox file, the same client id
        procs.append(resumed)
        assert read_line(resumed, 30, log) == "flushed 0"
        assert resumed.wait(10) == 0
        if not sub.wait_seen(n, 10):
            raise AssertionError(f"the subscriber got {sub.seen()} of {n}; device log:\n{log.read_text()}")
        assert outbox_stats(db).depth == 0
        assert all(sub.sessions_present[1:]), sub.sessions_present  # its session survived the broker restart
        duplicates = check_delivery(sub, sent)
        return KillRun(seen_at_kill, after.depth, after.inflight, duplicates, time.monotonic() - start)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sub.close()
        broker.kill()


@pytest.mark.slow
def test_device_killed_mid_publish_then_restarted_delivers_every_sighting_once(
    broker_factory: Any, tmp_path: Path
) -> None:
    n, run = N, None
    for attempt in range(3):  # the kill has to land mid-publish; a run where it came too late is repeated
        run = device_killed_mid_publish(broker_factory, tmp_path / f"run{attempt}", n)
        if run is not None:
            break
        n *= 2
    assert run is not None, "the device process finished publishing before every kill"
    print(f"[device SIGKILL] N={n} {run}")  # shown with -s or -rP


@pytest.mark.slow
def test_broker_killed_mid_stream_with_persistence_loses_nothing(broker_factory: Any, tmp_path: Path) -> None:
    start = time.monotonic()
    broker = persistent_broker(broker_factory)
    broker.start()
    sub = SessionSubscriber(broker.port, "backend-broker-kill")
    sent = [sighting(i) for i in range(N)]
    with Outbox(tmp_path / "outbox.db") as box:
        settings = MqttSettings(
            host="127.0.0.1", port=broker.port, client_id=CLIENT_ID, keepalive_s=2, reconnect_min_s=1, reconnect_max_s=1
        )
        pub = MqttPublisher(settings, box, DEVICE)
        sink = MqttSink(pub)
        try:
            for s in sent:  # a backlog, as after a ride out of coverage
                assert sink.submit(s)
            assert box.stats().depth == N
            pub.start()
            assert sub.wait_seen(N // 10, 15), f"the subscriber got {sub.seen()} of {N}"
            seen_at_kill = sub.seen()
            broker.kill()  # SIGKILL mid-stream
            waiting = box.stats().depth
            assert 0 < seen_at_kill < N and waiting > 0, (seen_at_kill, waiting)
            broker.start()  # the same port, the same database
            assert pub.flush(20.0), f"{box.stats().depth} sightings still waiting"
            assert sub.wait_seen(N, 10), f"the subscriber got {sub.seen()} of {N}: lost across the broker restart"
            assert pub.state().connects >= 2
            assert len(sub.sessions_present) >= 2 and all(sub.sessions_present[1:]), sub.sessions_present
            duplicates = check_delivery(sub, sent)
            assert box.stats().depth == 0
        finally:
            pub.close()
            sub.close()
    print(
        f"[broker SIGKILL] N={N} seen_at_kill={seen_at_kill} waiting_after_kill={waiting}"
        f" duplicates={duplicates} seconds={time.monotonic() - start:.1f}"
    )
