"""Recorded clips and GPS logs of ../shared/data/rides through the whole `sousveil replay`.

No recorded ride there has video and GPS that belong together (its README says so), so each
case pairs a real street clip with a real track: the replay must run the real decoder, the
real model and the real position parsers on them without a traceback, and every sighting it
makes must be valid and lie on the track it was geotagged from. The data may not be
redistributed; the test skips, saying why, where it is absent.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from firmware import replay_cli
from firmware.position.interpolate import distance_m
from firmware.sighting import from_json

ROOT = Path(__file__).resolve().parent.parent
RIDES = ROOT.parent / "shared" / "data" / "rides"
SCHEMA = ROOT / "firmware" / "sighting.schema.json"

CASES = [
    # a 1920x1080 UK shopping street with a London bike ride (GPX with time and elevation)
    ("aig_uk_pedestrian_street_static.mp4", "london_westminster_ride_1hz.gpx", ["--every-n", "3"]),
    # a Tokyo street walk with a GGA-only NMEA log: times without a date, so --date
    ("aig_tokyo_walking_street.mp4", "czech_gga_car_1hz.nmea", ["--every-n", "2", "--date", "2024-05-01"]),
]


@pytest.mark.parametrize(("clip", "log", "extra"), CASES)
def test_a_recorded_clip_and_track_replay_cleanly(
    clip: str, log: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("av")
    video, track = RIDES / "videos" / clip, RIDES / "tracks" / log
    if not (video.is_file() and track.is_file()):
        pytest.skip(f"{RIDES} is absent (shared data, not redistributed): needs {clip} and {log}")
    out = tmp_path / "sightings.jsonl"
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    args = ["replay", str(video), "--track", str(track), "--out", str(out), "--threads", "2", *extra]
    assert replay_cli.run(parser.parse_args(args)) == 0
    printed = capsys.readouterr()
    assert "0 tracks without a position fix" in printed.out
    date = replay_cli.parse_date(extra[extra.index("--date") + 1]) if "--date" in extra else None
    fixes = replay_cli.load_fixes(track, date)
    start = fixes[0].t_utc
    validator = Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    lines = [line for line in out.read_bytes().splitlines() if line.strip()]
    for line in lines:
        assert not list(validator.iter_errors(json.loads(line))), line
        s = from_json(line)
        assert start <= s.first_seen_utc <= s.last_seen_utc <= start + timedelta(seconds=30)
        # geotagged from the track: the rider's position is on it (within the ride's first half minute)
        near = min(distance_m(s.observer.lat_deg, s.observer.lon_deg, f.lat_deg, f.lon_deg) for f in fixes[:40])
        assert near < 50.0, (clip, near)
    print(f"{clip} + {log}: {len(lines)} sightings (no known cameras: these are false or unverified)")
    geo = json.loads(out.with_suffix(".geojson").read_text(encoding="utf-8"))
    assert len(geo["features"]) == len(lines)
