"""The mapper behind the shipped map broker: it receives nothing the ACL refused, and refuses the
rest of the abuse itself; neither the broker nor the mapper stops."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.mqtt import MqttSettings, topic_for
from firmware.sighting import MAX_MESSAGE_BYTES, Estimate, Position, Ray, Sighting, to_json
from mapper.store import SqliteStore
from mapper.subscriber import MapSubscriber, SubscriberSettings
from tests.mqtt_broker import MapBroker, map_broker_factory_fixture  # noqa: F401 - fixtures
from tests.test_mapper_sim import wait_until
from tests.test_mqtt import sighting

NOT_AUTHORIZED = 0x87


def fresh(device: str, i: int) -> Sighting:
    """A valid sighting of ``device`` seen minutes ago (the mapper refuses the far past and future)."""
    t = datetime.now(UTC) - timedelta(minutes=10) + timedelta(seconds=i)
    base = sighting(i)
    rays = tuple(Ray(t, r.lat_deg, r.lon_deg, r.acc_m, r.bearing_deg, r.sigma_deg) for r in base.rays)
    return dataclasses.replace(base, device=device, first_seen_utc=t, last_seen_utc=t, rays=rays)


def mapper_for(mb: MapBroker, tmp_path: Path, password: str) -> tuple[MapSubscriber, SqliteStore]:
    pw = tmp_path / "mapper.pass"
    pw.write_text(password + "\n", encoding="utf-8")
    pw.chmod(0o600)
    settings = MqttSettings(
        host="127.0.0.1", port=mb.port, client_id="mapper-1", username="mapper", password_file=pw, ca_file=mb.ca_file
    )
    store = SqliteStore(tmp_path / "map.db")
    sub = MapSubscriber(settings, store, SubscriberSettings(fuse_every_s=0.2))
    sub.start()
    assert sub.wait_subscribed(10), sub.last_error
    return sub, store


def test_the_mapper_gets_nothing_the_acl_refused_and_refuses_the_rest(map_broker_factory: Any, tmp_path: Path) -> None:
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    bob, _ = mb.add_device("bob")
    reader_pw = mb.add_reader("mapper")
    mb.broker.start()
    sub, store = mapper_for(mb, tmp_path, reader_pw)
    try:
        a = mb.client(alice, alice_pw)
        assert not a.connect().is_failure
        good = fresh(alice, 0)
        assert not a.publish(topic_for(good), to_json(good)).is_failure
        # refused by the broker: alice writing as bob, a reader writing at all
        as_bob = fresh(bob, 1)
        assert a.publish(topic_for(as_bob), to_json(as_bob)).value == NOT_AUTHORIZED
        reader = mb.client("mapper", reader_pw)
        assert not reader.connect().is_failure
        assert reader.publish(topic_for(fresh(alice, 2)), to_json(fresh(alice, 2))).value == NOT_AUTHORIZED
        reader.close()
        # let through by the broker (alice's own topic), refused by the mapper
        lie = fresh(bob, 3)  # claims to be bob's, on alice's topic
        own_topic = topic_for(good)
        assert not a.publish(own_topic, to_json(lie)).is_failure
        assert not a.publish(own_topic, b"\x00garbage").is_failure
        assert not a.publish(own_topic, to_json(good).replace(b'"score":0.8', b'"score":NaN')).is_failure
        far = dataclasses.replace(fresh(alice, 4), observer=Position(48.8566, 2.3522, 4.0), estimate=None)
        far = dataclasses.replace(
            far, rays=tuple(dataclasses.replace(r, lat_deg=48.8566, lon_deg=2.3522) for r in far.rays)
        )
        assert not a.publish(own_topic, to_json(far)).is_failure  # Paris on Berlin's topic
        # refused by the broker for its size: alice is dropped, the broker and mapper carry on
        big = b"{" + b" " * (MAX_MESSAGE_BYTES + 2048) + b"}"
        assert a.publish(own_topic, big) is None
        a.disconnected.wait(5)
        a.close()
        a = mb.client(alice, alice_pw)
        assert not a.connect().is_failure
        later = fresh(alice, 5)
        later = dataclasses.replace(
            later, estimate=Estimate(later.observer.lat_deg, later.observer.lon_deg + 2e-4, 5.0)
        )
        assert not a.publish(topic_for(later), to_json(later)).is_failure
        a.close()
        wait_until(lambda: sub.counters.received >= 6)
        wait_until(sub.idle)
    finally:
        sub.close()
    stats = store.stats()
    assert stats["sightings"] == 2  # the two good ones, nothing else
    assert {e.devices for e in store.entities()} == {1}
    assert stats["rejected:device"] == 1 and stats["rejected:json"] == 2 and stats["rejected:region"] == 1
    assert sub.counters.received == 6  # the broker kept bob's topic, the reader's and the oversized one
