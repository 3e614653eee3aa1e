"""FileSink, the GeoJSON export and default_sink, on real files (and a real broker for the MQTT choice)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from firmware.mqtt import MqttSettings
from firmware.sighting import from_json, to_json
from firmware.sinks import FileSink, MqttSink, default_sink, export_geojson
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


def test_default_sink_is_the_file_without_a_broker(tmp_path: Path) -> None:
    sink = default_sink(mqtt=None, outbox_path=None, file_path=tmp_path / "s.jsonl", device_id=DEVICE)
    assert isinstance(sink, FileSink)
    sink.close()


def test_default_sink_is_mqtt_with_a_broker(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker.port, "sousveil/v1/sightings/#")
    settings = MqttSettings(host="127.0.0.1", port=broker.port, client_id="sink-test", keepalive_s=2)
    sink: Any = default_sink(mqtt=settings, outbox_path=tmp_path / "o.db", file_path=tmp_path / "x", device_id=DEVICE)
    try:
        assert isinstance(sink, MqttSink)
        assert sink.describe().startswith(f"mqtt://127.0.0.1:{broker.port} (plain, QoS 1")
        s = sighting(0)
        sink.submit(s)
        assert sink.flush(5.0)
        assert sub.wait_for(1)[0].payload == to_json(s)
    finally:
        sink.close()
        sub.close()
    assert not (tmp_path / "x").exists()
