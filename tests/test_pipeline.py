"""The ride pipeline end to end, real parts only: a simulated ride past one dome camera.

The bike rides north at 7 m/s; a dome stands 4 m east of the street, 4 m up, 40 m ahead at
t = 0. Each 1280x720 frame is drawn with the camera where a pinhole camera (hfov 66 deg,
mounted 1.2 m up, looking ahead) sees it; it leaves the view after ~4.8 s.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from detector import DetectorConfig, load_detector
from detector.detector import Detector
from firmware import replay_cli
from firmware.frames import Pixels, SyntheticSource
from firmware.geometry import CameraModel, from_local, to_local
from firmware.pipeline import Pipeline, Summary
from firmware.position import GpxSource, PositionTrack
from firmware.sighting import from_json
from firmware.sinks import FileSink
from firmware.tracker import Tracker

W, H, FPS, N = 1280, 720, 10.0, 50
HFOV = 66.0
SPEED = 7.0
CAM_EAST, CAM_UP, CAM_AHEAD = 4.0, 4.0, 40.0
EYE_M = 1.2  # the bike's camera above the street
LAT0, LON0 = 55.7047, 13.1910
T0 = datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC)
DEVICE = "3f9a1c0e5b7d2468"
FOCAL = (W / 2) / math.tan(math.radians(HFOV / 2))
CAM_LAT, CAM_LON = from_local(CAM_EAST, CAM_AHEAD, LAT0, LON0)


def bike_at(t_s: float) -> tuple[float, float]:
    return from_local(0.0, SPEED * t_s, LAT0, LON0)


def draw(index: int) -> Pixels:
    """A plain sky and street; the dome (dark disc, light rim, short bracket) where the camera sees it."""
    img = np.empty((H, W, 3), np.uint8)
    img[:] = (150, 170, 190)
    img[int(H * 0.6) :] = (90, 90, 90)
    d = CAM_AHEAD - SPEED * index / FPS
    if d <= 0.5:
        return img
    x = W / 2 + FOCAL * CAM_EAST / d
    y = H / 2 - FOCAL * (CAM_UP - EYE_M) / d
    s = min(40.0, max(10.0, FOCAL * 0.4 / d))
    r = s / 2
    if x + r >= W - 3 or y - 2 * r < 0:  # left the view: stop drawing
        return img
    x0, x1, y0, y1 = int(x - r - 2), int(x + r + 3), int(y - 2 * r), int(y + r + 3)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    win = img[y0:y1, x0:x1]
    win[int(y - r - s * 0.4) - y0 : int(y - r + 1) - y0, int(x - 2) - x0 : int(x + 2) - x0] = (60, 60, 60)
    dist = np.hypot(xx - x, yy - y)
    lower = yy >= y - r * 0.2
    win[(dist <= r) & lower] = (200, 200, 200)
    win[(dist <= r * 0.75) & lower] = (50, 50, 55)
    win[int(y - r * 0.3) - y0 : int(y - r * 0.1) + 1 - y0, int(x - r) - x0 : int(x + r) + 1 - x0] = (220, 220, 220)
    return img


def write_gpx(path: Path, seconds: int, start: datetime = T0) -> Path:
    """The bike's 1 Hz track from ``start`` for ``seconds``."""
    points = []
    for k in range(seconds + 1):
        lat, lon = bike_at(float(k))
        t = (start + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}"><time>{t}</time><hdop>0.6</hdop></trkpt>')
    path.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><trkseg>{''.join(points)}</trkseg></trk></gpx>",
        encoding="utf-8",
    )
    return path


def track_from(path: Path | None) -> PositionTrack:
    track = PositionTrack()
    if path is not None:
        for fix in GpxSource(path).fixes():
            track.add(fix)
    return track


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_detector(DetectorConfig(num_threads=2))


def ride(detector: Detector, positions: PositionTrack, out: Path) -> Summary:
    with FileSink(out) as sink:
        pipeline = Pipeline(detector, CameraModel(HFOV, 0.0, W), positions, Tracker(), sink, DEVICE)
        with SyntheticSource(W, H, N, FPS, T0, draw) as source:
            for frame in source:
                pipeline.process(frame)
        return pipeline.finish()


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []


def test_ride_past_one_dome(detector: Detector, tmp_path: Path) -> None:
    out = tmp_path / "sightings.jsonl"
    summary = ride(detector, track_from(write_gpx(tmp_path / "ride.gpx", 6)), out)
    assert summary.frames == N
    assert summary.detections >= 0.6 * 45  # in view ~48 frames; most of them detected
    assert summary.tracks_confirmed == 1
    assert summary.sightings_published == 1
    assert summary.no_fix_tracks == 0
    assert summary.sink.startswith("file ")
    [line] = lines(out)
    s = from_json(line)
    assert s.label == "dome"
    assert s.device == DEVICE
    assert len(s.rays) >= 3
    assert s.frames >= len(s.rays)
    assert s.model.name == detector.spec.name and s.model.sha256 == detector.spec.sha256
    assert s.tags == detector.spec.osm_tags("dome")  # the tags the model's sidecar gives the label
    assert s.tags["camera:type"] == "dome" and s.tags["surveillance:type"] == "camera"
    assert T0 <= s.first_seen_utc < s.last_seen_utc <= T0 + timedelta(seconds=N / FPS)
    east, north = to_local(s.observer.lat_deg, s.observer.lon_deg, LAT0, LON0)
    assert abs(east) < 3.0 and -1.0 < north < SPEED * N / FPS + 1.0  # on the street, within the ride
    for ray in s.rays:
        t = (ray.t_utc - T0).total_seconds()
        ray_east, ray_north = to_local(ray.lat_deg, ray.lon_deg, LAT0, LON0)
        assert abs(ray_east) < 0.5 and abs(ray_north - SPEED * t) < 0.5
        true_bearing = math.degrees(math.atan2(CAM_EAST, CAM_AHEAD - SPEED * t)) % 360
        assert abs(ray.bearing_deg - true_bearing) < 3.0
    if s.estimate is not None:
        e_east, e_north = to_local(s.estimate.lat_deg, s.estimate.lon_deg, CAM_LAT, CAM_LON)
        assert math.hypot(e_east, e_north) < 10.0


def test_track_covering_only_the_first_second(detector: Detector, tmp_path: Path) -> None:
    out = tmp_path / "sightings.jsonl"
    summary = ride(detector, track_from(write_gpx(tmp_path / "short.gpx", 1)), out)
    assert summary.sightings_published == 1 and summary.no_fix_tracks == 0
    s = from_json(lines(out)[0])
    # only observations within the fixes (+ tolerance 0.2 s) have rays; the rest had no fix
    assert all(r.t_utc <= T0 + timedelta(seconds=1.2) for r in s.rays)
    assert s.frames > len(s.rays)
    assert s.last_seen_utc > T0 + timedelta(seconds=3)


def test_no_track_publishes_nothing(detector: Detector, tmp_path: Path) -> None:
    out = tmp_path / "sightings.jsonl"
    summary = ride(detector, track_from(None), out)
    assert summary.tracks_confirmed == 1
    assert summary.sightings_published == 0
    assert summary.no_fix_tracks == 1
    assert lines(out) == []


def write_video(path: Path, frames: Iterator[Pixels] | list[Pixels]) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(FPS), options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated ride past one dome, as a video (written once for the module)."""
    video = tmp_path_factory.mktemp("video") / "ride.mp4"
    write_video(video, [draw(i) for i in range(N)])
    return video


def test_replay_cli(video_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = video_path
    gpx = write_gpx(tmp_path / "ride.gpx", 6)
    out = tmp_path / "out" / "sightings.jsonl"
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", str(video), "--track", str(gpx), "--out", str(out), "--threads", "2"])
    assert replay_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert f"{N} frames" in printed
    assert "1 tracks confirmed" in printed and "1 sightings published" in printed
    assert "0 tracks without a position fix" in printed and str(out) in printed
    [line] = lines(out)
    s = from_json(line)
    assert s.label == "dome"
    assert T0 <= s.first_seen_utc < T0 + timedelta(seconds=1)  # start_utc defaulted to the first fix
    geo = json.loads((out.parent / "sightings.geojson").read_text())  # the map file beside the JSON lines
    [feature] = geo["features"]
    assert feature["id"] == s.id and feature["properties"]["located"] == "estimate"
    assert s.estimate is not None and feature["geometry"]["coordinates"] == [s.estimate.lon_deg, s.estimate.lat_deg]
    assert f"map file: {out.parent / 'sightings.geojson'} (1 sightings in sightings.jsonl)" in printed


def test_replay_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    gpx = write_gpx(tmp_path / "ride.gpx", 2)
    args = parser.parse_args(["replay", str(tmp_path / "missing.mp4"), "--track", str(gpx)])
    assert replay_cli.run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.mp4" in err
    bad = tmp_path / "bad.gpx"
    bad.write_text("<gpx><trk>", encoding="utf-8")
    args = parser.parse_args(["replay", str(tmp_path / "x.mp4"), "--track", str(bad)])
    assert replay_cli.run(args) == 2
    assert "bad.gpx" in capsys.readouterr().err
    junk = tmp_path / "junk.nmea"
    junk.write_bytes(b"\x00\xff garbage\n$GPGGA,bad*00\n" * 50)
    args = parser.parse_args(["replay", str(tmp_path / "x.mp4"), "--track", str(junk)])
    assert replay_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.nmea: no position fixes in the track (100 lines" in err
    assert "50 bad checksums, 50 not NMEA" in err


def nmea(body: str) -> str:
    check = 0
    for ch in body:
        check ^= ord(ch)
    return f"${body}*{check:02X}\n"


def gga_only_log(path: Path, seconds: int) -> Path:
    """The ride as a GGA-only NMEA log: times of day, no date (as many loggers write)."""
    lines = []
    for k in range(seconds + 1):
        lat, lon = bike_at(float(k))
        t = T0 + timedelta(seconds=k)
        la = f"{int(lat):02d}{(lat - int(lat)) * 60:08.5f}"
        lo = f"{int(lon):03d}{(lon - int(lon)) * 60:08.5f}"
        lines.append(nmea(f"GPGGA,{t:%H%M%S}.00,{la},N,{lo},E,1,09,0.8,20.0,M,40.0,M,,"))
    path.write_text("".join(lines), encoding="ascii")
    return path


def test_a_gga_only_log_needs_its_date(
    video_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    log = gga_only_log(tmp_path / "ride.nmea", 6)
    args = parser.parse_args(["replay", str(video_path), "--track", str(log), "--threads", "2"])
    assert replay_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"sousveil replay: {log}: 7 fixes have a time but no date (no RMC or ZDA sentence):"
        " give the ride's date with --date YYYY-MM-DD\n"
    )
    dated = [*args_of(args), "--date", f"{T0:%Y-%m-%d}", "--out", str(tmp_path / "s.jsonl")]
    assert replay_cli.run(parser.parse_args(dated)) == 0
    [line] = lines(tmp_path / "s.jsonl")
    assert from_json(line).first_seen_utc.date() == T0.date()
    assert replay_cli.run(parser.parse_args([*args_of(args), "--date", "1 May"])) == 2
    assert "--date: not a date like 2026-05-01: '1 May'" in capsys.readouterr().err


def args_of(ns: argparse.Namespace) -> list[str]:
    return ["replay", str(ns.video), "--track", str(ns.track), "--threads", "2"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar(video_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bar = replay_cli.Progress(Tty(), total=120)
    assert (
        bar.line(30, 3.0, 1, 0)
        == f"[{'#' * 6}{'-' * 18}]  25%  30/120 frames, 10.0 fps, 1 tracks, 0 sightings, ETA 9 s"
    )
    assert bar.line(120, 10.0, 4, 4).startswith(f"[{'#' * 24}] 100%  120/120 frames")
    assert "ETA" not in bar.line(120, 10.0, 4, 4)
    assert replay_cli.Progress(Tty()).line(30, 3.0, 1, 0) == "30 frames, 10.0 fps, 1 tracks, 0 sightings"
    assert not replay_cli.Progress(io.StringIO()).enabled  # not a terminal: no bar in logs

    # a replay on a terminal ends with the full bar, on its own line
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    parser = argparse.ArgumentParser(prog="sousveil")
    replay_cli.add_parser(parser.add_subparsers(dest="command"))
    gpx = write_gpx(tmp_path / "ride.gpx", 6)
    args = ["replay", str(video_path), "--track", str(gpx), "--out", str(tmp_path / "s.jsonl"), "--threads", "2"]
    assert replay_cli.run(parser.parse_args(args)) == 0
    last = err.getvalue().split("\r")[-1]
    assert last.startswith(f"[{'#' * 24}] 100%  {N}/{N} frames") and last.endswith("\n")
