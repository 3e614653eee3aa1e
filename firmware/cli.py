"""The ``sousveil`` command: ``main(argv) -> exit code``; one line per error, traceback on --debug."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from broker import cli as broker_cli
from detector import DetectorConfig, DetectorError, TilingConfig, load_detector
from detector.detection import Detection
from firmware import replay_cli, run_cli
from firmware.check import DEFAULT_BROKER_TIMEOUT_S, DEFAULT_GPS_WAIT_S
from mapper import cli as map_cli

log = logging.getLogger("sousveil")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
EXIT_OK, EXIT_PARTIAL, EXIT_ERROR = 0, 1, 2


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model .tflite (or its .toml sidecar); default: the project's model")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: cores, at most 4)")
    p.add_argument("--threshold", type=float, default=None, help="score threshold (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sousveil", description="Map street surveillance cameras from a bike.")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    replay_cli.add_parser(sub)
    run_cli.add_parser(sub)
    broker_cli.add_parser(sub)
    map_cli.add_parser(sub)

    p = sub.add_parser("detect", help="find cameras in still images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per detection: file, label, score, box")
    p.add_argument(
        "--draw", type=Path, metavar="OUT", help="save images with boxes (a folder, or a file for one image)"
    )
    p.add_argument(
        "--roi",
        choices=("full", "band"),
        default="full",
        help="full image (default for photos) or the band above the horizon (the ride default)",
    )

    p = sub.add_parser("evaluate", help="measure a model on a COCO-labelled folder: AP50, precision, recall")
    p.add_argument("folder", type=Path, help="folder with labels.json (COCO) and images/")
    _add_model_args(p)
    p.add_argument("--plot", type=Path, metavar="PNG", help="write a precision-recall plot")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the metrics as JSON")
    p.add_argument(
        "--shrink",
        type=float,
        metavar="PX",
        help="scale each image down so its cameras are about PX pixels (median longest side), as far away",
    )
    p.add_argument(
        "--max-side", type=int, default=1920, help="scale larger images down to this longest side (default 1920)"
    )

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    b = bench.add_parser("detector", help="time the detector on a 1920x1080 frame against a naive baseline")
    _add_model_args(b)
    b.add_argument("--image", type=Path, help="frame to use (default: a 1920x1080 street frame made here)")
    b.add_argument("--frames", type=int, default=20, help="frames to time (default 20)")
    b.add_argument("--roi", choices=("full", "band"), default="band", help="tile region (default: the ride's band)")
    b = bench.add_parser("invoke", help="interpreter time per invoke of several .tflite files, in the same run")
    b.add_argument("models", nargs="+", type=Path, metavar="MODEL", help=".tflite files (no sidecar needed)")
    b.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    b.add_argument("--runs", type=int, default=100, help="timed invocations per model (default 100)")

    p = sub.add_parser("check", help="validate a config file (and its model, folders, password file) without running")
    p.add_argument("config", type=Path, metavar="CONFIG", help="the TOML config file (see docs/config.md)")
    p.add_argument(
        "--device",
        action="store_true",
        help="also check the hardware: model runs once, camera gives a frame, GPS has a fix, broker accepts us",
    )
    p.add_argument(
        "--gps-wait",
        type=float,
        default=DEFAULT_GPS_WAIT_S,
        metavar="S",
        help=f"with --device: seconds to wait for a fix (default {DEFAULT_GPS_WAIT_S:g})",
    )
    p.add_argument(
        "--broker-timeout",
        type=float,
        default=DEFAULT_BROKER_TIMEOUT_S,
        metavar="S",
        help=f"with --device: seconds to connect (default {DEFAULT_BROKER_TIMEOUT_S:g})",
    )
    return parser


def _config(args: argparse.Namespace) -> DetectorConfig:
    tiling = TilingConfig.full_frame() if getattr(args, "roi", "full") == "full" else TilingConfig()
    kwargs: dict[str, object] = {"model": args.model, "tiling": tiling, "score_threshold": args.threshold}
    if args.threads is not None:
        if args.threads < 1:
            raise DetectorError(f"--threads must be >= 1, got {args.threads}")
        kwargs["num_threads"] = args.threads
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise DetectorError(f"--threshold must be within (0, 1], got {args.threshold}")
    return DetectorConfig(**kwargs)  # type: ignore[arg-type]


def _draw_path(out: Path, image: Path, several: bool) -> Path:
    if not several and out.suffix.lower() in IMAGE_SUFFIXES:
        return out
    return out / f"{image.stem}.detections.png"


def cmd_detect(args: argparse.Namespace) -> int:
    from detector.draw import draw_detections
    from detector.images import load_rgb

    several = len(args.images) > 1
    draw = args.draw
    if (
        several
        and draw is not None
        and (draw.is_file() or (draw.suffix.lower() in IMAGE_SUFFIXES and not draw.is_dir()))
    ):
        raise DetectorError(f"--draw {args.draw}: with several images, give a folder, not a file")
    detector = load_detector(_config(args))
    failed = 0
    for path in args.images:
        try:
            frame = load_rgb(path)
        except DetectorError as err:
            print(f"sousveil: {err}", file=sys.stderr)
            failed += 1
            continue
        found: list[Detection] = detector.detect(frame)
        if args.json:
            for det in found:
                print(json.dumps({"file": str(path), **det.to_json()}))
        else:
            h, w = frame.shape[:2]
            print(f"{path}: {len(found)} camera(s) in {w}x{h}")
            for det in found:
                x1, y1, x2, y2 = det.box_px
                print(
                    f"  {det.label:<6} {det.score:.2f}  box {x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}"
                    f"  ({det.width_px:.0f}x{det.height_px:.0f} px)"
                )
        if args.draw:
            target = _draw_path(args.draw, path, several)
            try:
                draw_detections(frame, found, target)
            except OSError as err:
                print(f"sousveil: --draw: cannot write {target}: {err.strerror or err}", file=sys.stderr)
                failed += 1
                continue
            log.info("drew %s", target)
    if failed:
        print(f"sousveil: {failed} of {len(args.images)} image(s) could not be read or drawn", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_bench_detector(args: argparse.Namespace) -> int:
    from detector.bench import run_bench
    from detector.images import load_rgb
    from detector.synthetic import street_frame

    if args.frames < 1:
        raise DetectorError(f"--frames must be >= 1, got {args.frames}")
    detector = load_detector(_config(args))
    frame = load_rgb(args.image) if args.image else street_frame(1920, 1080)
    spec = detector.spec
    plan = detector.plan_for(frame.shape[1], frame.shape[0])
    print(
        f"model {spec.name} {spec.version} ({spec.output.family}, input {spec.input.width}x{spec.input.height} "
        f"{spec.input.dtype}), runtime {detector.model.runtime}, {detector.model.num_threads} thread(s)"
    )
    print(
        f"frame {frame.shape[1]}x{frame.shape[0]}, region {list(plan.roi_px)}, "
        f"{len(plan.tiles)} tiles over {len(plan.levels)} level(s)"
    )
    result = run_bench(detector, frame, frames=args.frames)
    print(result.report())
    return EXIT_OK


def cmd_bench_invoke(args: argparse.Namespace) -> int:
    from detector.bench import time_invokes

    if args.threads < 1 or args.runs < 1:
        raise DetectorError("--threads and --runs must be >= 1")
    results = time_invokes(args.models, args.threads, args.runs)
    print(f"{'model':<48} {'size':>8} {'input':>16} {'median':>9} {'p90':>9}   ({args.threads} threads)")
    for r in results:
        print(
            f"{r.path.name:<48} {r.size_bytes / 1e6:6.2f}MB {r.input_desc:>16} {r.median_ms:7.2f}ms {r.p90_ms:7.2f}ms"
        )
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    return cmd_bench_invoke(args) if args.target == "invoke" else cmd_bench_detector(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from detector.evaluation import DatasetError, GroundTruth, evaluate, load_coco
    from detector.images import load_rgb
    from detector.prplot import plot_pr

    images, labels = load_coco(args.folder)
    config = _config(args)
    detector = load_detector(config)
    model_labels = detector.spec.label_names
    unknown = [lab for lab in labels if lab not in model_labels]
    if unknown:
        raise DatasetError(f"{args.folder}: classes {unknown} are not labels of the model ({list(model_labels)})")
    threshold = detector.score_threshold
    detector.score_threshold = min(0.05, threshold)  # low, to trace the whole precision-recall curve

    def detect(truth: GroundTruth) -> tuple[list[Detection], float]:
        frame = load_rgb(truth.file)
        if frame.shape[1] != truth.width or frame.shape[0] != truth.height:
            raise DatasetError(
                f"{truth.file}: is {frame.shape[1]}x{frame.shape[0]}, labels say {truth.width}x{truth.height}"
            )
        factor = min(1.0, args.max_side / max(truth.width, truth.height))
        real = truth.boxes[~truth.ignore]
        if args.shrink and len(real):
            longest = float(np.median(np.maximum(real[:, 2] - real[:, 0], real[:, 3] - real[:, 1])))
            factor = min(factor, args.shrink / max(longest, 1.0))
        if factor != 1.0:
            size = (max(1, round(truth.width * factor)), max(1, round(truth.height * factor)))
            frame = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS))
        return detector.detect(frame), factor

    report = evaluate(images, labels, detect, threshold)
    spec = detector.spec
    print(
        f"model {spec.name} {spec.version} on {args.folder}"
        + (f", cameras shrunk to ~{args.shrink:g} px" if args.shrink else "")
    )
    print(report.table())
    if args.plot:
        title = f"{spec.name} {spec.version} on {args.folder.name}" + (f" (~{args.shrink:g} px)" if args.shrink else "")
        plot_pr(report.curves, report.ap50, args.plot, title)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"model": spec.name, "version": spec.version, **report.to_json()}, indent=1) + "\n"
        )
    return EXIT_OK


def _writable(path: Path) -> str | None:
    """None when ``path`` (a file to be created or appended to) can be written, else why not."""
    folder = path.parent
    probe = folder
    while not probe.exists():  # the service creates missing folders; the nearest existing one decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write in {probe}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"cannot write {path}"
    return None


def cmd_check(args: argparse.Namespace) -> int:
    """One line per section: ``<section> ok`` or ``<section>: <why>``; 0 when all are ok, else 2."""
    from detector import Model, load_model
    from firmware.config import ConfigFileError, load_config
    from firmware.mqtt import MqttConfigError

    try:
        config = load_config(args.config)
    except ConfigFileError as err:
        print(f"config: {err}")
        return EXIT_ERROR
    print(f"config ok ({args.config})")
    failed = 0

    def report(section: str, problem: str | None, detail: str) -> None:
        nonlocal failed
        if problem is None:
            print(f"{section} ok ({detail})")
        else:
            failed += 1
            print(f"{section}: {problem}")

    model: Model | None = None
    try:
        model = load_model(config.detector)
        report("model", None, f"{model.spec.name} {model.spec.version}, {model.runtime}")
    except DetectorError as err:
        report("model", str(err), "")
    cam, gps = config.camera, config.gps
    if cam.path is None and cam.source == "picamera2":
        report("camera", None, "picamera2; --device opens it")
    elif cam.path is None:
        report("camera", None, f"{cam.source}, no path: `sousveil run` needs one, `replay` takes the video")
    else:
        exists = cam.path.is_dir() if cam.source == "images" else cam.path.is_file()
        report("camera", None if exists else f"{cam.source} {cam.path} not found", f"{cam.source} {cam.path}")
    if gps.path is None and gps.source == "gpsd":
        report("gps", None, f"gpsd {gps.host}:{gps.port}; --device waits for a fix")
    elif gps.path is None:
        report("gps", None, f"{gps.source}, no path: `sousveil run` needs one, `replay` takes --track")
    else:
        report("gps", None if gps.path.is_file() else f"{gps.source} track {gps.path} not found", str(gps.path))
    if config.device.id is not None:
        report("device", None, f"fixed id {config.device.id}")
    else:
        report("device", _writable(config.device.id_file), str(config.device.id_file))
    if config.mqtt is None:
        report("output", _writable(config.output.file), str(config.output.file))
    else:
        report("outbox", _writable(config.outbox.path), str(config.outbox.path))
        from firmware.check import resolve_password_file

        try:
            settings, note = resolve_password_file(config.mqtt)  # the service's credential, or its source
            has_password = settings.read_password() is not None
            where = f"; {note}" if settings.password_file != config.mqtt.password_file else ""
            report(
                "mqtt",
                None,
                f"{config.mqtt.host}:{config.mqtt.port}, password {'readable' if has_password else 'none'}{where}",
            )
        except MqttConfigError as err:
            report("mqtt", str(err), "")
    if args.device:
        from firmware.check import run_device_checks

        failed += run_device_checks(
            config,
            gps_wait_s=args.gps_wait,
            broker_timeout_s=args.broker_timeout,
            picamera2_module=getattr(args, "picamera2_module", None),
            model=model,
        )
    return EXIT_ERROR if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handlers = {
        "detect": cmd_detect,
        "evaluate": cmd_evaluate,
        "bench": cmd_bench,
        "check": cmd_check,
        "replay": replay_cli.run,
        "run": run_cli.run,
        "broker": broker_cli.run,
        "map": map_cli.run,
    }
    try:
        return handlers[args.command](args)
    except DetectorError as err:
        if args.debug:
            raise
        print(f"sousveil: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
