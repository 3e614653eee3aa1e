"""The mapper end to end: a simulated world's sightings through a real mosquitto into the map.

30 cameras on a street grid, 40 rides by 12 bikes with 3-5 m GPS error and 5-10 degree
heading error, missed passes and false positives (tests/sim_world.py). Every sighting is
published as a bike would (QoS 1, its region topic) to a real broker; a MapSubscriber with
a shared subscription stores and fuses them. The printed figures are the issue's report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware.mqtt import MqttSettings, topic_for
from firmware.sighting import Sighting, to_json
from mapper.store import SqliteStore
from mapper.subscriber import MapSubscriber, SubscriberSettings
from tests.mqtt_broker import Broker, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures
from tests.sim_world import make_world, score


def publish_all(port: int, messages: list[tuple[str, bytes]], client_id: str = "sim-bikes") -> None:
    """Publish like the bikes do (QoS 1) and wait until the broker has acknowledged every one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def wait_until(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_mapper(port: int, store: SqliteStore, **kw: Any) -> MapSubscriber:
    sub = MapSubscriber(
        MqttSettings(host="127.0.0.1", port=port, client_id=kw.pop("client_id", "mapper-1")),
        store,
        SubscriberSettings(fuse_every_s=kw.pop("fuse_every_s", 0.5), **kw),
    )
    sub.start()
    assert sub.wait_subscribed(10), sub.last_error
    return sub


def messages(sightings: list[Sighting]) -> list[tuple[str, bytes]]:
    return [(topic_for(s), to_json(s)) for s in sightings]


def test_simulated_world_through_the_broker_beats_the_rider_position_baseline(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=0)
    store = SqliteStore(tmp_path / "map.db")
    # fusion once everything is in (on close), oldest first: the same result on any machine;
    # fusing in pieces as messages arrive is tested in test_mapper_fusion.py
    sub = start_mapper(broker.port, store, fuse_every_s=3600)
    try:
        publish_all(broker.port, messages(world.sightings))
        wait_until(lambda: sub.counters.received >= len(world.sightings))
    finally:
        sub.close()
    stats = store.stats()
    assert stats["sightings"] == len(world.sightings) and stats["pending"] == 0  # nothing lost
    result = score(world, store.entities())
    print(f"\n{len(world.sightings)} sightings, {world.km_ridden:.0f} km ridden, {stats['entities']} entities")
    print("\n".join(result.lines()))
    assert result.cameras_5plus >= 20
    assert result.median_m < 3.0, result.lines()
    assert result.median_m < result.baseline_median_m
    assert result.p90_m < result.baseline_p90_m
    assert result.duplicates <= 6, result.lines()
    assert result.found >= 25
    assert result.false_confident <= 10, result.lines()  # most false entities stay unconfirmed
    assert result.label_accuracy >= 0.9


def test_two_mappers_in_a_share_group_split_the_load_and_lose_nothing(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=1, n_cameras=10, n_rides=12)
    stores = [SqliteStore(tmp_path / f"map{i}.db") for i in range(2)]
    subs = [start_mapper(broker.port, st, client_id=f"mapper-{i}") for i, st in enumerate(stores)]
    try:
        publish_all(broker.port, messages(world.sightings))
        wait_until(lambda: sum(s.counters.received for s in subs) >= len(world.sightings))
        wait_until(lambda: all(s.idle() for s in subs))
    finally:
        for s in subs:
            s.close()
    counts = [st.stats()["sightings"] for st in stores]
    assert sum(counts) == len(world.sightings)  # each message to exactly one member of the group
    assert min(counts) > 0, counts  # and both got a share


def test_regions_take_only_their_cell_and_duplicates_are_ignored(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=2, n_cameras=8, n_rides=10)
    s0 = world.sightings[0]
    cell = topic_for(s0).split("/")[-2]  # the precision-5 cell of the first sighting
    inside = [s for s in world.sightings if topic_for(s).split("/")[-2] == cell]
    store = SqliteStore(tmp_path / "map.db")
    sub = start_mapper(broker.port, store, regions=(cell,), group=None)
    try:
        publish_all(broker.port, [*messages(world.sightings), *messages(inside[:3])])
        wait_until(lambda: sub.counters.received >= len(inside) + 3)
        time.sleep(0.3)  # anything else would have arrived by now
        wait_until(sub.idle)
    finally:
        sub.close()
    assert store.stats()["sightings"] == len(inside)
    assert sub.counters.duplicates == 3
    assert store.stats()["rejected:duplicate"] == 3


def test_a_restarted_mapper_gets_what_was_published_while_it_was_down(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=3, n_cameras=6, n_rides=8)
    half = len(world.sightings) // 2
    store = SqliteStore(tmp_path / "map.db")
    sub = start_mapper(broker.port, store, client_id="mapper-persistent", group=None)
    publish_all(broker.port, messages(world.sightings[:half]))
    wait_until(lambda: sub.counters.received >= half)
    sub.close()  # the session stays on the broker (session expiry), subscriptions too
    publish_all(broker.port, messages(world.sightings[half:]))  # queued by the broker for us
    sub = start_mapper(broker.port, store, client_id="mapper-persistent", group=None)
    try:
        wait_until(lambda: store.stats()["sightings"] == len(world.sightings))
        wait_until(sub.idle)
    finally:
        sub.close()
    assert store.stats()["pending"] == 0


def test_a_backlog_is_fused_a_step_at_a_time_until_none_is_left(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=5, n_cameras=6, n_rides=10)
    store = SqliteStore(tmp_path / "map.db")
    sub = start_mapper(broker.port, store, fuse_batch=7, fuse_every_s=0.1)
    try:
        publish_all(broker.port, messages(world.sightings))
        wait_until(lambda: sub.counters.received >= len(world.sightings))
        wait_until(sub.idle)
    finally:
        sub.close()
    assert sub.counters.fused == len(world.sightings) > 7 and store.stats()["pending"] == 0
