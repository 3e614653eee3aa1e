"""``sousveil run``: the ride pipeline live, everything from the config file.

Frames from ``[camera]`` (the Pi camera with ``picamera2``, or ``video`` / ``images`` from
``path``), positions from ``[gps]`` (gpsd live, read on a
thread into the PositionTrack; or a GPX/NMEA file from ``path``), then the same pipeline,
privacy filter and sink as ``sousveil replay``. SIGTERM and SIGINT (or a long press of the
``[gpio]`` button) stop it cleanly: the open tracks are finished and the sink flushed, exit
status 0. Under systemd it notifies READY/WATCHDOG/STATUS/STOPPING (firmware/sdnotify.py);
WATCHDOG only from the frame loop, so a hung camera stops the pings. A short press of the
button pauses and resumes capture; the LED shows the current fix state (gpsd's mode and fix
age live, the track at the frame's time from a file), ERROR while gpsd is unreachable and,
for ``ERROR_HOLD_S``, after a failure before the process exits. Every ~5 s a status object
(firmware/device_status.py) goes to the retained MQTT status topic. See docs/service.md.
Wired into firmware/cli.py with ``run_cli.add_parser(sub)``; see docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from detector import load_detector
from firmware import device_status as ds
from firmware.camera_pi import PiCameraSource, load_picamera2
from firmware.config import Config
from firmware.frames import Frame, FrameSource, ImageFolderSource, VideoSource
from firmware.gpio import LedState, Panel
from firmware.pipeline import Pipeline
from firmware.position import FramePosition, GpsdClient, GpsdReader, PositionTrack
from firmware.privacy import utc_now
from firmware.replay_cli import (
    ERRORS,
    Progress,
    ReplayError,
    SinkChoice,
    camera_model,
    finish,
    load_fixes,
    make_pipeline,
    open_sink,
    read_config,
    resolve_device_id,
    track_of,
)
from firmware.sdnotify import Notifier
from firmware.sinks import MqttSink

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0
ERROR_HOLD_S = 3.0
"""How long the LED shows ERROR after a failure before ``sousveil run`` exits (a SIGTERM cuts it short)."""


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
        self.reason = ""

    def set(self, signum: int, frame: FrameType | None = None) -> None:
        self.reason = f"signal {signum}"
        self._event.set()

    def stop(self, reason: str) -> None:
        """Stop for another reason than a signal (the button's long press)."""
        self.reason = reason
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (or ``timeout`` seconds); whether it is set."""
        return self._event.wait(timeout)


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
    return track_of(fixes, gps.max_gap_s), None, fixes[0].t_utc


def open_frames(config: Config, start_utc: datetime, picamera2_module: Any = None) -> FrameSource:
    """The ``[camera]`` source; ``picamera2_module`` stands for ``import picamera2`` (tests), which
    only firmware/camera_pi.py ever imports. A video is thinned to ``[camera] fps``, the rate the
    Pi camera runs at, so a recorded ride is processed as the bike would process it."""
    cam = config.camera
    if cam.source == "picamera2":
        return PiCameraSource(cam.picamera2(), picamera2_module)
    if cam.path is None:
        raise ReplayError(f"camera.path: required with source = {cam.source!r}")
    if cam.source == "video":
        return VideoSource(cam.path, start_utc, target_fps=cam.fps)
    return ImageFolderSource(cam.path)


def fix_led_state(reader: GpsdReader | None, positions: PositionTrack, frame: Frame) -> LedState:
    """The LED for the current fix state, never "a fix was seen once".

    Live (gpsd): ERROR while gpsd cannot be reached (never connected, or the connection lost);
    RUNNING while the current TPV mode is 2D/3D and the last fix is at most ``max_gap_s`` old
    (older fixes cannot place a frame, docs/position.md); else WAITING_FOR_FIX. From a file:
    RUNNING when the track gives this frame a position, else WAITING_FOR_FIX.
    """
    if reader is not None:
        state = reader.client.state()
        if not state.connected and state.last_error is not None:
            return LedState.ERROR
        return LedState.RUNNING if state.has_fix(positions.max_gap_s) else LedState.WAITING_FOR_FIX
    return LedState.RUNNING if isinstance(positions.at(frame.t_utc), FramePosition) else LedState.WAITING_FOR_FIX


@dataclass
class LiveStats:
    """What the frame loop has done so far (the status message and the tests look at it)."""

    frames: int = 0  # processed by the pipeline
    skipped: int = 0  # pulled from the camera while paused, not processed
    paused: bool = False


class StatusReporter:
    """Every ``interval_s``: the device status to systemd (STATUS=) and to the MQTT status topic.

    ``source``: the camera's own counts (frames it dropped, clock steps) when it is the Pi camera.
    """

    def __init__(
        self,
        notifier: Notifier,
        choice: SinkChoice,
        reader: GpsdReader | None,
        source: FrameSource,
        *,
        interval_s: float = STATUS_INTERVAL_S,
        thermal_path: Path = ds.THERMAL_PATH,
        throttled_path: Path = ds.THROTTLED_PATH,
    ) -> None:
        self.notifier, self.choice, self.reader = notifier, choice, reader
        self.camera = source if isinstance(source, PiCameraSource) else None
        self.interval_s = interval_s
        self.thermal_path, self.throttled_path = thermal_path, throttled_path
        self._last_at = time.monotonic()
        self._last_frames = 0

    def maybe(self, pipeline: Pipeline, stats: LiveStats) -> None:
        now = time.monotonic()
        elapsed = now - self._last_at
        if elapsed < self.interval_s:
            return
        fps = (stats.frames - self._last_frames) / elapsed if elapsed > 0 else None
        self._last_at, self._last_frames = now, stats.frames
        timings = getattr(pipeline.detector, "last_timings", None)
        inference_ms = None if timings is None or stats.frames == 0 else float(timings.total_s) * 1000.0
        sink = self.choice.sink
        outbox = None if self.choice.outbox is None else self.choice.outbox.stats()  # one look per tick
        status = ds.device_status(
            fps=fps,
            inference_ms=inference_ms,
            gps=None if self.reader is None else self.reader.client.state(),
            outbox_depth=None if outbox is None else outbox.depth,
            paused=stats.paused,
            frames=stats.frames,
            skipped=stats.skipped,
            published=pipeline.published,
            outbox_overflowed=sink.overflowed if isinstance(sink, MqttSink) else 0,
            outbox_dropped=0 if outbox is None else outbox.dropped_total - self.choice.dropped_before,
            camera_dropped=None if self.camera is None else self.camera.dropped,
            camera_clock_steps=None if self.camera is None else self.camera.clock_steps,
            thermal_path=self.thermal_path,
            throttled_path=self.throttled_path,
        )
        self.notifier.status(ds.status_line(status))
        if isinstance(sink, MqttSink):
            sink.publisher.publish_status(status)


def open_panel(config: Config, flag: StopFlag, pin_factory: Any) -> Panel | None:
    """The ``[gpio]`` panel (LED STARTING), or None when disabled; a long press sets ``flag``."""
    if not config.gpio.enabled:
        return None
    try:
        return Panel(
            config.gpio.settings(),
            on_shutdown=lambda: flag.stop("a long press of the button"),
            pin_factory=pin_factory,
        )
    except Exception as exc:  # gpiozero missing, no pin factory, a pin in use: one line, exit 2
        raise ReplayError(f"[gpio]: cannot open the pins: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ERRORS as exc:
        print(f"sousveil run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    flag = StopFlag()
    with stop_on_signals(flag):  # from the start: a signal while the model loads stops cleanly too
        return run_live(args.config, flag=flag)


def run_live(
    config_path: Path | None,
    *,
    flag: StopFlag | None = None,
    picamera2_module: Any = None,
    pin_factory: Any = None,
    environ: Mapping[str, str] | None = None,
    status_interval_s: float = STATUS_INTERVAL_S,
    stats: LiveStats | None = None,
    thermal_path: Path = ds.THERMAL_PATH,
    throttled_path: Path = ds.THROTTLED_PATH,
    error_hold_s: float = ERROR_HOLD_S,
) -> int:
    """Run until the frames end or ``flag`` is set; 0 after a clean finish. Raises the ``ERRORS``.

    ``picamera2_module`` stands for ``import picamera2``, ``pin_factory`` is gpiozero's,
    ``environ`` is where ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` are read (default os.environ).
    A failure once the ``[gpio]`` panel is open shows ERROR on the LED for ``error_hold_s``
    (or until ``flag`` is set) before it is raised.
    """
    flag = flag if flag is not None else StopFlag()
    stats = stats if stats is not None else LiveStats()
    config, state = read_config(config_path)
    if config.camera.source == "picamera2":
        picamera2_module = load_picamera2(picamera2_module)  # before anything slow: a clear error first
    notifier = Notifier.from_env(environ)
    panel = open_panel(config, flag, pin_factory)
    try:
        positions, reader, first_fix = open_positions(config)
        # a recorded video starts at its track's first fix; live (gpsd) at the wall clock
        start = first_fix if first_fix is not None else utc_now()
        detector = load_detector(config.detector)
        with open_frames(config, start, picamera2_module) as source:
            width, _ = source.size
            camera = camera_model(config, width)
            device = resolve_device_id(config, prog="sousveil run")
            choice = open_sink(config, state, device)
            if reader is not None:
                reader.start()
            try:
                pipeline = make_pipeline(config, detector, camera, positions, choice.sink, device)
                reporter = StatusReporter(
                    notifier,
                    choice,
                    reader,
                    source,
                    interval_s=status_interval_s,
                    thermal_path=thermal_path,
                    throttled_path=throttled_path,
                )
                notifier.ready(f"camera ({config.camera.source}) and model up")
                _frame_loop(source, pipeline, positions, reader, panel, notifier, reporter, flag, stats)
                notifier.stopping()
                if flag:
                    print(f"sousveil run: stopped by {flag.reason}; finishing", file=sys.stderr)
                finish(pipeline, choice)
            finally:
                if reader is not None:
                    reader.stop()
                choice.sink.close()
    except Exception:
        if panel is not None:
            _show_error(panel, flag, error_hold_s)
        raise
    finally:
        if panel is not None:
            panel.close()
    return 0


def _show_error(panel: Panel, flag: StopFlag, hold_s: float) -> None:
    """ERROR on the LED for ``hold_s`` (a stop request ends it early), so the rider sees why it stopped."""
    try:
        panel.set_state(LedState.ERROR)
    except Exception:  # the pins themselves failed: nothing to show
        log.debug("cannot show ERROR on the LED", exc_info=True)
        return
    flag.wait(hold_s)


def _frame_loop(
    source: FrameSource,
    pipeline: Pipeline,
    positions: PositionTrack,
    reader: GpsdReader | None,
    panel: Panel | None,
    notifier: Notifier,
    reporter: StatusReporter,
    flag: StopFlag,
    stats: LiveStats,
) -> None:
    """Per frame: feed the watchdog (the only place it is fed: no frames, no pings), set the LED,
    then process the frame, or, while paused, drop it unprocessed (counted in ``skipped``)."""
    progress = Progress(sys.stderr)
    started = time.monotonic()
    try:
        for frame in source:
            notifier.watchdog()  # every frame, paused or not: the camera is alive
            if flag:
                break
            if panel is not None:
                stats.paused = panel.paused
                # while paused the panel shows PAUSED, unless this is ERROR (gpsd lost)
                panel.set_state(fix_led_state(reader, positions, frame))
            if stats.paused:
                stats.skipped += 1  # read (the camera and the watchdog stay alive), never detected
                reporter.maybe(pipeline, stats)
                continue
            before = pipeline.published
            pipeline.process(frame)
            stats.frames += 1
            if panel is not None and pipeline.published > before:
                panel.sighting()  # once per frame: a second beep would only cut the first short
            progress.update(pipeline, started)
            reporter.maybe(pipeline, stats)
    finally:
        progress.done()
