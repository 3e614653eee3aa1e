"""Replay throughput of the whole ride pipeline against the detector alone, on the same frames, in one run.

Run by hand, never in CI::

    .venv/bin/python scripts/bench_pipeline.py [--video V --track T] [--threads 2] [--repeats 3] [--sink mqtt|file]

Each measurement runs in a child process of its own (so each has its own peak RSS), all on
the same video, the same model and the same number of threads, in turns (detector, pipeline,
detector, pipeline, ...) so a slow spell of the machine hits both:

- ``decode``: the video decoded (PyAV) and nothing else;
- ``interleaved`` (the figure the target is judged on): the video decoded once into memory,
  then the same frames through ``Detector.detect`` alone and through the pipeline, in turns,
  ``--repeats`` rounds in one process;
- ``detector``: decoded frames through ``Detector.detect`` only;
- ``pipeline``: decoded frames through ``Pipeline.process`` — detector, tracker, geotag,
  privacy, sighting, and the sink (by default MQTT to a mosquitto started here, through the
  SQLite outbox, as on the bike; ``--sink file`` for the JSON-lines file), ``finish`` included;
- ``sousveil replay``: the command itself, start to exit (imports, model load, decode, the
  pipeline, the outbox drained), with its peak RSS.

It prints the frames per second of each, the pipeline's share of the detector's rate
(target >= 90 %) and the peak RSS of ``sousveil replay`` (target < 200 MB). Figures:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from broker.local import LocalBroker, free_port  # noqa: E402

SAMPLE_VIDEO = REPO / "samples" / "ride" / "lund-ride.mp4"
SAMPLE_TRACK = REPO / "samples" / "ride" / "lund-ride.gpx"


# ---- the children: one measurement each, a JSON line on stdout ----


def child(
    mode: str, video: Path, track: Path, threads: int, config_path: Path | None, rounds: int = 1
) -> dict[str, Any]:
    from detector import load_detector
    from firmware.frames import VideoSource
    from firmware.replay_cli import (
        camera_model,
        detector_config,
        load_fixes,
        make_pipeline,
        open_sink,
        read_config,
        resolve_device_id,
        track_of,
    )

    config, state = read_config(config_path)
    fixes = load_fixes(track)
    start = fixes[0].t_utc
    frames = 0
    if mode == "decode":
        t0 = time.perf_counter()
        with VideoSource(video, start) as source:
            for _ in source:
                frames += 1
        return {"frames": frames, "seconds": time.perf_counter() - t0}
    detector = load_detector(detector_config(config, None, threads))
    if mode == "detector":
        t0 = time.perf_counter()
        with VideoSource(video, start) as source:
            for frame in source:
                detector.detect(frame.pixels, bgr=frame.bgr)
                frames += 1
        return {"frames": frames, "seconds": time.perf_counter() - t0}
    device = resolve_device_id(config)
    detect_s = [0.0]
    plain_detect = detector.detect

    def timed_detect(pixels: Any, *, bgr: bool = False) -> Any:
        t = time.perf_counter()
        try:
            return plain_detect(pixels, bgr=bgr)
        finally:
            detect_s[0] += time.perf_counter() - t

    def run_pipeline(frames_in: Any, width: int) -> dict[str, float]:
        """The pipeline over ``frames_in``; seconds up to the end of ``finish`` less its wait
        for the broker's acknowledgements (that is the network, not processing)."""
        choice = open_sink(config, state, device)
        detect_s[0] = 0.0
        detector.detect = timed_detect  # type: ignore[method-assign]
        try:
            pipeline = make_pipeline(
                config,
                detector,
                camera_model(config, width),
                track_of(fixes, config.gps.max_gap_s),
                choice.sink,
                device,
            )
            t0 = time.perf_counter()
            for frame in frames_in:
                pipeline.process(frame)
            summary = pipeline.finish(10.0)
            seconds = time.perf_counter() - t0 - summary.flush_seconds
            queued = choice.queued()
        finally:
            detector.detect = plain_detect  # type: ignore[method-assign]
            choice.sink.close()
        return {
            "frames": summary.frames,
            "seconds": seconds,
            "detect_s": detect_s[0],
            "flush_s": summary.flush_seconds,
            "sightings": summary.sightings_published,
            "queued": queued,
        }

    if mode == "pipeline":
        with VideoSource(video, start) as source:
            return run_pipeline(source, source.size[0])
    # "interleaved": the same decoded frames through the detector alone and the pipeline, in turns
    with VideoSource(video, start) as source:
        decoded = list(source)
    width = decoded[0].size[0]
    out: dict[str, Any] = {"frames": len(decoded), "detector_s": [], "pipeline_s": [], "outside_s": []}
    for _ in range(rounds):
        t0 = time.perf_counter()
        for frame in decoded:
            detector.detect(frame.pixels, bgr=frame.bgr)
        out["detector_s"].append(time.perf_counter() - t0)
        row = run_pipeline(decoded, width)
        out["pipeline_s"].append(row["seconds"])
        out["outside_s"].append(row["seconds"] - row["detect_s"])
    return out


# ---- the parent ----


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, str, int, float, float]:
    """Run ``cmd``; its stdout, stderr, exit status, wall seconds and peak RSS in MB (wait4)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), proc.returncode, wall, usage.ru_maxrss / 1024.0


def plain_broker(directory: Path) -> LocalBroker:
    """mosquitto on a free loopback port, anonymous, in-memory: the bike's broker stand-in."""
    port = free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n"
    broker = LocalBroker(directory, conf, port)
    try:
        broker.start()
    except RuntimeError as e:
        raise SystemExit(f"bench_pipeline: {e} (or use --sink file)") from None
    return broker


def write_config(directory: Path, sink: str, broker: LocalBroker | None, threads: int, run: int) -> Path:
    lines = ["[device]", 'id = "00000000bec4b14e"', "", "[detector]", f"num_threads = {threads}", ""]
    if sink == "mqtt" and broker is not None:
        lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {broker.port}", ""]
        lines += ["[outbox]", f'path = "{directory / f"outbox-{run}.sqlite"}"', ""]
    lines += ["[output]", f'file = "{directory / f"sightings-{run}.jsonl"}"', ""]
    path = directory / f"config-{run}.toml"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=SAMPLE_VIDEO)
    ap.add_argument("--track", type=Path, default=SAMPLE_TRACK, help="GPX or NMEA; the video starts at its first fix")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sink", choices=("mqtt", "file"), default="mqtt")
    ap.add_argument("--child", choices=("decode", "detector", "pipeline", "interleaved"), help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.video, args.track, args.threads, args.config, args.repeats)))
        return 0

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        d = Path(tmp)
        env["SOUSVEIL_STATE_DIR"] = str(d / "state")
        broker = plain_broker(d) if args.sink == "mqtt" else None
        try:
            rows: dict[str, list[dict[str, Any]]] = {"decode": [], "detector": [], "pipeline": [], "replay": []}
            base = [sys.executable, str(Path(__file__).resolve()), "--video", str(args.video), "--track",
                    str(args.track), "--threads", str(args.threads), "--repeats", str(args.repeats)]  # fmt: skip
            config = write_config(d, args.sink, broker, args.threads, 999)
            out, err, rc, _, rss = run_measured([*base, "--child", "interleaved", "--config", str(config)], env)
            if rc != 0:
                raise SystemExit(f"bench_pipeline: the interleaved child failed ({rc}):\n{err}")
            inter = json.loads(out.strip().splitlines()[-1])
            for r, (dt, pt) in enumerate(zip(inter["detector_s"], inter["pipeline_s"], strict=True)):
                print(f"round {r + 1} same decoded frames: detector {inter['frames'] / dt:6.2f} fps, "
                      f"pipeline {inter['frames'] / pt:6.2f} fps", flush=True)  # fmt: skip
            for run in range(args.repeats):
                config = write_config(d, args.sink, broker, args.threads, run)
                for mode in ("decode", "detector", "pipeline"):
                    out, err, rc, wall, rss = run_measured([*base, "--child", mode, "--config", str(config)], env)
                    if rc != 0:
                        raise SystemExit(f"bench_pipeline: the {mode} child failed ({rc}):\n{err}")
                    row = json.loads(out.strip().splitlines()[-1])
                    row.update(fps=row["frames"] / row["seconds"], rss_mb=rss, wall_s=wall)
                    rows[mode].append(row)
                    print(f"run {run + 1} {mode:9s} {row['frames']:.0f} frames {row['fps']:6.2f} fps  "
                          f"peak RSS {rss:6.1f} MB", flush=True)  # fmt: skip
                replay_cfg = write_config(d, args.sink, broker, args.threads, 100 + run)
                cmd = [sys.executable, "-m", "firmware", "replay", str(args.video), "--track", str(args.track),
                       "--config", str(replay_cfg), "--threads", str(args.threads)]  # fmt: skip
                out, err, rc, wall, rss = run_measured(cmd, env)
                if rc != 0:
                    raise SystemExit(f"bench_pipeline: sousveil replay failed ({rc}):\n{err}")
                m = re.search(r"(\d+) frames .* in ([\d.]+) s \(([\d.]+) fps\)", out)
                if m is None:
                    raise SystemExit(f"bench_pipeline: no summary in the replay's output:\n{out}")
                rows["replay"].append({"frames": float(m[1]), "fps": float(m[3]), "rss_mb": rss, "wall_s": wall})
                print(f"run {run + 1} replay    {m[1]} frames {float(m[3]):6.2f} fps  peak RSS {rss:6.1f} MB  "
                      f"wall {wall:.1f} s", flush=True)  # fmt: skip
        finally:
            if broker is not None:
                broker.stop()
            shutil.rmtree(d / "state", ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[mode])

    det, pipe, rep = med("detector", "fps"), med("pipeline", "fps"), med("replay", "fps")
    n = inter["frames"]
    ratios = [d / p for d, p in zip(inter["detector_s"], inter["pipeline_s"], strict=True)]
    print()
    print(f"video {args.video.name}, {n} frames, {args.threads} threads, sink {args.sink}, medians of {args.repeats}")
    print("same decoded frames, one process, in turns:")
    print(f"  detector alone             {n / statistics.median(inter['detector_s']):8.2f} fps")
    print(f"  pipeline                   {n / statistics.median(inter['pipeline_s']):8.2f} fps")
    print(f"  pipeline / detector        {100 * statistics.median(ratios):8.1f} %   (target >= 90 %; "
          f"rounds {', '.join(f'{100 * r:.1f}' for r in ratios)})")  # fmt: skip
    print(f"  pipeline outside detect    {1000 * statistics.median(inter['outside_s']) / n:8.2f} ms per frame "
          "(tracker, geotag, privacy, sighting, sink)")  # fmt: skip
    share = 1.0 - statistics.median(inter["outside_s"]) / statistics.median(inter["pipeline_s"])
    print(f"  so the pipeline keeps      {100 * share:8.2f} % of the detector's rate (noise-free: time inside"
          " and outside detect, same rounds)")  # fmt: skip
    print("each in its own process, decoding the video:")
    print(f"  decode alone               {med('decode', 'fps'):8.2f} fps")
    print(f"  detector alone (+decode)   {det:8.2f} fps   peak RSS {med('detector', 'rss_mb'):6.1f} MB")
    print(f"  pipeline (+decode, sink)   {pipe:8.2f} fps   peak RSS {med('pipeline', 'rss_mb'):6.1f} MB"
          f"   ({100 * pipe / det:.1f} % of the detector)")  # fmt: skip
    print(f"  sousveil replay (summary)  {rep:8.2f} fps   ({100 * rep / det:.1f} % of the detector)")
    print(f"sousveil replay peak RSS     {med('replay', 'rss_mb'):8.1f} MB   (target < 200 MB); "
          f"wall {med('replay', 'wall_s'):.1f} s start to exit")  # fmt: skip
    sightings = [r.get("sightings", 0) for r in rows["pipeline"]]
    queued = [r.get("queued", 0) for r in rows["pipeline"]]
    print(f"sightings per pipeline run   {sightings}, left queued {queued}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
