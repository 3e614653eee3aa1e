"""Mapper benchmark (run by hand, not a test): ingest rate through a broker, and fusion time vs size.

1. Ingest: N sightings of a simulated world (tests/sim_world.py) are published with QoS 1 to a
   local mosquitto while the mapper is away (its persistent session queues them), then the
   mapper (MapSubscriber: validate, SQLite, acknowledgements) is started pinned to one CPU
   core and timed until the store has them all: sightings per second from the broker into
   storage. Once with fusion deferred (ingest alone), once with fusion every 2 s as
   ``sousveil map run`` does.
2. Fusion: worlds of growing size at the same density (cameras per street, rides per camera)
   are stored and fused from scratch: seconds and microseconds per sighting for each size.
   Close to constant microseconds per sighting means fusion grows linearly.

    .venv/bin/python scripts/bench_mapper.py                   # 20 000 ingested; fusion up to ~141 000
    .venv/bin/python scripts/bench_mapper.py --ingest 5000 --sizes 1,3,6
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.local import LocalBroker, free_port  # noqa: E402
from firmware.mqtt import MqttSettings, topic_for  # noqa: E402
from firmware.sighting import Sighting, to_json  # noqa: E402
from mapper.fusion import Fusion  # noqa: E402
from mapper.store import SqliteStore  # noqa: E402
from mapper.subscriber import MapSubscriber, SubscriberSettings  # noqa: E402
from tests.sim_world import make_world  # noqa: E402

PER_SCALE2 = 570  # sightings per scale^2 at the least (measured: 2 280 at scale 2, 5 282 at 3, 141 331 at 15)


def world_of(scale: int, seed: int = 7) -> list[Sighting]:
    """A world ``scale`` times the test world's side: same density, about PER_SCALE2 * scale^2 sightings."""
    w = make_world(
        n_cameras=30 * scale * scale,
        n_rides=40 * scale * scale,
        n_devices=12 * scale,
        blocks=4 * scale,
        seed=seed,
        # four rides a day (sim_world), the last one yesterday: the mapper refuses the future
        start_utc=datetime.now(UTC) - timedelta(days=10 * scale * scale + 2),
    )
    out: list[Sighting] = w.sightings
    return out


def start_broker(directory: Path) -> LocalBroker:
    """A plain loopback mosquitto (the mapper is measured here, not TLS) on the second core."""
    port = free_port()
    conf = (
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 1000\nlog_type error\n"
    )
    broker = LocalBroker(directory, conf, port)
    broker.start()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(broker.pid, {1})  # the broker on the second core, the mapper on the first
    return broker


def publish(port: int, sightings: list[Sighting]) -> float:
    """Publish every sighting (QoS 1) and wait for all acknowledgements; seconds taken."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bikes", protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    infos = [c.publish(topic_for(s), to_json(s), qos=1) for s in sightings]
    for info in infos:
        info.wait_for_publish(60)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return took


def register_session(port: int, client_id: str) -> None:
    """Subscribe once with a persistent session, so the broker queues what comes next for us."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe("sousveil/v1/sightings/#", qos=1)  # plain: mosquitto queues no shared messages for the offline
    done.wait(5)
    c.disconnect()
    c.loop_stop()


def ingest(port: int, directory: Path, sightings: list[Sighting], fuse_every_s: float, name: str) -> dict[str, float]:
    client_id = f"bench-mapper-{name}"
    register_session(port, client_id)
    publish_s = publish(port, sightings)
    store = SqliteStore(directory / f"ingest-{name}.db")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core for the mapper (paho thread + ingest thread)
    sub = MapSubscriber(
        MqttSettings(host="127.0.0.1", port=port, client_id=client_id),
        store,
        SubscriberSettings(fuse_every_s=fuse_every_s, group=None),
    )
    t0 = time.perf_counter()
    sub.start()
    done, last, last_change = 0, -1, time.monotonic()
    while done < len(sightings) and time.monotonic() - last_change < 30:
        time.sleep(0.01)
        done = sub.counters.stored + sub.counters.duplicates + sub.counters.rejected
        if done != last:
            last, last_change = done, time.monotonic()
    took = time.perf_counter() - t0
    if done < len(sightings):
        print(f"only {done} of {len(sightings)} sightings arrived", file=sys.stderr)
    sub.close()
    pending = store.stats()["pending"]
    store.close()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {"n": len(sightings), "s": took, "per_s": len(sightings) / took, "publish_s": publish_s, "pending": pending}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ingest", type=int, default=20_000, help="sightings to ingest through the broker")
    p.add_argument("--sizes", default="2,5,9,15", help="world scales for fusion (15: about 141 000 sightings)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sousveil-bench-map-") as tmp:
        root = Path(tmp)
        scale = max(1, math.ceil((args.ingest / PER_SCALE2) ** 0.5))  # a world with at least --ingest
        t0 = time.perf_counter()
        pool = world_of(scale, seed=11)
        print(f"world for ingest: {len(pool)} sightings in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        batch = pool[: args.ingest]
        broker = start_broker(root)
        try:
            alone = ingest(broker.port, root, batch, fuse_every_s=1e9, name="alone")
            fused = ingest(broker.port, root, batch, fuse_every_s=2.0, name="fused")
        finally:
            broker.stop()
        print(f"ingest through mosquitto into SQLite, mapper on one core ({os.cpu_count()} cores here):")
        for label, r in (("validate + store, fusion deferred", alone), ("validate + store + fusion every 2 s", fused)):
            print(f"  {label}: {r['n']:.0f} sightings in {r['s']:.2f} s = {r['per_s']:.0f} sightings/s")
        print(f"  (publishing them took {alone['publish_s']:.1f} s; not part of the figures)")
        print("fusion from scratch, same density, growing area:")
        print(f"  {'sightings':>10} {'entities':>9} {'seconds':>8} {'us/sighting':>12}")
        for k in (int(x) for x in args.sizes.split(",")):
            sightings = world_of(k)
            store = SqliteStore(root / f"fuse-{k}.db")
            store.add_sightings(sightings)
            t0 = time.perf_counter()
            Fusion(store).run()
            took = time.perf_counter() - t0
            n_ent = store.stats()["entities"]
            store.close()
            print(f"  {len(sightings):>10} {n_ent:>9} {took:>8.1f} {took / len(sightings) * 1e6:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
