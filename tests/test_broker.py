"""The shipped map broker (deploy/broker/) against a real mosquitto: TLS, accounts, ACL, limits, bridge.

Every broker here runs deploy/broker/mosquitto.conf (paths moved into tmp_path, a free port),
TLS files from deploy/broker/make-ca.sh and accounts from broker/accounts.py (``sousveil broker``).
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import ssl
import struct
import threading
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.accounts import format_passwd, hash_password, read_passwd
from broker.cli import device_snippet
from broker.local import BRIDGE_CONF, LocalBroker, free_port
from firmware.cli import main
from firmware.config import parse_config
from firmware.geohash import sighting_topic, status_topic
from firmware.mqtt import MqttPublisher
from firmware.outbox import Outbox
from firmware.sighting import MAX_MESSAGE_BYTES, Sighting, to_json
from tests.mqtt_broker import (  # noqa: F401 - fixtures
    MapBroker,
    Subscriber,
    map_broker_factory_fixture,
)
from tests.test_mqtt import sighting

PREFIX = "sousveil/v1"
SHARED = "$share/map/sousveil/v1/sightings/#"
BERLIN = (52.52, 13.405)  # geohash u33d...: inside the bridged region u/u3
PARIS = (48.8566, 2.3522)  # geohash u09t...: outside it
NOT_AUTHORIZED = 0x87


def sighting_of(device: str, i: int = 0) -> Sighting:
    return dataclasses.replace(sighting(i), device=device)


def here(device: str, where: tuple[float, float] = BERLIN) -> str:
    return sighting_topic(PREFIX, where[0], where[1], device)


def started(mb: MapBroker) -> MapBroker:
    mb.broker.start()
    return mb


def sentinel_then(sub: Subscriber, mb: MapBroker, device: str, password: str) -> list[str]:
    """Publish one allowed message and wait for it: whatever the subscriber got before it was delivered."""
    before = len(sub.messages)
    c = mb.client(device, password)
    assert not c.connect().is_failure
    assert not c.publish(here(device), b"sentinel").is_failure
    got = sub.wait_for(before + 1, 5)
    c.close()
    assert got and got[-1].payload == b"sentinel"
    return [m.topic for m in got[:-1]]


# ---- raw MQTT v5 packets, to send what paho never would ----


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(username: str, password: str) -> bytes:
    variable = _str("MQTT") + bytes([5, 0xC2]) + struct.pack("!H", 10) + b"\x00"
    return _packet(0x10, variable + _str("") + _str(username) + _str(password))


def publish_packet(topic: bytes, payload: bytes, mid: int = 1) -> bytes:
    return _packet(0x32, _str(topic) + struct.pack("!H", mid) + b"\x00" + payload)


def raw_tls(mb: MapBroker) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(mb.ca_file))
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", mb.port), timeout=5), server_hostname="localhost")
    return sock


def closed_by_broker(sock: socket.socket | ssl.SSLSocket, timeout: float = 5.0) -> bool:
    """True when the broker closes the connection (maybe after a DISCONNECT packet) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if data[0] == 0xE0:  # DISCONNECT with a reason: it closes next
                continue
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# ---- TLS and credentials ----


def test_enrolled_device_publishes_over_tls_into_a_shared_subscription(map_broker_factory: Any, tmp_path: Path) -> None:
    """The add-device snippet, parsed as the device's config, drives the real publisher to a reader."""
    mb = map_broker_factory()
    enrolment = mb.accounts.add_device("alice", mb.secrets)
    reader_pw = mb.add_reader("mapper")
    started(mb)
    snippet = device_snippet(enrolment, "localhost", mb.port, str(mb.ca_file))
    snippet = snippet.replace("/run/credentials/sousveil.service/mqtt-password", str(enrolment.password_file))
    config = parse_config(tomllib.loads(snippet), "sousveil.toml", state_dir=tmp_path)
    device = config.device.id
    assert config.mqtt is not None and device is not None and device == enrolment.account.username
    readers = [mb.subscriber(SHARED, "mapper", reader_pw)]
    with Outbox(tmp_path / "outbox.db") as box:
        pub = MqttPublisher(dataclasses.replace(config.mqtt, keepalive_s=5), box, device)
        pub.start()
        sent = [sighting_of(device, i) for i in range(3)]
        for s in sent:
            pub.submit(s)
        assert pub.flush(10), pub.state()
        got = readers[0].wait_for(3, 5)
        assert pub.state().rejected == 0
        pub.close()
    assert sorted(m.payload for m in got) == sorted(to_json(s) for s in sent)
    assert all(m.topic.endswith(f"/{device}") for m in got)
    readers[0].close()


def test_plain_tcp_to_the_tls_port_gets_no_connack(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    device, password = mb.add_device("alice")
    started(mb)
    with socket.create_connection(("127.0.0.1", mb.port), timeout=5) as sock:
        sock.sendall(connect_packet(device, password))
        assert closed_by_broker(sock)
    assert mb.broker.alive()


def test_wrong_password_unknown_user_and_no_credentials_are_refused(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    device, password = mb.add_device("alice")
    started(mb)
    for user, pw in ((device, "not-the-password"), ("0123456789abcdef", password), (None, None), (device, None)):
        c = mb.client(user, pw)
        reason = c.connect()
        assert reason is not None and reason.is_failure, (user, reason)
        c.close()
    ok = mb.client(device, password)
    assert not ok.connect().is_failure
    ok.close()


def test_revoked_device_is_cut_off_on_reload_and_refused_after(map_broker_factory: Any) -> None:
    """mosquitto 2.0 re-checks connected clients on SIGHUP: the revoked one is disconnected at once."""
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    bob, bob_pw = mb.add_device("bob")
    started(mb)
    a, b = mb.client(alice, alice_pw), mb.client(bob, bob_pw)
    assert not a.connect().is_failure and not b.connect().is_failure
    assert main(["broker", "revoke", "alice", "--dir", str(mb.dir)]) == 0  # by name, as the operator would
    assert not a.disconnected.is_set()  # nothing changes before the reload
    mark = mb.broker.log_size()
    assert main(["broker", "regenerate", "--dir", str(mb.dir), "--reload-pid", str(mb.broker.pid)]) == 0
    assert mb.broker.wait_log("Reloading config", 5, after=mark)
    assert a.disconnected.wait(5), "the revoked device stayed connected after the reload"
    assert a.publish(here(alice), b"{}", timeout=1) is None
    again = mb.client(alice, alice_pw)
    assert again.connect().is_failure
    again.close()
    assert not b.disconnected.is_set() and not b.publish(here(bob), b"{}").is_failure  # others carry on
    a.close()
    b.close()


# ---- the ACL ----


def test_impostor_cannot_write_another_devices_or_unbound_topics(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    bob, bob_pw = mb.add_device("bob")
    reader_pw = mb.add_reader("mapper")
    started(mb)
    sightings = mb.subscriber(f"{PREFIX}/sightings/#", "mapper", reader_pw)
    statuses = mb.subscriber(f"{PREFIX}/status/#", "mapper", reader_pw)
    c = mb.client(alice, alice_pw)
    assert not c.connect().is_failure
    forbidden = [
        here(bob),  # bob's sighting topic
        status_topic(PREFIX, bob),  # bob's status
        f"{PREFIX}/sightings/u/u3/u33/u33d/u33dc",  # a region without a device level
        f"{PREFIX}/sightings/u/u3/u33/u33d/{alice}",  # too few region levels
        f"{PREFIX}/sightings/{alice}",
        f"{PREFIX}/status/{alice}/x",
        f"other/v1/sightings/u/u3/u33/u33d/u33dc/{alice}",  # another prefix
        f"{PREFIX}/status",
    ]
    for topic in forbidden:
        reason = c.publish(topic, b"{}")
        assert reason is not None and reason.value == NOT_AUTHORIZED, (topic, reason)
    assert not c.publish(status_topic(PREFIX, alice), b"{}", retain=True).is_failure  # its own status: fine
    c.close()
    assert sentinel_then(sightings, mb, bob, bob_pw) == []
    assert [m.topic for m in statuses.wait_for(1, 5)] == [status_topic(PREFIX, alice)]
    sightings.close()
    statuses.close()


def test_reader_cannot_publish_anything(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    reader_pw = mb.add_reader("mapper")
    started(mb)
    sub = mb.subscriber(f"{PREFIX}/#", "mapper", reader_pw)
    r = mb.client("mapper", reader_pw)
    assert not r.connect().is_failure
    for topic in (here(alice), status_topic(PREFIX, alice), f"{PREFIX}/sightings/x", "mapper", f"{PREFIX}/map"):
        reason = r.publish(topic, b"{}")
        assert reason is not None and reason.value == NOT_AUTHORIZED, (topic, reason)
    r.close()
    assert sentinel_then(sub, mb, alice, alice_pw) == []
    sub.close()


def test_persistent_reader_session_gets_what_came_while_it_was_away(map_broker_factory: Any) -> None:
    """QoS 1 with clean_start false and a session expiry: the broker queues for the absent reader."""
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    reader_pw = mb.add_reader("mapper")
    started(mb)
    got: list[bytes] = []
    subscribed, arrived = threading.Event(), threading.Condition()

    def reader() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mapper-1", protocol=MQTTProtocolVersion.MQTTv5)
        c.username_pw_set("mapper", reader_pw)
        c.tls_set(ca_certs=str(mb.ca_file))
        c.on_subscribe = lambda *a: subscribed.set()

        def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            with arrived:
                got.append(bytes(msg.payload))
                arrived.notify_all()

        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        c.connect("127.0.0.1", mb.port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        return c

    first = reader()
    first.subscribe(SHARED, qos=1)
    assert subscribed.wait(5)
    first.disconnect()
    first.loop_stop()
    d = mb.client(alice, alice_pw)
    assert not d.connect().is_failure
    for i in range(5):
        assert not d.publish(here(alice), f"{i}".encode()).is_failure
    d.close()
    second = reader()  # no new SUBSCRIBE: the session kept it
    with arrived:
        arrived.wait_for(lambda: len(got) >= 5, 5)
    second.disconnect()
    second.loop_stop()
    assert sorted(got) == [f"{i}".encode() for i in range(5)]


# ---- limits and bad input ----


def test_largest_sighting_passes_and_an_oversized_packet_only_drops_its_sender(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    bob, bob_pw = mb.add_device("bob")
    reader_pw = mb.add_reader("mapper")
    started(mb)
    sub = mb.subscriber(SHARED, "mapper", reader_pw)
    a = mb.client(alice, alice_pw)
    assert not a.connect().is_failure
    longest = sighting_topic(PREFIX, -89.9, -179.9, alice)
    assert not a.publish(longest, b"x" * MAX_MESSAGE_BYTES).is_failure  # a full-size sighting fits
    assert len(sub.wait_for(1, 5)) == 1
    assert a.publish(longest, b"x" * (MAX_MESSAGE_BYTES + 4096), timeout=5) is None
    assert a.disconnected.wait(5), "the oversized packet did not cost its sender the connection"
    assert mb.broker.alive()
    assert sentinel_then(sub, mb, bob, bob_pw) == [longest]  # the others carry on
    a.close()
    sub.close()


def test_malformed_packets_close_that_connection_and_the_broker_carries_on(map_broker_factory: Any) -> None:
    mb = map_broker_factory()
    alice, alice_pw = mb.add_device("alice")
    reader_pw = mb.add_reader("mapper")
    started(mb)
    sub = mb.subscriber(SHARED, "mapper", reader_pw)
    wildcard = f"{PREFIX}/sightings/+/+/+/+/+/{alice}".encode()
    bad = {
        "a wildcard in a PUBLISH topic": publish_packet(wildcard, b"{}"),
        "a topic that is not UTF-8": publish_packet(here(alice).encode()[:-1] + b"\xff", b"{}"),
        "a reserved packet type": _packet(0xF0, b""),
        "a remaining length that overruns": bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
    }
    for what, packet in bad.items():
        with raw_tls(mb) as sock:
            sock.sendall(connect_packet(alice, alice_pw))
            connack = sock.recv(64)
            assert connack[:1] == b"\x20" and connack[3] == 0, (what, connack)
            sock.sendall(packet)
            assert closed_by_broker(sock), what
        assert mb.broker.alive(), what
    with raw_tls(mb) as sock:  # garbage instead of CONNECT
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert closed_by_broker(sock)
    assert sentinel_then(sub, mb, alice, alice_pw) == []
    sub.close()


# ---- federation ----


def test_bridge_forwards_the_regions_sightings_to_the_national_broker(map_broker_factory: Any) -> None:
    national = map_broker_factory("national")
    bridge_pw = secrets.token_urlsafe(16)
    (national.dir / "acl.local").write_text("user bridge-u3\ntopic write sousveil/v1/sightings/u/u3/#\n")
    entries = read_passwd(national.accounts.passwd)
    entries["bridge-u3"] = hash_password(bridge_pw)
    national.accounts.passwd.write_text(format_passwd(entries))
    national_reader_pw = national.add_reader("national-map")  # rewrites the ACL with acl.local first
    started(national)

    bridge = BRIDGE_CONF.read_text(encoding="utf-8")
    bridge = bridge.replace("national.example.org:8883", f"127.0.0.1:{national.port}")
    bridge = bridge.replace("/etc/mosquitto/sousveil/tls/national-ca.crt", str(national.ca_file))
    bridge = bridge.replace("remote_password CHANGE-ME", f"remote_password {bridge_pw}")
    bridge = bridge.replace("restart_timeout 2 60", "restart_timeout 1 1")
    regional = map_broker_factory("regional", extra_conf="\n" + bridge)
    alice, alice_pw = regional.add_device("alice")
    started(regional)

    sub = national.subscriber(SHARED, "national-map", national_reader_pw)
    assert national.broker.wait_log("u'bridge-u3'", 10), "the bridge did not connect to the national broker"
    d = regional.client(alice, alice_pw)
    assert not d.connect().is_failure
    assert not d.publish(here(alice, PARIS), b"paris").is_failure  # outside the bridged region
    assert not d.publish(here(alice, BERLIN), b"berlin").is_failure
    got = sub.wait_for(1, 10)
    assert [(m.topic, m.payload) for m in got] == [(here(alice, BERLIN), b"berlin")]
    d.close()
    sub.close()


def test_shipped_config_parses_in_the_debian_layout(tmp_path: Path) -> None:
    """Debian's main mosquitto.conf (persistence, log, include_dir) plus ours in conf.d: no clash."""
    from broker.local import SHIPPED_CONF, make_tls, render_config

    mb_dir = tmp_path / "etc"
    (mb_dir / "conf.d").mkdir(parents=True)
    make_tls(mb_dir / "tls")
    (mb_dir / "passwd").touch()
    (mb_dir / "acl").touch()
    port = free_port()
    ours = render_config(SHIPPED_CONF.read_text(encoding="utf-8"), mb_dir, port)
    ours = ours.split("# ---- added by broker/local.py")[0]
    (mb_dir / "conf.d" / "sousveil.conf").write_text(ours)
    user = render_config("\nlistener 8883\n", mb_dir, port).splitlines()[-1]
    main = (
        f"pid_file {tmp_path}/mosquitto.pid\npersistence true\npersistence_location {tmp_path}/\n"
        f"log_dest file {mb_dir}/mosquitto.log\ninclude_dir {mb_dir}/conf.d\n{user}\n"
    )
    broker = LocalBroker(mb_dir, main, port)
    broker.start()
    try:
        assert broker.alive()
    finally:
        broker.stop()
