"""MqttPublisher against a real mosquitto on loopback: delivery, outages, restarts, status, credentials."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.mqtt import MqttConfigError, MqttPublisher, MqttSettings, topic_for
from firmware.outbox import Outbox
from firmware.sighting import Estimate, ModelRef, Position, Ray, Sighting, new_id, suggested_tags, to_json
from tests.mqtt_broker import Broker, Subscriber, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "3f9a1c0e5b7d2468"
ALL = "sousveil/v1/sightings/#"
T0 = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)


def sighting(i: int = 0, lon_step: float = 0.0) -> Sighting:
    """A valid sighting, one per second from T0, going north; ``lon_step`` spreads them east too."""
    t = T0 + timedelta(seconds=i)
    lat, lon = 52.52 + i * 1e-3, 13.405 + (i % 7) * lon_step
    return Sighting(
        id=new_id(),
        device=DEVICE,
        first_seen_utc=t,
        last_seen_utc=t,
        label="dome",
        score=0.8,
        frames=3,
        observer=Position(lat, lon, 4.0),
        rays=(Ray(t, lat, lon, 4.0, 45.0, 5.0),),
        estimate=Estimate(lat + 1e-4, lon + 1e-4, 6.0) if i % 2 == 0 else None,
        tags=suggested_tags("dome"),
        model=ModelRef("sousveil-cams", "0.1.0", "ab" * 32),
    )


def settings(port: int, **kw: Any) -> MqttSettings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"test-{DEVICE}",
        "keepalive_s": 2,
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
    }
    base.update(kw)
    return MqttSettings(**base)


def ids_of(messages: list[Any]) -> list[str]:
    return [json.loads(m.payload)["id"] for m in messages]


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    with Outbox(tmp_path / "outbox.db") as box:
        yield box


def test_submitted_sighting_arrives_on_its_region_topic_as_to_json_bytes(broker: Broker, outbox: Outbox) -> None:
    sub = Subscriber(broker.port, ALL, qos=1)
    pub = MqttPublisher(settings(broker.port), outbox, DEVICE)
    pub.start()
    try:
        s = sighting(0)
        assert pub.submit(s)
        (msg,) = sub.wait_for(1)
        assert msg.topic == topic_for(s) == f"sousveil/v1/sightings/u/u3/u33/u33d/u33dc/{s.device}"
        assert msg.payload == to_json(s)
        assert msg.qos == 1
        assert not msg.retain
        assert pub.flush(5.0)
        assert outbox.stats().depth == 0
        assert pub.state().acked == 1
    finally:
        pub.close()
        sub.close()


def test_broker_down_at_start_keeps_everything_then_delivers_in_order(
    broker_factory: Any, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broker: Broker = broker_factory(start=False)
    pub = MqttPublisher(settings(broker.port, reconnect_min_s=2, reconnect_max_s=2), outbox, DEVICE)
    pub.start()
    try:
        sent = [sighting(i) for i in range(12)]
        for k, s in enumerate(sent, 1):
            pub.submit(s)
            assert outbox.stats().depth == k  # grows: nothing published, nothing lost
        # wait for a failed attempt, so the next one is 2 s away: time to start the broker and subscribe
        deadline = time.monotonic() + 5
        while pub.state().last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "cannot connect" in (pub.state().last_error or "")
        assert not pub.connected and outbox.stats().depth == 12
        pub.publish_status({"fps": 9.5})  # offline: kept for the next connect, no error
        time.sleep(2.5)  # at least one more reconnect try
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []  # the broker being away is one warning, not an error per retry
        assert sum("cannot connect" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1
        broker.start()
        sub = Subscriber(broker.port, ALL, qos=1)
        try:
            assert pub.flush(10.0)
            got = sub.wait_for(12)
            assert ids_of(got) == [s.id for s in sent]  # all, in order
            assert outbox.stats().depth == 0
        finally:
            sub.close()
    finally:
        pub.close()


def test_broker_killed_mid_stream_loses_nothing(broker: Broker, outbox: Outbox) -> None:
    # QoS 0 subscription: the subscriber sends no PUBACKs, so the killed broker's socket closes
    # with FIN and what it already wrote to us arrives (unread PUBACKs would make it an RST).
    sub = Subscriber(broker.port, ALL, qos=0)
    pub = MqttPublisher(settings(broker.port, reconnect_min_s=2, reconnect_max_s=2), outbox, DEVICE)
    pub.start()
    try:
        assert pub.wait_connected(5)
        sent = [sighting(i) for i in range(30)]
        for s in sent[:10]:
            pub.submit(s)
        sub.wait_for(3)
        sub.expect_resubscribe()
        broker.kill()
        for s in sent[10:20]:  # while the broker is gone
            pub.submit(s)
        broker.start()
        assert sub.wait_subscribed(5)  # the subscriber (1 s backoff) is back before the publisher (2 s)
        for s in sent[20:]:
            pub.submit(s)
        assert pub.flush(15.0)
        got = ids_of(sub.wait_for(30))
        assert set(got) == {s.id for s in sent}  # at least once; a subscriber de-duplicates by id
        assert outbox.stats().depth == 0
    finally:
        pub.close()
        sub.close()


def test_process_restart_delivers_what_the_last_one_could_not(broker_factory: Any, tmp_path: Path) -> None:
    broker: Broker = broker_factory(start=False)
    path = tmp_path / "restart.db"
    sent = [sighting(i) for i in range(5)]
    with Outbox(path) as box:
        pub = MqttPublisher(settings(broker.port), box, DEVICE)
        pub.start()
        for s in sent:
            pub.submit(s)
        assert not pub.flush(0.3)
        pub.close()  # no network: nothing delivered, nothing lost
        assert box.stats().depth == 5
    broker.start()
    sub = Subscriber(broker.port, ALL, qos=1)
    with Outbox(path) as box:
        pub = MqttPublisher(settings(broker.port), box, DEVICE)
        pub.start()
        try:
            assert pub.flush(10.0)
            assert ids_of(sub.wait_for(5)) == [s.id for s in sent]
        finally:
            pub.close()
            sub.close()


def status_of(port: int, topic: str, want: str, timeout: float = 5.0, key: str | None = None) -> Any:
    """What a late subscriber gets first (the retained status), once its state is ``want``.

    With ``key``, wait also until the retained status carries that field: the bare status sent
    on connect may still be the retained one when a later ``publish_status`` is in flight.
    """
    deadline = time.monotonic() + timeout
    while True:
        sub = Subscriber(port, topic, qos=1)
        try:
            msgs = sub.wait_for(1, 1.0)
        finally:
            sub.close()
        retained = [m for m in msgs if m.retain]  # a status sent while we subscribed may come live too
        if retained:
            body = json.loads(retained[0].payload)
            if body["state"] == want and (key is None or key in body):
                return body
        if time.monotonic() > deadline:
            raise AssertionError(f"no retained status {want!r} on {topic}; got {[m.payload for m in msgs]}")
        time.sleep(0.1)


CHILD = """
import sys, time
from pathlib import Path
from firmware.mqtt import MqttPublisher, MqttSettings
from firmware.outbox import Outbox
pub = MqttPublisher(MqttSettings(host="127.0.0.1", port=int(sys.argv[1]), client_id="child", keepalive_s=2),
                    Outbox(Path(sys.argv[2])), sys.argv[3])
pub.start()
assert pub.wait_connected(5)
pub.publish_status({"ride": "on"})
time.sleep(0.3)
print("ready", flush=True)
time.sleep(60)
"""


def test_retained_status_and_will_offline_when_the_process_dies(broker: Broker, tmp_path: Path) -> None:
    topic = f"sousveil/v1/status/{DEVICE}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(broker.port), str(tmp_path / "child.db"), DEVICE],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        body = status_of(broker.port, topic, "online", key="ride")  # a late subscriber gets the last status
        assert body == {"device": DEVICE, "state": "online", "ride": "on", "time_s": body["time_s"]}
        watcher = Subscriber(broker.port, topic, qos=1)
        watcher.wait_for(1)
        child.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        child.wait(5)
        msgs = watcher.wait_for(2, 5.0)
        watcher.close()
        assert json.loads(msgs[-1].payload)["state"] == "offline"
        assert status_of(broker.port, topic, "offline")["reason"] == "connection lost"  # retained
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_clean_close_leaves_status_offline(broker: Broker, outbox: Outbox) -> None:
    pub = MqttPublisher(settings(broker.port), outbox, DEVICE)
    pub.start()
    assert pub.wait_connected(5)
    pub.publish_status({"outbox": 0})
    assert status_of(broker.port, pub.status_topic, "online", key="outbox")["outbox"] == 0
    pub.close()
    assert status_of(broker.port, pub.status_topic, "offline")["reason"] == "stopped"


SECRET = "s3cr3t-Pa55-do-not-log"


def test_password_from_file_or_env_connects_and_is_never_logged(
    broker_factory: Any, outbox: Outbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    broker: Broker = broker_factory(users={"bike": SECRET})
    pwfile = tmp_path / "mqtt.pass"
    pwfile.write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("SOUSVEIL_MQTT_PASSWORD", SECRET)
    sub = Subscriber(broker.port, ALL, username="bike", password=SECRET)
    try:
        for source in ({"password_file": pwfile}, {"password_env": "SOUSVEIL_MQTT_PASSWORD"}):
            cfg = settings(broker.port, username="bike", **source)
            pub = MqttPublisher(cfg, outbox, DEVICE)
            pub.start()
            try:
                assert pub.wait_connected(5), pub.state().last_error
                pub.submit(sighting(1))
                assert pub.flush(5.0)
                assert SECRET not in repr(cfg) + repr(pub) + str(pub.state())
            finally:
                pub.close()
        assert len(sub.wait_for(2)) == 2
    finally:
        sub.close()
    assert SECRET not in caplog.text
    assert "connected to 127.0.0.1" in caplog.text


def test_wrong_password_is_refused_clearly_and_nothing_is_acked(
    broker_factory: Any, outbox: Outbox, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    broker: Broker = broker_factory(users={"bike": SECRET})
    pwfile = tmp_path / "wrong.pass"
    pwfile.write_text("wrong-password-xyz\n", encoding="utf-8")
    pub = MqttPublisher(settings(broker.port, username="bike", password_file=pwfile), outbox, DEVICE)
    pub.start()
    try:
        pub.submit(sighting(0))
        deadline = time.monotonic() + 5
        while pub.state().last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        state = pub.state()
        assert not state.connected and state.acked == 0
        assert "refused the connection" in (state.last_error or "")
        assert "password" in (state.last_error or "").lower() or "authori" in (state.last_error or "").lower()
        assert outbox.stats().depth == 1
        assert "refused the connection" in caplog.text
        assert "wrong-password-xyz" not in caplog.text
    finally:
        pub.close()


def test_settings_errors_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MqttConfigError, match=r"mqtt\.port"):
        MqttSettings(host="h", port=0)
    with pytest.raises(MqttConfigError, match=r"mqtt\.username"):
        MqttSettings(host="h", password_env="X")
    with pytest.raises(MqttConfigError, match=r"mqtt\.password_file: cannot read"):
        MqttSettings(host="h", username="u", password_file=tmp_path / "missing").read_password()
    monkeypatch.delenv("SOUSVEIL_NOPE", raising=False)
    with pytest.raises(MqttConfigError, match="SOUSVEIL_NOPE is not set"):
        MqttSettings(host="h", username="u", password_env="SOUSVEIL_NOPE").read_password()
    with pytest.raises(MqttConfigError, match=r"cert_file/key_file"):
        MqttSettings(host="h", cert_file=tmp_path / "c.pem")
