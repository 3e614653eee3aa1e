"""``sousveil map``: import a device's file sink, fuse, export every format, stats; errors are one line."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.cli import main
from firmware.sinks import FileSink
from mapper.store import SqliteStore
from tests.mqtt_broker import Broker, broker_factory_fixture, broker_fixture  # noqa: F401 - fixtures
from tests.sim_world import make_world
from tests.test_mapper_sim import messages, publish_all

ROOT = Path(__file__).resolve().parents[1]
SOUSVEIL = "import sys; from firmware.cli import main; sys.exit(main(sys.argv[1:]))"  # the console script


@pytest.fixture(name="ride_file")
def ride_file_fixture(tmp_path: Path) -> tuple[Path, int]:
    world = make_world(seed=5, n_cameras=8, n_rides=16, fp_per_km=0.0)
    path = tmp_path / "sightings.jsonl"
    with FileSink(path) as sink:
        for s in world.sightings:
            sink.submit(s)
    with path.open("ab") as fh:
        fh.write(b'{"not": "a sighting"}\n\n')
    return path, len(world.sightings)


def test_import_fuse_export_stats(ride_file: tuple[Path, int], tmp_path: Path, capsys: Any) -> None:
    path, n = ride_file
    store = str(tmp_path / "map.db")
    assert main(["map", "import", "--store", store, str(path)]) == 0
    out = capsys.readouterr().out
    assert f"imported {n} sightings (0 already known, 1 refused)" in out
    assert main(["map", "import", "--store", store, str(path)]) == 0  # again: nothing new
    assert f"imported 0 sightings ({n} already known, 1 refused)" in capsys.readouterr().out
    assert main(["map", "stats", "--store", store]) == 0
    stats = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert stats["sightings"] == str(n) and stats["pending"] == "0" and int(stats["entities"]) >= 6

    assert main(["map", "export", "--store", store, str(tmp_path / "map.geojson"), "--rays"]) == 0
    doc = json.loads((tmp_path / "map.geojson").read_text(encoding="utf-8"))
    points = [f for f in doc["features"] if f["geometry"]["type"] == "Point"]
    assert len(points) == int(stats["entities"])
    assert any(f["geometry"]["type"] == "LineString" for f in doc["features"])

    assert main(["map", "export", "--store", store, str(tmp_path / "review.osm")]) == 0
    nodes = ET.parse(tmp_path / "review.osm").getroot().findall("node")
    assert nodes and all(n.find("tag[@k='source']").get("v") == "survey" for n in nodes)  # type: ignore[union-attr]
    assert len(nodes) <= len(points)  # OSM: confidence >= 0.5 by default

    assert main(["map", "export", "--store", store, str(tmp_path / "map.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "map.csv").open(encoding="utf-8")))
    assert len(rows) == len(points)
    capsys.readouterr()
    assert main(["map", "export", "--store", store, "-", "--format", "kml"]) == 0
    kml = ET.fromstring(capsys.readouterr().out.encode())  # standard output holds the document alone
    assert kml.tag.endswith("kml") and len(kml.findall(".//{*}Placemark")) == len(points)


def test_import_counts_each_refusal_under_its_reason(ride_file: tuple[Path, int], tmp_path: Path, capsys: Any) -> None:
    """A line is checked on the topic its plain JSON names, or on a placeholder when it names none, so
    check_message says what is wrong: ``{}`` breaks the schema, NaN is no JSON, a rider on the wrong
    hemisphere is impossible."""
    path, n = ride_file
    good = path.read_bytes().splitlines()[0]
    obj = json.loads(good)
    nan = good.replace(b'"score":', b'"score":NaN,"x":', 1)
    far = json.dumps({**obj, "observer": {**obj["observer"], "lat_deg": -obj["observer"]["lat_deg"]}}).encode()
    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(b"\n".join([b"{}", nan, b"[1, 2]", b"not json", b'{"estimate": 5}', far]) + b"\n")
    store = str(tmp_path / "map.db")
    assert main(["map", "import", "--store", store, str(lines), str(path)]) == 0
    assert f"imported {n} sightings (0 already known, 7 refused)" in capsys.readouterr().out
    assert main(["map", "stats", "--store", store]) == 0
    stats = dict(line.split() for line in capsys.readouterr().out.splitlines())
    rejected = {k.removeprefix("rejected:"): int(v) for k, v in stats.items() if k.startswith("rejected:")}
    # bad.jsonl: {}, [1, 2], {"estimate": 5} and the file's own '{"not": "a sighting"}' break the schema
    assert rejected == {"schema": 4, "json": 2, "impossible": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["map", "export", "OUT.txt"], "cannot tell the format"),
        (["map", "export", "-"], "--format is needed"),
        (["map", "import", "/nonexistent/file.jsonl"], "No such file"),
        (["map", "export", "x.geojson", "--min-confidence", "2"], "min_confidence"),
        (["map", "run", "--region", "u3a"], "geohash"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys: Any) -> None:
    code = main([*argv[:2], "--store", str(tmp_path / "map.db"), *argv[2:]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("sousveil map: ") and err.count("\n") == 1, err


def test_a_store_that_is_not_a_database(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "map.db"
    bad.write_bytes(b"garbage" * 1000)
    assert main(["map", "stats", "--store", str(bad)]) == 2
    assert "cannot open the map store" in capsys.readouterr().err


def test_map_run_subscribes_stores_fuses_and_stops_cleanly_on_sigterm(broker: Broker, tmp_path: Path) -> None:
    world = make_world(seed=6, n_cameras=6, n_rides=8, fp_per_km=0.0, start_utc=datetime.now(UTC) - timedelta(days=3))
    store = tmp_path / "map.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", SOUSVEIL, "map", "run", "--store", str(store), "--host", "127.0.0.1",
         "--port", str(broker.port), "--client-id", "cli-mapper", "--stats-every", "0.5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "subscribed to $share/sousveil-mapper/sousveil/v1/sightings/#" in proc.stdout.readline()
        publish_all(broker.port, messages(world.sightings))
        deadline = time.monotonic() + 20
        line = ""
        while f"stored {len(world.sightings)}," not in line:
            assert time.monotonic() < deadline, line
            line = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    db = SqliteStore(store)
    assert db.stats()["sightings"] == len(world.sightings) and db.stats()["pending"] == 0
    assert db.stats()["entities"] >= 4
