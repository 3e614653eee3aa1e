"""``sousveil replay``: run the ride pipeline on a recorded ride (a video and its GPX or NMEA track).

Wired into firmware/cli.py with ``replay_cli.add_parser(sub)``; ``run(args)`` returns the exit
status: 0 when the ride was processed, 2 with one line on stderr when it could not be.
The parts shared with ``sousveil run`` (firmware/run_cli.py) live here too: the config, the
device id, the sink (MQTT through the outbox, else the file), the detector. See docs/pipeline.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TextIO
from xml.etree.ElementTree import ParseError

from detector import DetectorConfig, DetectorError, load_detector
from detector.detector import Detector
from firmware.config import Config, ConfigFileError, default_state_dir, load_config
from firmware.frames import FrameSourceError, VideoSource
from firmware.geometry import CameraModel
from firmware.mqtt import MqttConfigError, MqttPublisher, MqttSettings
from firmware.outbox import Outbox, OutboxError
from firmware.pipeline import Pipeline, Summary
from firmware.position import Fix, GpxSource, NmeaSource, PositionTrack
from firmware.privacy import HoldError, HoldStore, PrivacyFilter, device_id, new_device_id
from firmware.sinks import FileSink, MqttSink, RecordingSink, Sink, geojson_beside, read_jsonl, write_geojson
from firmware.tracker import Tracker

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("out/sightings.jsonl")
"""The file sink's file without a config, or with a config that names no ``[output] file``."""
LOCAL_BROKER = ("127.0.0.1", 1883)
"""Where the embedded default looks for a broker when the config has no ``[mqtt]``."""
PROBE_TIMEOUT_S = 0.3
MQTT_FLUSH_S = 10.0
"""How long the end of a run waits for the outbox to drain (what is left goes on the next run)."""


class ReplayError(Exception):
    """A replay cannot start: bad track file, bad time, nothing to replay."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "replay",
        help="run the ride pipeline on a recorded video and its GPS track",
        description="Replay a recorded ride: detect, track, geotag, and publish one sighting per camera passed.",
    )
    p.add_argument("video", type=Path, metavar="VIDEO", help="the ride's video file")
    p.add_argument(
        "--track", type=Path, metavar="RIDE.gpx|.nmea", help="the ride's GPS track (default: the config's [gps] path)"
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="the TOML config (default: the embedded defaults)")
    p.add_argument(
        "--start-utc",
        metavar="ISO",
        help="UTC time of the video's first frame, e.g. 2026-05-01T08:30:00Z (default: the track's first fix)",
    )
    p.add_argument("--date", metavar="YYYY-MM-DD", help="UTC date of an NMEA log that has times but no date (GGA only)")
    p.add_argument("--model", type=Path, metavar="M", help="model file (default: the config's, else the project's)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="write sightings to this file, whatever the config says (default: MQTT if configured or a broker"
        f" answers on localhost:1883, else the config's [output] file or {DEFAULT_OUT})",
    )
    p.add_argument(
        "--geojson",
        type=Path,
        metavar="FILE",
        help="write a GeoJSON map file here: this run's sightings (with MQTT), or every sighting in the"
        " --out/[output] file (default with the file sink: beside it, .geojson)",
    )
    p.add_argument("--hfov", type=float, default=None, help="camera horizontal field of view, degrees (default 66)")
    p.add_argument("--yaw", type=float, default=None, help="camera yaw clockwise from the bike's heading (default 0)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="detector threads (default: cores, max 4)")
    p.add_argument("--every-n", type=int, default=1, metavar="N", help="keep every N-th frame (default 1)")
    p.set_defaults(func=run)
    return p


# ---- shared with ``sousveil run`` ----


def read_config(path: Path | None) -> tuple[Config, Path]:
    """The config (strict; None: the embedded defaults) and the state dir it was read with."""
    state = default_state_dir()
    return load_config(path, state_dir=state), state


def resolve_device_id(config: Config, err: TextIO | None = None, prog: str = "sousveil") -> str:
    """The pseudonymous device id from ``[device]``: the fixed ``id`` (bound to a broker account),
    else the id file (rotation); a one-off id, said on ``err``, only when the id file cannot be written."""
    if config.device.id is not None:
        return config.device.id
    try:
        return device_id(config.device.id_file, config.device.rotate_days)
    except OSError as exc:
        print(
            f"{prog}: cannot keep the device id in {config.device.id_file} ({exc.strerror or exc});"
            " using a one-off id for this run",
            file=err or sys.stderr,
        )
        return new_device_id()


def broker_listening(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when something accepts a TCP connection at ``host``:``port`` within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class SinkChoice:
    """The sink a run publishes to; ``outbox`` is set for MQTT (to count what is still queued)."""

    sink: Sink
    outbox: Outbox | None = None
    why: str = ""
    dropped_before: int = 0  # the outbox's dropped_total when the run began
    geojson: Path | None = None  # written at the end of the run (see ``write_map_file``)

    def queued(self) -> int:
        return 0 if self.outbox is None else self.outbox.stats().depth

    def dropped(self) -> int:
        """Rows the outbox dropped (``when_full = "drop_oldest"``) during this run."""
        return 0 if self.outbox is None else self.outbox.stats().dropped_total - self.dropped_before


def overflow_path(outbox: Path) -> Path:
    """Where sightings the full outbox refused are kept until it has room: beside it."""
    return outbox.with_name(outbox.name + ".overflow.jsonl")


def _mqtt_sink(settings: MqttSettings, config: Config, device: str) -> SinkChoice:
    if not settings.client_id:
        settings = dataclasses.replace(settings, client_id=f"sousveil-{device}")  # a stable session per device
    ob = config.outbox
    ob.path.parent.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(ob.path, max_rows=ob.max_rows, max_bytes=ob.max_bytes, when_full=ob.when_full)
    publisher: MqttPublisher | None = None
    try:
        dropped_before = outbox.stats().dropped_total
        publisher = MqttPublisher(settings, outbox, device)
        publisher.start()
        sink = MqttSink(publisher, overflow_path(ob.path))
    except BaseException:
        if publisher is not None:
            publisher.close()
        outbox.close()
        raise
    return SinkChoice(sink, outbox, dropped_before=dropped_before)


def open_sink(config: Config, state_dir: Path, device: str, out: Path | None = None) -> SinkChoice:
    """``out`` -> that file; ``[mqtt]`` -> the broker through the outbox; else the embedded
    default: a broker answering on localhost:1883 (anonymous, default topics, the outbox in
    the state dir), else the file sink (``[output] file``, else ``out/sightings.jsonl``)."""
    if out is not None:
        return SinkChoice(FileSink(out), why="--out", geojson=geojson_beside(out))
    if config.mqtt is not None:
        choice = _mqtt_sink(config.mqtt, config, device)
        choice.why = "[mqtt]"
        return choice
    host, port = LOCAL_BROKER
    if broker_listening(host, port):
        choice = _mqtt_sink(MqttSettings(host=host, port=port), config, device)
        choice.why = f"a broker answered on {host}:{port}"
        return choice
    default_file = state_dir / "sightings.jsonl"
    path = DEFAULT_OUT if config.output.file == default_file else config.output.file
    return SinkChoice(FileSink(path), why=f"no [mqtt] and no broker on {host}:{port}", geojson=geojson_beside(path))


def record_geojson(choice: SinkChoice, path: Path | None) -> SinkChoice:
    """``--geojson PATH``: also write this run's sightings there (beside MQTT, or instead of the
    file sink's default next to its JSON lines)."""
    if path is None:
        return choice
    sink = choice.sink if isinstance(choice.sink, FileSink) else RecordingSink(choice.sink)
    return dataclasses.replace(choice, sink=sink, geojson=path)


def write_map_file(choice: SinkChoice, out: TextIO) -> None:
    """The GeoJSON of the run: with the file sink, every sighting in its file (all runs); with
    MQTT and ``--geojson``, the sightings of this run."""
    if choice.geojson is None:
        return
    sink = choice.sink
    if isinstance(sink, FileSink):
        count = write_geojson(read_jsonl(sink.path), choice.geojson)
        print(f"map file: {choice.geojson} ({count} sightings in {sink.path.name})", file=out)
    elif isinstance(sink, RecordingSink):
        count = write_geojson(sink.sightings, choice.geojson)
        print(f"map file: {choice.geojson} ({count} sightings of this run)", file=out)


def detector_config(config: Config, model: Path | None, threads: int | None) -> DetectorConfig:
    """``[detector]`` with the command line's ``--model`` and ``--threads`` on top."""
    if threads is not None and threads < 1:
        raise ReplayError(f"--threads: must be >= 1, got {threads}")
    det = config.detector
    if model is not None:
        det = dataclasses.replace(det, model=model)
    if threads is not None:
        det = dataclasses.replace(det, num_threads=threads)
    return det


def camera_model(config: Config, width: int, hfov: float | None = None, yaw: float | None = None) -> CameraModel:
    """``[camera]`` hfov/yaw (the flags win when given) at the frames' width."""
    cam = config.camera
    return CameraModel(
        hfov_deg=cam.hfov_deg if hfov is None else hfov, yaw_deg=cam.yaw_deg if yaw is None else yaw, width_px=width
    )


def make_privacy(config: Config, sink: Sink) -> PrivacyFilter:
    """The privacy filter of ``[privacy]``. Publishing to the broker, its hold is the hold file
    (when a zone delays, or an earlier run left sightings there), so what a ride held is
    published by a later run once due; with a local file sink it holds in memory, so nothing a
    replay into a file held is ever published to a broker by a later run."""
    settings = config.privacy
    path = settings.hold_file
    publishes = isinstance(sink.inner if isinstance(sink, RecordingSink) else sink, MqttSink)
    delays = any(z.action == "delay" for z in settings.zones)
    if path is None or not publishes or not (delays or path.exists()):
        return PrivacyFilter(settings)
    return PrivacyFilter(settings, hold=HoldStore(path))


def make_pipeline(
    config: Config, detector: Detector, camera: CameraModel, positions: PositionTrack, sink: Sink, device: str
) -> Pipeline:
    return Pipeline(
        detector,
        camera,
        positions,
        Tracker(config.tracker),
        sink,
        device,
        privacy=make_privacy(config, sink),
    )


def finish(pipeline: Pipeline, choice: SinkChoice, out: TextIO | None = None) -> Summary:
    """Finish the pipeline, wait for the outbox (MQTT) to drain, print the summary and where sightings went."""
    out = out or sys.stdout
    summary = pipeline.finish(MQTT_FLUSH_S if choice.outbox is not None else 5.0)
    print(summary, file=out)
    privacy = pipeline.privacy
    if summary.privacy_held and privacy is not None and privacy.store is not None:
        print(
            f"{summary.privacy_held} sightings in delay zones are not due yet: kept in {privacy.store.path},"
            " a later run publishes each once its time has come",
            file=out,
        )
    elif summary.privacy_held:
        print(
            f"{summary.privacy_held} sightings in delay zones were not yet due and were not published",
            file=out,
        )
    queued = choice.queued()
    sink = choice.sink.inner if isinstance(choice.sink, RecordingSink) else choice.sink
    if isinstance(sink, MqttSink):
        if sink.requeued:
            print(f"{sink.requeued} sightings an earlier run could not queue went back into the outbox", file=out)
        if sink.overflowed:
            print(
                f"{sink.overflowed} sightings did not fit in the full outbox: kept in {sink.overflow}; the next"
                " run moves them into the outbox as it empties (raise [outbox] max_rows/max_bytes?)",
                file=out,
            )
        if sink.unsaved:
            print(
                f"{sink.unsaved} sightings could be stored neither in the outbox nor in {sink.overflow}"
                " (disk full?): they are lost when this process ends",
                file=out,
            )
    dropped = choice.dropped()
    if dropped:
        print(
            f"the full outbox dropped its {dropped} oldest unsent sightings ([outbox] when_full = 'drop_oldest')",
            file=out,
        )
    if choice.outbox is not None:
        if queued:
            print(
                f"{queued} sightings still queued in the outbox {choice.outbox.path}: they go on the next run"
                " (nothing is lost)",
                file=out,
            )
        elif not (isinstance(sink, MqttSink) and (sink.overflowed or sink.unsaved)):
            print(f"every sighting was delivered ({choice.why})", file=out)
    try:
        write_map_file(choice, out)
    except OSError as err:
        print(f"the map file {choice.geojson} could not be written: {err}", file=out)
    if privacy is not None:
        privacy.close()
    return summary


def load_fixes(path: Path, date_utc: date | None = None) -> list[Fix]:
    """The fixes of a GPX (``.gpx``) or NMEA (anything else) file, in time order. ``date_utc``
    dates an NMEA log that has times but no date (GGA only, no RMC or ZDA)."""
    if not path.is_file():
        raise ReplayError(f"track file not found: {path}")
    nmea: NmeaSource | None = None
    try:
        if path.suffix.lower() == ".gpx":
            fixes = list(GpxSource(path).fixes())
        else:
            nmea = NmeaSource(path, date_utc)
            fixes = list(nmea.fixes())
    except ParseError as exc:
        raise ReplayError(f"{path}: not a readable GPX file ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    if nmea is not None:
        st = nmea.stats
        skipped = st.bad_checksum + st.garbage
        if skipped:
            log.warning(
                "%s: skipped %d of %d lines (%d bad checksums, %d not NMEA)",
                path,
                skipped,
                st.lines,
                st.bad_checksum,
                st.garbage,
            )
        if not fixes and st.undated:
            raise ReplayError(
                f"{path}: {st.undated} fixes have a time but no date (no RMC or ZDA sentence):"
                " give the ride's date with --date YYYY-MM-DD"
            )
        if not fixes:
            raise ReplayError(
                f"{path}: no position fixes in the track ({st.lines} lines: {st.sentences} valid sentences,"
                f" {st.no_fix} without a fix, {st.bad_checksum} bad checksums, {st.garbage} not NMEA)"
            )
    if not fixes:
        raise ReplayError(f"{path}: no position fixes in the track")
    return sorted(fixes, key=lambda f: f.t_s)


def track_of(fixes: list[Fix], max_gap_s: float) -> PositionTrack:
    """A position track holding all of ``fixes`` (a recorded ride)."""
    track = PositionTrack(max_gap_s=max_gap_s, max_fixes=max(2, len(fixes)))
    for fix in fixes:
        track.add(fix)
    return track


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReplayError(f"--date: not a date like 2026-05-01: {text!r}") from exc


def parse_start(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(f"--start-utc: not an ISO-8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise ReplayError(f"--start-utc: give a time zone (e.g. 'Z' for UTC): {text!r}")
    return t


class Progress:
    """A progress bar on one terminal line, rewritten in place (nothing when the stream is not a
    tty): with ``total`` frames known, ``[#####-----]  45%  54/120 frames, 8.1 fps, ETA 8 s, ...``;
    without (a live camera), the counts only."""

    WIDTH = 24

    def __init__(self, stream: TextIO, interval_s: float = 0.5, total: int = 0) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.interval_s = interval_s
        self.total = max(0, total)
        self._last = 0.0
        self._shown = False

    def line(self, frames: int, elapsed_s: float, tracks: int, sightings: int) -> str:
        fps = frames / max(elapsed_s, 1e-9)
        counts = f"{fps:.1f} fps, {tracks} tracks, {sightings} sightings"
        if not self.total:
            return f"{frames} frames, {counts}"
        done = min(frames / self.total, 1.0)
        filled = round(done * self.WIDTH)
        eta = f", ETA {max(0.0, (self.total - frames) / fps):.0f} s" if fps > 0 and frames < self.total else ""
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"[{bar}] {100 * done:3.0f}%  {frames}/{self.total} frames, {counts}{eta}"

    def update(self, pipeline: Pipeline, started: float, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        text = self.line(pipeline.frames, now - started, pipeline.tracker.stats.confirmed, pipeline.published)
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


ERRORS = (
    ReplayError,
    DetectorError,
    FrameSourceError,
    ConfigFileError,  # one line naming the file and the key
    MqttConfigError,
    OutboxError,
    HoldError,
    ValueError,  # bad --hfov, --yaw (CameraModel)
    OSError,  # the output file, the outbox's folder
)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ERRORS as exc:
        print(f"sousveil replay: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.every_n < 1:
        raise ReplayError(f"--every-n: must be >= 1, got {args.every_n}")
    config, state = read_config(args.config)
    det_config = detector_config(config, args.model, args.threads)
    track_path = args.track if args.track is not None else config.gps.path
    if track_path is None:
        raise ReplayError("no track: give --track RIDE.gpx|.nmea (or [gps] path in the config)")
    fixes = load_fixes(track_path, parse_date(args.date) if args.date else None)
    positions = track_of(fixes, config.gps.max_gap_s)
    start = parse_start(args.start_utc) if args.start_utc else fixes[0].t_utc
    detector = load_detector(det_config)
    with VideoSource(args.video, start, every_n=args.every_n) as source:
        width, _ = source.size
        camera = camera_model(config, width, args.hfov, args.yaw)
        device = resolve_device_id(config, prog="sousveil replay")
        choice = record_geojson(open_sink(config, state, device, args.out), args.geojson)
        try:
            pipeline = make_pipeline(config, detector, camera, positions, choice.sink, device)
            progress = Progress(sys.stderr, total=-(-source.expected_frames // args.every_n))
            started = time.monotonic()
            try:
                for frame in source:
                    pipeline.process(frame)
                    progress.update(pipeline, started)
                progress.update(pipeline, started, force=True)
            finally:
                progress.done()
            finish(pipeline, choice)
        finally:
            choice.sink.close()
    if source.damaged:
        print(
            f"sousveil replay: {args.video}: video damaged or truncated; replayed what could be read", file=sys.stderr
        )
    return 0
