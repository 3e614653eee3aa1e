"""The committed sample ride (samples/ride/, made by scripts/make_sample_ride.py) through `sousveil replay`.

The world is known (truth.json): every true camera should get a sighting whose estimate lies
near it, and no estimate should land far from every true camera.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from firmware import replay_cli
from firmware.geometry import to_local
from firmware.sighting import from_json

RIDE = Path(__file__).resolve().parent.parent / "samples" / "ride"


def test_sample_ride_finds_the_cameras(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("av")
    truth = json.loads((RIDE / "truth.json").read_text(encoding="utf-8"))
    out = tmp_path / "sightings.jsonl"
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    video, track = str(RIDE / "lund-ride.mp4"), str(RIDE / "lund-ride.gpx")
    args = parser.parse_args(["replay", video, "--track", track, "--out", str(out), "--threads", "2"])
    assert replay_cli.run(args) == 0
    assert f"{truth['frames']} frames" in capsys.readouterr().out
    sightings = [from_json(line) for line in out.read_bytes().splitlines() if line.strip()]
    lat0, lon0 = truth["start"]["lat"], truth["start"]["lon"]
    cameras = [to_local(c["lat"], c["lon"], lat0, lon0) for c in truth["cameras"]]
    estimates = [
        (s.label, to_local(s.estimate.lat_deg, s.estimate.lon_deg, lat0, lon0))
        for s in sightings
        if s.estimate is not None
    ]
    for _, (e, n) in estimates:  # no estimate far from every true camera
        assert min(math.hypot(e - ce, n - cn) for ce, cn in cameras) < 30.0
    found = 0
    for cam, (ce, cn) in zip(truth["cameras"], cameras, strict=True):
        if any(math.hypot(e - ce, n - cn) < 15.0 for _, (e, n) in estimates):
            found += 1
        else:
            print(f"missed: {cam['name']}")
    assert found >= len(cameras) - 1
