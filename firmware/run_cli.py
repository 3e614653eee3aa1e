"""``sousveil run``: the ride pipeline live, everything from the config file.

Frames from ``[camera]`` (``video`` or ``images`` from ``path`` for now; the Pi camera adapter,
``picamera2``, comes with the on-bike work), positions from ``[gps]`` (gpsd live, read on a
thread into the PositionTrack; or a GPX/NMEA file from ``path``), then the same pipeline,
privacy filter and sink as ``sousveil replay``. SIGTERM and SIGINT stop it cleanly: the
open tracks are finished and the sink flushed, exit status 0. Wired into firmware/cli.py
with ``run_cli.add_parser(sub)``; see docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType

from detector import load_detector
from firmware.config import Config
from firmware.frames import FrameSource, ImageFolderSource, VideoSource
from firmware.position import GpsdClient, GpsdReader, PositionTrack
from firmware.privacy import utc_now
from firmware.replay_cli import (
    ERRORS,
    Progress,
    ReplayError,
    camera_model,
    detector_config,
    finish,
    load_fixes,
    make_pipeline,
    open_sink,
    read_config,
    resolve_device_id,
)

PICAMERA_LATER = (
    "camera.source: 'picamera2' is not supported yet: the Pi camera adapter comes with the on-bike issue;"
    " use source = 'video' or 'images' with a path for now"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="run the ride pipeline live from the config (camera, GPS, sink)",
        description="Run live: frames from [camera], positions from [gps], sightings to [mqtt] or the file sink.",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="the TOML config (default: the embedded defaults)")
    p.set_defaults(func=run)
    return p


class StopFlag:
    """Set by SIGTERM/SIGINT; the frame loop looks at it after every frame."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def set(self, signum: int, frame: FrameType | None = None) -> None:
        self.signal = signum
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """SIGTERM and SIGINT set ``flag`` (main thread only) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {sig: signal.signal(sig, flag.set) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def open_positions(config: Config) -> tuple[PositionTrack, GpsdReader | None, datetime | None]:
    """The position track, the gpsd reader feeding it (live) and the first fix's time (files)."""
    gps = config.gps
    if gps.source == "gpsd":
        track = PositionTrack(max_gap_s=gps.max_gap_s)
        reader = GpsdReader(GpsdClient(gps.host, gps.port), track)
        return track, reader, None
    if gps.path is None:
        raise ReplayError(f"gps.path: required with source = {gps.source!r} (the GPX or NMEA file)")
    fixes = load_fixes(gps.path)
    track = PositionTrack(max_gap_s=gps.max_gap_s, max_fixes=max(2, len(fixes)))
    for fix in fixes:
        track.add(fix)
    return track, None, fixes[0].t_utc


def open_frames(config: Config, start_utc: datetime) -> FrameSource:
    cam = config.camera
    if cam.source == "picamera2":
        raise ReplayError(PICAMERA_LATER)
    if cam.path is None:
        raise ReplayError(f"camera.path: required with source = {cam.source!r}")
    if cam.source == "video":
        return VideoSource(cam.path, start_utc)
    return ImageFolderSource(cam.path)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ERRORS as exc:
        print(f"sousveil run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    flag = StopFlag()
    with stop_on_signals(flag):  # from the start: a signal while the model loads stops cleanly too
        return _run_until(args, flag)


def _run_until(args: argparse.Namespace, flag: StopFlag) -> int:
    config, state = read_config(args.config)
    if config.camera.source == "picamera2":
        raise ReplayError(PICAMERA_LATER)
    det_config = detector_config(config, None, None)
    positions, reader, first_fix = open_positions(config)
    # a recorded video starts at its track's first fix; live (gpsd) at the wall clock
    start = first_fix if first_fix is not None else utc_now()
    detector = load_detector(det_config)
    with open_frames(config, start) as source:
        width, _ = source.size
        camera = camera_model(config, width)
        device = resolve_device_id(config, prog="sousveil run")
        choice = open_sink(config, state, device)
        if reader is not None:
            reader.start()
        try:
            pipeline = make_pipeline(config, detector, camera, positions, choice.sink, device)
            progress = Progress(sys.stderr)
            started = time.monotonic()
            try:
                for frame in source:
                    if flag:
                        break
                    pipeline.process(frame)
                    progress.update(pipeline, started)
            finally:
                progress.done()
            if flag:
                print(f"sousveil run: stopped by signal {flag.signal}; finishing", file=sys.stderr)
            finish(pipeline, choice)
        finally:
            if reader is not None:
                reader.stop()
            choice.sink.close()
    return 0
