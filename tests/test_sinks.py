"""FileSink, the GeoJSON export, and MqttSink's overflow when the outbox is full, on real files and a real broker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from firmware.mqtt import MqttPublisher, MqttSettings
from firmware.outbox import Outbox
from firmware.sighting import from_json, to_json
from firmware.sinks import FileSink, MqttSink, export_geojson, rewrite_lines
from tests.mqtt_broker import Broker, Subscriber, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures
from tests.test_mqtt import DEVICE, sighting


def test_file_sink_appends_parseable_lines(tmp_path: Path) -> None:
    path = tmp_path / "rides" / "sightings.jsonl"
    sent = [sighting(i) for i in range(3)]
    sink = FileSink(path)
    for s in sent[:2]:
        assert sink.submit(s)
    sink.close()
    sink = FileSink(path)  # a second run appends
    sink.submit(sent[2])
    assert sink.flush(0.0)
    sink.close()
    lines = path.read_bytes().splitlines()
    assert lines == [to_json(s) for s in sent]
    assert [from_json(line) for line in lines] == sent
    assert "sightings.jsonl" in sink.describe()


def test_geojson_export_is_a_feature_collection_of_lon_lat_points(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    sent = [sighting(i) for i in range(4)]  # even: with an estimate; odd: observer only
    with FileSink(path) as sink:
        for s in sent:
            sink.submit(s)
    with open(path, "ab") as f:
        f.write(to_json(sent[0]) + b"\n" + b'{"torn": ')  # a repeat and a torn last line
    out = tmp_path / "s.geojson"
    assert export_geojson(path, out) == 4
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    assert [f["id"] for f in doc["features"]] == [s.id for s in sent]
    for s, f in zip(sent, doc["features"], strict=True):
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Point"
        where = s.estimate if s.estimate is not None else s.observer
        assert f["geometry"]["coordinates"] == [where.lon_deg, where.lat_deg]
        props = f["properties"]
        assert props["located"] == ("estimate" if s.estimate is not None else "observer")
        assert props["label"] == "dome" and props["osm:man_made"] == "surveillance"
        assert props["first_seen_utc"].endswith("Z")


def mqtt_sink(port: int, outbox: Path, max_rows: int, overflow: Path | None) -> MqttSink:
    settings = MqttSettings(host="127.0.0.1", port=port, client_id="sink-test", keepalive_s=2)
    publisher = MqttPublisher(settings, Outbox(outbox, max_rows=max_rows), DEVICE)
    publisher.start()
    return MqttSink(publisher, overflow)


def test_a_full_outbox_spills_to_the_overflow_file_and_nothing_is_lost(broker: Broker, tmp_path: Path) -> None:
    """Broker away, outbox full: the ride goes on, the rest waits in the overflow file, the
    next sink moves it back into the outbox, and once the broker is there every sighting arrives."""
    broker.kill()
    outbox, overflow = tmp_path / "outbox.db", tmp_path / "outbox.db.overflow.jsonl"
    sent = [sighting(i) for i in range(5)]
    sink = mqtt_sink(broker.port, outbox, 2, overflow)
    try:
        for s in sent:
            assert sink.submit(s)  # never raises, never refuses
        assert sink.overflowed == 3 and sink.unsaved == 0
        assert not sink.flush(0.2)  # not delivered: the broker is away and three are in the file
        assert [from_json(line).id for line in overflow.read_bytes().splitlines()] == [s.id for s in sent[2:]]
    finally:
        sink.close()
    broker.start()
    sub = Subscriber(broker.port, "sousveil/v1/sightings/#")
    sink = mqtt_sink(broker.port, outbox, 10, overflow)  # room again (a bigger max_rows, or a drained outbox)
    try:
        assert sink.requeued == 3 and not overflow.exists()
        assert sink.flush(10.0)
        got = {from_json(m.payload).id for m in sub.wait_for(5)}
        assert got == {s.id for s in sent}
    finally:
        sink.close()
        sub.close()


def test_when_not_even_the_overflow_file_can_be_written_the_sighting_waits_in_memory(
    broker: Broker, tmp_path: Path
) -> None:
    broker.kill()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the overflow's folder should be")
    sent = [sighting(i) for i in range(3)]
    sink = mqtt_sink(broker.port, tmp_path / "outbox.db", 1, blocked / "overflow.jsonl")
    try:
        sink.submit(sent[0])
        sink.submit(sent[1])  # outbox full, overflow cannot be written: kept in memory
        assert sink.unsaved == 1 and sink.overflowed == 0
        blocked.unlink()  # space again
        sink.submit(sent[2])  # retries the one in memory first
        assert sink.unsaved == 0 and sink.overflowed == 2
        lines = (blocked / "overflow.jsonl").read_bytes().splitlines()
        assert [from_json(line).id for line in lines] == [sent[1].id, sent[2].id]
    finally:
        sink.close()


def test_requeue_never_makes_a_drop_oldest_outbox_drop_what_it_holds(broker: Broker, tmp_path: Path) -> None:
    broker.kill()
    outbox, overflow = tmp_path / "outbox.db", tmp_path / "outbox.db.overflow.jsonl"
    queued, spilled = [sighting(i) for i in range(2)], [sighting(i) for i in range(2, 5)]
    with Outbox(outbox) as ob:
        for s in queued:
            ob.put(s.id, "t", to_json(s))
    overflow.write_bytes(b"".join(to_json(s) + b"\n" for s in spilled))
    settings = MqttSettings(host="127.0.0.1", port=broker.port, client_id="sink-test", keepalive_s=2)
    publisher = MqttPublisher(settings, Outbox(outbox, max_rows=3, when_full="drop_oldest"), DEVICE)
    publisher.start()
    sink = MqttSink(publisher, overflow)
    try:
        assert sink.requeued == 1  # one row to spare: one moved back, none dropped for it
        assert publisher.outbox.stats().dropped_total == 0
        assert [from_json(line).id for line in overflow.read_bytes().splitlines()] == [s.id for s in spilled[1:]]
    finally:
        sink.close()


def test_a_short_write_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "overflow.jsonl"
    path.write_bytes(b"a\nb\n")
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:1]))  # the disk fills up
    with pytest.raises(OSError, match="disk full"):
        rewrite_lines(path, [b"b", b"c"])
    monkeypatch.undo()
    assert path.read_bytes() == b"a\nb\n"
    assert [p.name for p in tmp_path.iterdir()] == ["overflow.jsonl"]  # no temporary file left
