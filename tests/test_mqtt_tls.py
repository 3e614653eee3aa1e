"""MqttPublisher over TLS against a real mosquitto with a throwaway CA: delivery, untrusted server, plain TCP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from firmware.mqtt import MqttPublisher
from firmware.outbox import Outbox
from tests.mqtt_broker import (  # noqa: F401 - fixtures
    Broker,
    Subscriber,
    broker_factory_fixture,
    make_ca,
    tls_broker_fixture,
)
from tests.test_mqtt import ALL, DEVICE, ids_of, settings, sighting

QUIET_S = 2.5  # long enough for two reconnect attempts (reconnect_min_s = reconnect_max_s = 1)


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    with Outbox(tmp_path / "outbox.db") as box:
        yield box


def wait_error(pub: MqttPublisher, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while pub.state().last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pub.state().last_error or ""


def test_tls_publisher_trusting_the_ca_delivers(tls_broker: Broker, outbox: Outbox) -> None:
    assert tls_broker.tls is not None
    ca = tls_broker.tls.ca_file
    sub = Subscriber(tls_broker.port, ALL, qos=1, ca_file=ca)
    pub = MqttPublisher(settings(tls_broker.port, tls=True, ca_file=ca), outbox, DEVICE)
    pub.start()
    try:
        assert pub.wait_connected(5), pub.state().last_error
        s = sighting(0)
        assert pub.submit(s)
        assert ids_of(sub.wait_for(1)) == [s.id]
        assert pub.flush(5)
        state = pub.state()
        assert state.connected and state.last_error is None and state.acked == 1
    finally:
        pub.close()
        sub.close()


def test_tls_publisher_with_another_ca_does_not_connect_and_keeps_the_sighting(
    tls_broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    assert tls_broker.tls is not None
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    sub = Subscriber(tls_broker.port, ALL, qos=1, ca_file=tls_broker.tls.ca_file)
    pub = MqttPublisher(settings(tls_broker.port, tls=True, ca_file=other_ca), outbox, DEVICE)
    pub.start()
    try:
        s = sighting(0)
        assert pub.submit(s)
        error = wait_error(pub)
        assert "certificate verify failed" in error.lower(), error
        time.sleep(QUIET_S)
        state = pub.state()
        assert not state.connected and state.connects == 0 and state.acked == 0
        assert outbox.stats().depth == 1
        assert [e.id for e in outbox.pending(10)] == [s.id]
        assert sub.messages == []
    finally:
        pub.close()
        sub.close()
    assert outbox.stats().depth == 1  # close leaves it for the next start


def test_plain_tcp_to_the_tls_port_is_refused(tls_broker: Broker, outbox: Outbox) -> None:
    assert tls_broker.tls is not None
    sub = Subscriber(tls_broker.port, ALL, qos=1, ca_file=tls_broker.tls.ca_file)
    pub = MqttPublisher(settings(tls_broker.port), outbox, DEVICE)  # no TLS
    assert not pub.settings.uses_tls
    pub.start()
    try:
        assert pub.submit(sighting(0))
        assert not pub.wait_connected(QUIET_S)
        state = pub.state()
        assert state.connects == 0 and state.acked == 0
        assert outbox.stats().depth == 1
        assert sub.messages == []
    finally:
        pub.close()
        sub.close()
