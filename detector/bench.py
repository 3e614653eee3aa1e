"""Benchmark of the detector on this machine, with a naive baseline measured in the same run.

The baseline is the style of the picamera2 TFLite example: every frame, the whole frame is
converted afresh (a new PIL image, resized to the model input, turned into a float array,
normalised and quantised) and set with ``set_tensor``. It looks at a 1920x1080 frame
shrunk six-fold, so it is faster per frame but blind to the small cameras tiles find.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.detector import Detector


@dataclass(frozen=True)
class BenchResult:
    frames: int
    tiles_per_frame: int
    interp_ms_per_tile: float
    pre_ms_per_frame: float
    post_ms_per_frame: float
    interp_ms_per_frame: float
    total_ms_per_frame: float
    fps: float
    peak_rss_mb: float
    baseline_ms_per_frame: float
    baseline_pre_post_ms: float
    baseline_interp_ms: float

    @property
    def overhead_ratio(self) -> float:
        """(pre + post) / interpreter time of the tiled detector."""
        return (self.pre_ms_per_frame + self.post_ms_per_frame) / self.interp_ms_per_frame

    def report(self) -> str:
        lines = [
            f"frames measured              {self.frames}",
            f"tiles per frame              {self.tiles_per_frame}",
            f"interpreter per tile         {self.interp_ms_per_tile:8.2f} ms",
            f"interpreter per frame        {self.interp_ms_per_frame:8.2f} ms",
            f"pre-processing per frame     {self.pre_ms_per_frame:8.2f} ms",
            f"post-processing per frame    {self.post_ms_per_frame:8.2f} ms",
            f"(pre + post) / interpreter   {100 * self.overhead_ratio:8.2f} %   (target < 10 %)",
            f"total per frame              {self.total_ms_per_frame:8.2f} ms",
            f"frames per second            {self.fps:8.2f}",
            f"peak RSS of this process     {self.peak_rss_mb:8.1f} MB   (target < 150 MB)",
            "baseline (whole frame resized, fresh conversion each frame, one inference):",
            f"  total per frame            {self.baseline_ms_per_frame:8.2f} ms",
            f"  interpreter per frame      {self.baseline_interp_ms:8.2f} ms",
            f"  pre + post per frame       {self.baseline_pre_post_ms:8.2f} ms"
            f"   ({100 * self.baseline_pre_post_ms / max(self.baseline_interp_ms, 1e-9):.1f} %"
            " of its interpreter time)",
        ]
        return "\n".join(lines)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def naive_baseline(detector: Detector, frame: np.ndarray) -> tuple[float, float]:
    """One frame the naive way; ``(total seconds, interpreter seconds)``."""
    from PIL import Image

    spec = detector.spec.input
    model = detector.model
    t0 = time.perf_counter()
    image = Image.fromarray(frame).resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    data = np.expand_dims(np.asarray(image), 0)
    value = (np.float32(data) - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    if spec.dtype != "float32":
        info = np.iinfo(np.dtype(spec.dtype))
        data = np.clip(np.round(value / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)
    else:
        data = value.astype(np.float32)
    t1 = time.perf_counter()
    outputs = model.invoke_raw(data)
    t2 = time.perf_counter()
    model.decoder.decode(outputs, detector.score_threshold)
    return time.perf_counter() - t0, t2 - t1


def run_bench(
    detector: Detector, frame: np.ndarray, frames: int = 20, warmup: int = 2, log: Callable[[str], None] = print
) -> BenchResult:
    """Time ``frames`` runs of the detector on ``frame`` and as many of the baseline."""
    for _ in range(warmup):
        detector.detect(frame)
    pre: list[float] = []
    post: list[float] = []
    interp: list[float] = []
    total: list[float] = []
    tiles = 0
    for n in range(frames):
        t0 = time.perf_counter()
        detector.detect(frame)
        total.append(time.perf_counter() - t0)
        t = detector.last_timings
        pre.append(t.pre_s)
        post.append(t.post_s)
        interp.append(t.infer_s)
        tiles = t.tiles
        if n == 0:
            log(f"  first frame: {total[-1] * 1000:.1f} ms over {tiles} tiles")
    rss = peak_rss_mb()
    for _ in range(warmup):
        naive_baseline(detector, frame)
    base = [naive_baseline(detector, frame) for _ in range(frames)]
    base_total = statistics.median(b[0] for b in base)
    base_interp = statistics.median(b[1] for b in base)
    med = statistics.median
    return BenchResult(
        frames=frames,
        tiles_per_frame=tiles,
        interp_ms_per_tile=1000 * med(interp) / max(tiles, 1),
        pre_ms_per_frame=1000 * med(pre),
        post_ms_per_frame=1000 * med(post),
        interp_ms_per_frame=1000 * med(interp),
        total_ms_per_frame=1000 * med(total),
        fps=1.0 / med(total),
        peak_rss_mb=rss,
        baseline_ms_per_frame=1000 * base_total,
        baseline_pre_post_ms=1000 * (base_total - base_interp),
        baseline_interp_ms=1000 * base_interp,
    )


@dataclass(frozen=True)
class InvokeTiming:
    path: Path
    size_bytes: int
    input_desc: str
    median_ms: float
    p90_ms: float


def time_invokes(paths: list[Path], threads: int, runs: int) -> list[InvokeTiming]:
    """Interpreter time per invoke of each model, in interleaved rounds so that every model
    sees the same machine state; inputs are random but fixed."""
    from detector import runtime

    rng = np.random.default_rng(0)
    models: list[tuple[Path, int, str, Any, list[float]]] = []
    for path in paths:
        data = runtime.read_model_bytes(path)
        interpreter, _ = runtime.make_interpreter(path, data, threads)
        detail = interpreter.get_input_details()[0]
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(v) for v in detail["shape"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        else:
            x = rng.random(shape, dtype=np.float32)
        interpreter.set_tensor(detail["index"], x)
        for _ in range(5):
            interpreter.invoke()
        desc = "x".join(str(v) for v in shape[1:]) + " " + dtype.name
        models.append((path, len(data), desc, interpreter, []))
    for _ in range(runs):
        for _, _, _, interpreter, times in models:
            t0 = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - t0)
    return [
        InvokeTiming(path, size, desc, 1000 * statistics.median(times), 1000 * float(np.percentile(times, 90)))
        for path, size, desc, _, times in models
    ]
