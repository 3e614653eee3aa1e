"""Load benchmark of the map broker (run by hand, not a test): hundreds of devices through TLS.

Starts mosquitto with the shipped deploy/broker/mosquitto.conf in a temp folder, TLS from
make-ca.sh, one account per device made by broker/accounts.py, and a reader. Each simulated
device is a paho MQTT v5 client with the device's settings (QoS 1, clean_start false, session
expiry, at most 20 in flight) publishing valid sightings (firmware.sighting + to_json) on its
region topic, one every few seconds (exponential gaps), and now and then dropping off-line and
sending a burst of 20-50 queued sightings when it is back, as the outbox does after a tunnel.

The receiving side is ``Receipts``: ``on_sighting(sighting_id, recv_time)`` per message. The
plain ``PahoReceiver`` feeds it from a shared subscription; with ``--mapper``, ``MapperReceiver``
runs the real MapSubscriber and feeds it the ids of each batch the store committed. Send times
stay in the senders' side table (keyed by sighting id), never in the payload. Reports
messages/s, end-to-end latency percentiles (publish call to receipt, same host clock), lost
and duplicate counts, and the broker's peak resident memory (VmRSS)::

    .venv/bin/python scripts/bench_broker.py --devices 300 --duration 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.accounts import BrokerAccounts
from broker.local import LocalBroker, make_tls
from firmware.mqtt import DEFAULT_PREFIX, MqttSettings, topic_for
from firmware.sighting import (
    Estimate,
    ModelRef,
    Position,
    Ray,
    Sighting,
    new_id,
    suggested_tags,
    to_json,
)

PREFIX = DEFAULT_PREFIX
SHARED = f"$share/bench/{PREFIX}/sightings/#"
MAX_INFLIGHT = MqttSettings.max_inflight  # the device's default window


# ---- the receiving side ----------------------------------------------------------------------------


class Receipts:
    """Counts what arrived, per sighting id; thread-safe (the receivers' threads call ``on_sighting``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first: dict[str, float] = {}  # sighting id -> first receipt time (time.time())
        self.duplicates = 0

    def on_sighting(self, sighting_id: str, recv_time: float) -> None:
        with self._lock:
            if sighting_id in self.first:
                self.duplicates += 1
            else:
                self.first[sighting_id] = recv_time

    def count(self) -> int:
        with self._lock:
            return len(self.first)


class PahoReceiver:
    """A reader in the shared subscription ``$share/bench/...``: takes each sighting's id out of its JSON."""

    def __init__(self, index: int, port: int, ca_file: Path, password: str, receipts: Receipts) -> None:
        self.receipts = receipts
        self.subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-map-{index}", protocol=MQTTProtocolVersion.MQTTv5
        )
        c.username_pw_set("bench-map", password)
        c.tls_set(ca_certs=str(ca_file))
        c.on_connect = lambda client, *a: client.subscribe(SHARED, qos=1)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        c.max_inflight_messages_set(100)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        self.receipts.on_sighting(str(json.loads(msg.payload)["id"]), now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MapperReceiver:
    """A member of the mapper's share group: the real MapSubscriber with its own SQLite store in the
    temp folder; a sighting counts as received once the store has committed it."""

    def __init__(self, index: int, port: int, ca_file: Path, password: str, receipts: Receipts, root: Path) -> None:
        from mapper.store import SqliteStore
        from mapper.subscriber import MapSubscriber, SubscriberSettings

        pw = root / f"mapper-{index}.pass"
        pw.write_text(password + "\n", encoding="utf-8")
        settings = MqttSettings(
            host="127.0.0.1",
            port=port,
            client_id=f"bench-mapper-{index}",
            username="bench-map",
            password_file=pw,
            ca_file=ca_file,
        )
        self.store = SqliteStore(root / f"map-{index}.db")

        def stored(ids: Sequence[str]) -> None:
            now = time.time()
            for sighting_id in ids:
                receipts.on_sighting(sighting_id, now)

        self.sub = MapSubscriber(settings, self.store, SubscriberSettings(group="bench"), on_stored=stored)
        self.sub.start()
        self.subscribed = threading.Event()
        if self.sub.wait_subscribed(10):
            self.subscribed.set()

    def close(self) -> None:
        self.sub.close()
        c = self.sub.counters
        print(
            f"mapper: received {c.received}, stored {c.stored}, duplicates {c.duplicates}, rejected {c.rejected},"
            f" fused {c.fused}; {self.store.stats()}",
            file=sys.stderr,
        )
        self.store.close()


# ---- the devices -------------------------------------------------------------------------------


def make_sighting(rng: random.Random, device: str, home: tuple[float, float]) -> Sighting:
    t = datetime.now(UTC)
    lat, lon = home[0] + rng.uniform(-0.02, 0.02), home[1] + rng.uniform(-0.03, 0.03)
    rays = tuple(
        Ray(t, lat + k * 2e-5, lon, 4.0, rng.uniform(0, 360), 5.0) for k in range(rng.randint(3, 8))
    )  # a few frames of one pass
    label = rng.choice(("fixed", "dome", "ptz", "alpr"))
    return Sighting(
        id=new_id(),
        device=device,
        first_seen_utc=t,
        last_seen_utc=t,
        label=label,
        score=round(rng.uniform(0.4, 0.95), 3),
        frames=len(rays),
        observer=Position(lat, lon, 4.0),
        rays=rays,
        estimate=Estimate(lat + 1e-4, lon + 1e-4, 6.0),
        tags=suggested_tags(label),
        model=ModelRef("sousveil-cams", "0.1.0", "ab" * 32),
    )


@dataclass
class Device:
    """One simulated device: a paho client and its publish schedule."""

    device_id: str
    password: str
    home: tuple[float, float]
    rng: random.Random
    client: mqtt.Client | None = None
    sent: dict[str, float] = field(default_factory=dict)  # sighting id -> publish time: the side table
    acked: int = 0
    rejected: int = 0
    inflight: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)


def _connect(d: Device, port: int, ca_file: str) -> None:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sousveil-{d.device_id}", protocol=MQTTProtocolVersion.MQTTv5
    )
    c.username_pw_set(d.device_id, d.password)
    c.tls_set(ca_certs=ca_file)
    c.max_inflight_messages_set(MAX_INFLIGHT)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            d.connected.set()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with d.cond:
            d.inflight -= 1
            if reason.is_failure:
                d.rejected += 1
            else:
                d.acked += 1
            d.cond.notify_all()

    c.on_connect = on_connect
    c.on_publish = on_publish
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect_async("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
    c.loop_start()
    d.client = c


def _publish(d: Device) -> None:
    assert d.client is not None
    s = make_sighting(d.rng, d.device_id, d.home)
    with d.cond:  # the device's window: at most MAX_INFLIGHT unacknowledged
        d.cond.wait_for(lambda: d.inflight < MAX_INFLIGHT, 30)
        d.inflight += 1
    d.sent[s.id] = time.time()
    d.client.publish(topic_for(s, PREFIX), to_json(s), qos=1)


def _drive(d: Device, port: int, ca_file: str, stop_at: float, mean_gap_s: float, p_offline: float) -> None:
    """One device's ride: a sighting every few seconds; sometimes off-line, then a burst of 20-50."""
    d.connected.wait(60)
    while True:
        now = time.monotonic()
        if now >= stop_at:
            return
        time.sleep(min(d.rng.expovariate(1.0 / mean_gap_s), stop_at - now))
        if time.monotonic() >= stop_at:
            return
        if d.rng.random() < p_offline:  # a tunnel: drop the connection, come back with the outbox's backlog
            assert d.client is not None
            with d.cond:
                d.cond.wait_for(lambda: d.inflight == 0, 30)
            d.connected.clear()
            d.client.disconnect()
            d.client.loop_stop()
            time.sleep(d.rng.uniform(1.0, 5.0))
            _connect(d, port, ca_file)
            d.connected.wait(60)
            for _ in range(d.rng.randint(20, 50)):
                _publish(d)
        else:
            _publish(d)


def _settle(d: Device, timeout: float = 30.0) -> None:
    """Wait until every publish of ``d`` is acknowledged."""
    with d.cond:
        d.cond.wait_for(lambda: d.inflight == 0, timeout)


def worker(args: tuple[list[tuple[str, str]], int, str, float, float, float, int, Any]) -> None:
    accounts, port, ca_file, duration, mean_gap_s, p_offline, seed, results = args
    rng = random.Random(seed)
    devices = [
        Device(i, pw, (52.52 + rng.uniform(-1, 1), 13.405 + rng.uniform(-1.5, 1.5)), random.Random(rng.random()))
        for i, pw in accounts
    ]
    for d in devices:
        _connect(d, port, ca_file)
        time.sleep(0.01)  # a ramp, not a thundering herd of TLS handshakes
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(target=_drive, args=(d, port, ca_file, stop_at, mean_gap_s, p_offline), daemon=True)
        for d in devices
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in devices:  # flush: every QoS 1 publish acknowledged
        _settle(d)
        assert d.client is not None
        d.client.disconnect()
        d.client.loop_stop()
    sent: dict[str, float] = {}
    for d in devices:
        sent.update(d.sent)
    results.put((sent, sum(d.acked for d in devices), sum(d.rejected for d in devices)))


# ---- the run -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=300, help="simulated devices, each with its own account (300)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (60)")
    p.add_argument("--gap", type=float, default=5.0, help="mean seconds between one device's sightings (5)")
    p.add_argument("--offline", type=float, default=0.03, help="chance per sighting of a reconnect burst (0.03)")
    p.add_argument("--processes", type=int, default=max(1, min(8, os.cpu_count() or 1)), help="sender processes")
    p.add_argument("--readers", type=int, default=1, help="members of the shared subscription (1)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument(
        "--broker-conf",
        action="append",
        default=[],
        metavar="LINE",
        help="a mosquitto setting appended to the shipped config, e.g. 'max_queued_messages 100000'",
    )
    p.add_argument(
        "--mapper",
        action="store_true",
        help="receive with the real mapper (validate, SQLite, fusion; receipt = stored) instead of a plain reader",
    )
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sousveil-bench-") as tmp:
        root = Path(tmp)
        ca_file = make_tls(root / "tls")
        accounts = BrokerAccounts(root)
        creds: list[tuple[str, str]] = []
        t0 = time.monotonic()
        for i in range(args.devices):
            e = accounts.add_device(f"bike-{i:04d}", root / "enrol")
            creds.append((e.account.username, e.password_file.read_text().strip()))
        reader_pw = accounts.add_reader("bench-map", root / "enrol").password_file.read_text().strip()
        print(f"enrolled {args.devices} devices in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        broker = LocalBroker.shipped(root, extra="".join(f"\n{line}" for line in args.broker_conf) + "\n")
        broker.start()
        peak = [broker.rss_kib()]
        idle_rss = peak[0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                peak[0] = max(peak[0], broker.rss_kib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        receipts = Receipts()
        readers: list[Any] = (
            [MapperReceiver(i, broker.port, ca_file, reader_pw, receipts, root) for i in range(args.readers)]
            if args.mapper
            else [PahoReceiver(i, broker.port, ca_file, reader_pw, receipts) for i in range(args.readers)]
        )
        for r in readers:
            r.subscribed.wait(10)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        chunks = [creds[i :: args.processes] for i in range(args.processes)]
        procs = [
            ctx.Process(
                target=worker,
                args=((c, broker.port, str(ca_file), args.duration, args.gap, args.offline, i, results),),
            )
            for i, c in enumerate(chunks)
            if c
        ]
        started = time.time()
        for proc in procs:
            proc.start()
        sent: dict[str, float] = {}
        acked = rejected = 0
        for _ in procs:
            s, a, r = results.get(timeout=args.duration + 300)
            sent.update(s)
            acked += a
            rejected += r
        for proc in procs:
            proc.join(30)
        last_change, last_count = time.monotonic(), -1
        while receipts.count() < len(sent) and time.monotonic() - last_change < 10:
            if receipts.count() != last_count:
                last_change, last_count = time.monotonic(), receipts.count()
            time.sleep(0.1)
        connected_rss = broker.rss_kib()
        sampling.set()
        sampler.join()
        for r in readers:
            r.close()
        alive = broker.alive()
        broker.stop()

    got = receipts.first
    latencies = sorted((got[i] - t) * 1000.0 for i, t in sent.items() if i in got)
    lost = sum(1 for i in sent if i not in got)
    end = max(got.values(), default=started)
    out = {
        "devices": args.devices,
        "duration_s": args.duration,
        "sent": len(sent),
        "acked": acked,
        "rejected": rejected,
        "received": len(got),
        "duplicates": receipts.duplicates,
        "lost": lost,
        "unexpected": sum(1 for i in got if i not in sent),
        "msgs_per_s": round(len(got) / max(1e-9, end - started), 1),
        "latency_ms": {q: round(percentile(latencies, v), 2) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        | {"max": round(latencies[-1], 2) if latencies else float("nan")},
        "broker_rss_kib": {"idle": idle_rss, "peak": peak[0], "end": connected_rss},
        "broker_alive": alive,
    }
    lat = out["latency_ms"]
    rss = out["broker_rss_kib"]
    print(
        f"{args.devices} devices, {args.duration:g} s: sent {len(sent)}, acked {acked}, rejected {rejected},"
        f" received {len(got)}, lost {lost}, duplicates {receipts.duplicates}\n"
        f"throughput {out['msgs_per_s']} msg/s; latency p50 {lat['p50']} ms, p90 {lat['p90']} ms,"
        f" p99 {lat['p99']} ms, max {lat['max']} ms\n"
        f"broker RSS: idle {rss['idle'] / 1024:.1f} MiB, peak {rss['peak'] / 1024:.1f} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if lost == 0 and rejected == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
