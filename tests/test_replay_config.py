"""``sousveil replay --config`` and ``sousveil run``: privacy zones, coarse times, the device id,
the sink choice (MQTT to a real mosquitto, the file sink without a broker), config errors.

Reuses the simulated ride past one dome of tests/test_pipeline.py (as a video).
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest

from firmware import replay_cli, run_cli
from firmware.mqtt import topic_for
from firmware.outbox import Outbox
from firmware.privacy import HoldStore
from firmware.sighting import from_json
from tests.mqtt_broker import (  # noqa: F401 - fixtures
    Broker,
    Subscriber,
    broker_factory_fixture,
    broker_fixture,
    free_port,
)
from tests.test_pipeline import CAM_LAT, CAM_LON, LAT0, LON0, T0, N, draw, lines, write_gpx, write_video


@pytest.fixture(scope="module")
def ride(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The simulated ride as a video and its GPX track (written once for the module)."""
    folder = tmp_path_factory.mktemp("ride")
    video = folder / "ride.mp4"
    write_video(video, [draw(i) for i in range(N)])
    return video, write_gpx(folder / "ride.gpx", 6)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private state dir and working dir; the local-broker probe looks at a closed port."""
    monkeypatch.setenv("SOUSVEIL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(replay_cli, "LOCAL_BROKER", ("127.0.0.1", free_port()))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sousveil")
    sub = p.add_subparsers(dest="command")
    replay_cli.add_parser(sub)
    run_cli.add_parser(sub)
    return p


def replay(ride: tuple[Path, Path], *extra: str) -> int:
    video, gpx = ride
    args = parser().parse_args(["replay", str(video), "--track", str(gpx), "--threads", "2", *extra])
    return replay_cli.run(args)


def write_config(path: Path, text: str) -> Path:
    path.write_text("[detector]\nnum_threads = 2\n" + text, encoding="utf-8")
    return path


def test_drop_zone_publishes_nothing_and_counts(
    ride: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "zone.toml",
        f"[[privacy.zones]]\nlat_deg = {CAM_LAT}\nlon_deg = {CAM_LON}\nradius_m = 100.0\naction = 'drop'\n",
    )
    assert replay(ride, "--config", str(config)) == 0
    printed = capsys.readouterr().out
    assert "1 tracks confirmed" in printed and "0 sightings published" in printed
    assert "1 sightings dropped" in printed
    out = tmp_path / "out" / "sightings.jsonl"  # no [output], no broker: the embedded default file
    assert str(out.relative_to(tmp_path)) in printed
    assert lines(out) == []


def test_coarse_times_and_a_stable_device_id(
    ride: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "got.jsonl"
    id_file = tmp_path / "id" / "device-id"
    config = write_config(
        tmp_path / "coarse.toml",
        f"[privacy]\ncoarse_time_min = 15\n[device]\nid_file = '{id_file}'\n[output]\nfile = '{out}'\n",
    )
    assert replay(ride, "--config", str(config)) == 0
    assert replay(ride, "--config", str(config)) == 0
    assert str(out) in capsys.readouterr().out
    first, second = (from_json(line) for line in lines(out))
    assert first.device == second.device == json.loads(id_file.read_text())["id"]
    assert id_file.stat().st_mode & 0o777 == 0o600
    for s in (first, second):
        assert s.first_seen_utc == s.last_seen_utc == T0  # 08:30:00.x -> 08:30
        assert all(r.t_utc == T0 for r in s.rays)
    assert not (tmp_path / "out").exists()  # [output] file wins over the default


def test_mqtt_config_publishes_on_the_region_topic(
    ride: tuple[Path, Path], tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "q" / "outbox.db"
    config = write_config(
        tmp_path / "mqtt.toml", f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n[outbox]\npath = '{outbox}'\n"
    )
    sub = Subscriber(broker.port, "sousveil/v1/sightings/#", qos=1)
    geojson = tmp_path / "ride.geojson"
    try:
        assert replay(ride, "--config", str(config), "--geojson", str(geojson)) == 0
        (msg,) = sub.wait_for(1, timeout=10)
    finally:
        sub.close()
    s = from_json(msg.payload)
    assert s.label == "dome" and msg.topic == topic_for(s)
    [feature] = json.loads(geojson.read_text())["features"]  # a local map of the ride beside MQTT
    assert feature["id"] == s.id and feature["properties"]["label"] == "dome"
    printed = capsys.readouterr().out
    assert f"mqtt://127.0.0.1:{broker.port}" in printed and "every sighting was delivered" in printed
    with Outbox(outbox) as ob:
        assert ob.stats().depth == 0
    assert not (tmp_path / "out").exists()


def test_a_full_outbox_does_not_stop_the_ride_and_loses_nothing(
    ride: tuple[Path, Path], tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Broker away for long and the outbox full: the ride goes on; the sighting waits in the
    overflow file; the next run, with room, queues it and delivers it."""
    outbox = tmp_path / "q" / "outbox.db"
    outbox.parent.mkdir()
    with Outbox(outbox) as ob:  # hours offline: the outbox already holds its maximum
        ob.put("earlier", "sousveil/v1/sightings/u/u3/u33/u33d/u33dc/0123456789abcdef", b"{}")
    broker.kill()
    mqtt = f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
    config = write_config(tmp_path / "full.toml", f"{mqtt}[outbox]\npath = '{outbox}'\nmax_rows = 1\n")
    assert replay(ride, "--config", str(config)) == 0
    printed = capsys.readouterr().out
    assert "1 sightings published" in printed
    assert "1 sightings did not fit in the full outbox" in printed
    overflow = replay_cli.overflow_path(outbox)
    [line] = lines(overflow)
    assert from_json(line).label == "dome"

    broker.start()
    sub = Subscriber(broker.port, "sousveil/v1/sightings/#", qos=1)
    roomy = write_config(tmp_path / "roomy.toml", f"{mqtt}[outbox]\npath = '{outbox}'\nmax_rows = 100\n")
    try:
        assert replay(ride, "--config", str(roomy)) == 0
        got = sub.wait_for(3, timeout=10)  # the earlier row, the overflowed dome, this run's dome
    finally:
        sub.close()
    printed = capsys.readouterr().out
    assert "1 sightings an earlier run could not queue went back into the outbox" in printed
    assert "every sighting was delivered" in printed
    assert not overflow.exists()
    assert from_json(line).id in {m.payload and json.loads(m.payload).get("id") for m in got}


def test_a_delay_zone_keeps_its_sightings_on_disk(
    ride: tuple[Path, Path], tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Publishing to a broker, a sighting held in a delay zone waits in the hold file for a
    later run; replayed into a local file, nothing is kept for a later run to publish."""
    zone = (
        f"[[privacy.zones]]\nlat_deg = {CAM_LAT}\nlon_deg = {CAM_LON}\nradius_m = 100.0\naction = 'delay'\n"
        "delay_h = 2.0\n"
    )
    hold = tmp_path / "state" / "privacy-hold.db"
    to_file = write_config(tmp_path / "file.toml", zone)
    assert replay(ride, "--config", str(to_file)) == 0
    printed = capsys.readouterr().out
    assert "0 sightings published" in printed and "1 delayed" in printed
    assert "1 sightings in delay zones were not yet due and were not published" in printed
    assert not hold.exists()
    assert lines(tmp_path / "out" / "sightings.jsonl") == []

    mqtt = f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n[outbox]\npath = '{tmp_path / 'outbox.db'}'\n"
    to_broker = write_config(tmp_path / "mqtt.toml", zone + mqtt)
    assert replay(ride, "--config", str(to_broker)) == 0
    printed = capsys.readouterr().out
    assert f"1 sightings in delay zones are not due yet: kept in {hold}" in printed
    [held] = HoldStore(hold).load()
    assert held.sighting.label == "dome"


def test_broker_probe(broker: Broker) -> None:
    assert replay_cli.broker_listening("127.0.0.1", broker.port)
    assert not replay_cli.broker_listening("127.0.0.1", free_port())


def test_bad_config_exits_2_naming_the_key(
    ride: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nhost = 'x'\nport = 70000\n", encoding="utf-8")
    assert replay(ride, "--config", str(config)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mqtt.port" in err and "bad.toml" in err
    config.write_text("[camera]\nhfov = 66\n", encoding="utf-8")
    assert replay(ride, "--config", str(config)) == 2
    assert "camera.hfov" in capsys.readouterr().err


def test_run_from_config(ride: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video, gpx = ride
    out = tmp_path / "live.jsonl"
    config = write_config(
        tmp_path / "run.toml",
        f"[camera]\nsource = 'video'\npath = '{video}'\n[gps]\nsource = 'gpx'\npath = '{gpx}'\n"
        f"[output]\nfile = '{out}'\n",
    )
    assert run_cli.run(parser().parse_args(["run", "--config", str(config)])) == 0
    assert "1 sightings published" in capsys.readouterr().out
    [line] = lines(out)
    s = from_json(line)
    assert s.label == "dome" and T0 <= s.first_seen_utc < T0 + timedelta(seconds=1)
    assert abs(s.observer.lat_deg - LAT0) < 1e-3 and abs(s.observer.lon_deg - LON0) < 1e-3


def test_run_picamera2_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "pi.toml", "[camera]\nsource = 'picamera2'\n")
    assert run_cli.run(parser().parse_args(["run", "--config", str(config)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "picamera2" in err and "on-bike" in err
