"""Train the camera model on CPU.

    /work/tfvenv/bin/python -m models.train.train --synth /work/data/synth/v1 \\
        --real /work/shared/data/realcams/train --out /work/data/train_runs/run1 [--minutes 35]
    # without the synthetic set: your own labelled COCO folder only
    /work/tfvenv/bin/python -m models.train.train --real MY_RIDES_COCO --out runs/mine --minutes 60

Writes ``OUT/last.weights.h5`` (every few minutes and at the end), ``OUT/log.jsonl`` and
``OUT/config.json``.  The synthetic folder is re-read every pass, so a growing set is used.
Without ``--synth`` every sample is cut from the ``--real`` photos and the self-check (held-out
synthetic tiles) is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from models.train import net
from models.train.backbone import port_weights
from models.train.data import Batches, synth_split
from models.train.selfcheck import best_threshold, collect


def set_threads(n: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def self_check(model: tf.keras.Model, synth: Path | None, n: int) -> dict:
    if synth is None:
        return {}
    _, held = synth_split(synth)
    held = held[:n]
    if not held:
        return {}

    def predict(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, bx = model(tf.constant(tile[None].astype(np.float32) / 255.0), training=False)
        return tf.sigmoid(lo).numpy()[0], bx.numpy()[0]

    rows = collect(held, predict, 0.1)
    thr, s = best_threshold(rows)
    return {"thr": thr, **{k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", type=Path, default=None, help="synthetic COCO folder (labels.json)")
    ap.add_argument("--real", type=Path, default=None, help="realcams/train (never val)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=35.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=0, help="stop at this step; LR schedule over steps (0: time)")
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--size", type=int, default=256, help="training crop (multiple of 32)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--real-frac", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", type=Path, default=None, help="start from these Keras weights")
    ap.add_argument("--check-every", type=float, default=12.0, help="minutes between self-checks")
    ap.add_argument("--check-tiles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.synth is None and args.real is None:
        ap.error("give --synth, --real or both")

    set_threads(args.threads)
    tf.keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    model = net.build(None)
    if args.resume:
        model.load_weights(str(args.resume))
    else:
        print(f"ported {port_weights(model)} backbone layers (torchvision ImageNet)", flush=True)
    print(f"params {net.count_params(model)}", flush=True)
    opt = tf.keras.optimizers.Adam(args.lr)

    @tf.function
    def step(x: tf.Tensor, hm: tf.Tensor, mask: tf.Tensor, ltrb: tf.Tensor, bw: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            lo, bx = model(x, training=True)
            lh = net.focal_loss(lo, hm, mask)
            lb = net.box_loss(bx, ltrb, bw)
            loss = lh + 2.0 * lb
        g = tape.gradient(loss, model.trainable_variables)
        g, _ = tf.clip_by_global_norm(g, 10.0)
        opt.apply_gradients(zip(g, model.trainable_variables, strict=True))
        return lh, lb

    data = Batches(args.synth, args.real, args.size, args.bs, args.real_frac, args.seed)
    budget = args.minutes * 60
    log = (args.out / "log.jsonl").open("a")
    t0 = time.time()
    t_save = t_check = t0
    n = 0
    lhs: list[float] = []
    lbs: list[float] = []
    wait = 0.0
    while True:
        el = time.time() - t0
        if el >= budget or (args.steps and n >= args.steps):
            break
        frac = n / args.steps if args.steps else el / budget  # LR schedule over steps when given
        warm = min(1.0, (n + 1) / 100)
        lr = warm * (args.lr * 0.5 * (1 + math.cos(math.pi * frac)) + 2e-5)
        opt.learning_rate.assign(lr)
        tw = time.time()
        x, hm, mask, ltrb, bw = data.get()
        wait += time.time() - tw
        lh, lb = step(tf.constant(x.astype(np.float32) / 255.0), hm, mask, ltrb, bw)
        lhs.append(float(lh))
        lbs.append(float(lb))
        n += 1
        if n % 25 == 0:
            rec = {
                "step": n,
                "t": round(time.time() - t0),
                "hm": round(float(np.mean(lhs)), 4),
                "box": round(float(np.mean(lbs)), 4),
                "lr": float(f"{lr:.3g}"),
                "s_per_step": round((time.time() - t0) / n, 3),
                "data_wait": round(wait / n, 3),
                "n_synth": data.n_synth,
                "reloads": data.reloads,
            }
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            lhs, lbs = [], []
        if time.time() - t_save > 180:
            model.save_weights(str(args.out / "last.weights.h5"))
            t_save = time.time()
        if args.check_every and time.time() - t_check > args.check_every * 60 and budget - el > 300:
            sc = self_check(model, args.synth, args.check_tiles)
            print(json.dumps({"step": n, "selfcheck": sc}), flush=True)
            log.write(json.dumps({"step": n, "selfcheck": sc}) + "\n")
            t_check = time.time()
    data.stop = True
    model.save_weights(str(args.out / "last.weights.h5"))
    sc = self_check(model, args.synth, args.check_tiles)
    final = {"final_step": n, "minutes": round((time.time() - t0) / 60, 1), "selfcheck": sc}
    print(json.dumps(final), flush=True)
    log.write(json.dumps(final) + "\n")
    log.close()


if __name__ == "__main__":
    main()
