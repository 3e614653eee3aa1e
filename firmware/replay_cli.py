"""``sousveil replay``: run the ride pipeline on a recorded ride (a video and its GPX or NMEA track).

Wired into firmware/cli.py with ``replay_cli.add_parser(sub)``; ``run(args)`` returns the exit
status: 0 when the ride was processed, 2 with one line on stderr when it could not be.
See docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO
from xml.etree.ElementTree import ParseError

from detector import DetectorConfig, DetectorError, load_detector
from firmware.frames import FrameSourceError, VideoSource
from firmware.geometry import CameraModel
from firmware.pipeline import Pipeline
from firmware.position import Fix, GpxSource, NmeaSource, PositionTrack
from firmware.sinks import FileSink
from firmware.tracker import Tracker

DEFAULT_OUT = Path("out/sightings.jsonl")


class ReplayError(Exception):
    """A replay cannot start: bad track file, bad time, nothing to replay."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "replay",
        help="run the ride pipeline on a recorded video and its GPS track",
        description="Replay a recorded ride: detect, track, geotag, and write one sighting per camera passed.",
    )
    p.add_argument("video", type=Path, metavar="VIDEO", help="the ride's video file")
    p.add_argument("--track", type=Path, required=True, metavar="RIDE.gpx|.nmea", help="the ride's GPS track")
    p.add_argument(
        "--start-utc",
        metavar="ISO",
        help="UTC time of the video's first frame, e.g. 2026-05-01T08:30:00Z (default: the track's first fix)",
    )
    p.add_argument("--model", type=Path, metavar="M", help="model file (default: the project's model)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE.jsonl", help=f"default: {DEFAULT_OUT}")
    p.add_argument("--hfov", type=float, default=66.0, help="camera horizontal field of view, degrees (default 66)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw clockwise from the bike's heading (default 0)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="detector threads (default: cores, max 4)")
    p.add_argument("--every-n", type=int, default=1, metavar="N", help="keep every N-th frame (default 1)")
    p.set_defaults(func=run)
    return p


def load_fixes(path: Path) -> list[Fix]:
    """The fixes of a GPX (``.gpx``) or NMEA (anything else) file, in time order."""
    if not path.is_file():
        raise ReplayError(f"track file not found: {path}")
    try:
        source = GpxSource(path) if path.suffix.lower() == ".gpx" else NmeaSource(path)
        fixes = list(source.fixes())
    except ParseError as exc:
        raise ReplayError(f"{path}: not a readable GPX file ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    if not fixes:
        raise ReplayError(f"{path}: no position fixes in the track")
    return sorted(fixes, key=lambda f: f.t_s)


def parse_start(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(f"--start-utc: not an ISO-8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise ReplayError(f"--start-utc: give a time zone (e.g. 'Z' for UTC): {text!r}")
    return t


class Progress:
    """One line on a terminal, rewritten in place (nothing when the stream is not a tty)."""

    def __init__(self, stream: TextIO, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.interval_s = interval_s
        self._last = 0.0
        self._shown = False

    def update(self, pipeline: Pipeline, started: float, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = max(now - started, 1e-9)
        line = (
            f"{pipeline.frames} frames, {pipeline.frames / elapsed:.1f} fps, "
            f"{pipeline.tracker.stats.confirmed} tracks, {pipeline.published} sightings"
        )
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ReplayError, DetectorError, FrameSourceError) as exc:
        print(f"sousveil replay: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad --hfov, --yaw, --threads (CameraModel, DetectorConfig)
        print(f"sousveil replay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output file
        print(f"sousveil replay: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.every_n < 1:
        raise ReplayError(f"--every-n: must be >= 1, got {args.every_n}")
    if args.threads is not None and args.threads < 1:
        raise ReplayError(f"--threads: must be >= 1, got {args.threads}")
    fixes = load_fixes(args.track)
    positions = PositionTrack(max_fixes=max(2, len(fixes)))
    for fix in fixes:
        positions.add(fix)
    start = parse_start(args.start_utc) if args.start_utc else fixes[0].t_utc
    config = DetectorConfig(model=args.model) if args.threads is None else DetectorConfig(args.model, args.threads)
    detector = load_detector(config)
    with VideoSource(args.video, start, every_n=args.every_n) as source:
        width, _ = source.size
        camera = CameraModel(hfov_deg=args.hfov, yaw_deg=args.yaw, width_px=width)
        with FileSink(args.out) as sink:
            # a fresh pseudonymous device id per replay: nothing links two rides
            pipeline = Pipeline(detector, camera, positions, Tracker(), sink, secrets.token_hex(8))
            progress = Progress(sys.stderr)
            started = time.monotonic()
            try:
                for frame in source:
                    pipeline.process(frame)
                    progress.update(pipeline, started)
                progress.update(pipeline, started, force=True)
            finally:
                progress.done()
            summary = pipeline.finish()
    if source.damaged:
        print(
            f"sousveil replay: {args.video}: video damaged or truncated; replayed what could be read", file=sys.stderr
        )
    print(summary)
    return 0
