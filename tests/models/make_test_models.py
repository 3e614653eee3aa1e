"""Regenerate the test models, sidecars, fixture tile and golden raw outputs.

    /work/tfvenv/bin/python tests/models/make_test_models.py [--weights-cache DIR] [--retrain]

TensorFlow is needed ONLY by this script (it trains and converts the models).
Tests and CI never import TensorFlow: they run the produced .tflite files with
``ai_edge_litert`` and render scenes with the TF-free ``toy_targets`` module.

What it makes (see tests/models/README.md):

* toy_centernet.tflite  int8 in, int8 heatmap [1,48,48,2] + ltrb box [1,48,48,4]
* toy_yolo.tflite       uint8 in, int8 [1,6,2304] Ultralytics-v8 layout
* toy_ssd.tflite        uint8 in, SSD encodings + TFLite_Detection_PostProcess
* bench320_centernet.tflite  untrained MobileNetV2-0.35 320x320, timing only
* a .toml sidecar next to each model
* tests/fixtures/toy_tile.png/.json, tests/golden/<stem>_raw.npz

All seeds are fixed.  The trained Keras weights are cached (default
/tmp/sousveil_toy_weights) so a re-export does not need retraining; pass
--retrain to train from scratch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(HERE))
from toy_targets import LABELS, make_scene  # noqa: E402

IN = 192
STRIDE = 4
GRID = IN // STRIDE  # 48
NCELL = GRID * GRID
NCLS = 2
BOX_SCALE = 16.0
SCENE = 256  # tiles are random 192 crops of 256x256 scenes
BG_PHOTOS = Path("/work/shared/data/synth/backgrounds")

TRAIN_SEED0 = 1_000_000
CALIB_SEED0 = 5_000_000
EVAL_SEED0 = 9_000_000
FIXTURE_SEED = 4242

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------


def make_tile(seed: int, min_px: float = 8.0, max_px: float = 72.0) -> tuple[np.ndarray, list[dict]]:
    """A 192x192 crop of a 256x256 scene; truth boxes clipped to the tile.

    Each truth dict has ``label``, ``box`` (visible part, tile pixels),
    ``full`` (whole box in tile pixels) and ``inside`` (fully inside).
    """
    rng = np.random.default_rng(seed + 17)
    n = int(rng.integers(0, 6))
    while True:
        try:
            img, truth = make_scene(seed, SCENE, SCENE, n, min_px, max_px)
            break
        except ValueError:
            n -= 1
    ox, oy = (int(v) for v in rng.integers(0, SCENE - IN + 1, size=2))
    tile = img[oy : oy + IN, ox : ox + IN]
    out = []
    for t in truth:
        x1, y1, x2, y2 = t["box"]
        full = [x1 - ox, y1 - oy, x2 - ox, y2 - oy]
        vis = [max(0.0, full[0]), max(0.0, full[1]), min(float(IN), full[2]), min(float(IN), full[3])]
        if vis[2] <= vis[0] or vis[3] <= vis[1]:
            continue
        inside = vis == full
        out.append({"label": t["label"], "box": vis, "full": full, "inside": inside})
    return np.ascontiguousarray(tile), out


def encode_targets(truth: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap [48,48,2], loss mask [48,48,1], ltrb [48,48,4], box weight [48,48,1].

    Cut targets whose visible part is >= 40 % of the whole box (and >= 6 px each
    side) are labelled as their visible box; smaller slivers are excluded from
    the heatmap loss (mask 0 over their visible box).
    """
    hm = np.zeros((GRID, GRID, NCLS), np.float32)
    mask = np.ones((GRID, GRID, 1), np.float32)
    ltrb = np.zeros((GRID, GRID, 4), np.float32)
    bw = np.zeros((GRID, GRID, 1), np.float32)
    c = (np.arange(GRID, dtype=np.float32) + 0.5) * STRIDE
    for t in truth:
        x1, y1, x2, y2 = t["box"]
        f = t["full"]
        vis_frac = (x2 - x1) * (y2 - y1) / max(1e-6, (f[2] - f[0]) * (f[3] - f[1]))
        if vis_frac < 0.4 or (x2 - x1) < 6 or (y2 - y1) < 6:
            i1, i2 = int(y1 // STRIDE), int(np.ceil(y2 / STRIDE))
            j1, j2 = int(x1 // STRIDE), int(np.ceil(x2 / STRIDE))
            mask[i1:i2, j1:j2] = 0.0
            continue
        k = LABELS.index(t["label"])
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ci, cj = min(GRID - 1, int(cy // STRIDE)), min(GRID - 1, int(cx // STRIDE))
        sx = max(0.6, (x2 - x1) / STRIDE / 6.0)
        sy = max(0.6, (y2 - y1) / STRIDE / 6.0)
        gx = np.exp(-((np.arange(GRID) - cj) ** 2) / (2 * sx * sx))
        gy = np.exp(-((np.arange(GRID) - ci) ** 2) / (2 * sy * sy))
        g = gy[:, None] * gx[None, :]
        hm[:, :, k] = np.maximum(hm[:, :, k], g)
        inside = (c[None, :] > x1) & (c[None, :] < x2) & (c[:, None] > y1) & (c[:, None] < y2)
        sel = ((g > 0.3) & inside) | ((np.arange(GRID)[:, None] == ci) & (np.arange(GRID)[None, :] == cj))
        ii, jj = np.nonzero(sel)
        ltrb[ii, jj, 0] = c[jj] - x1
        ltrb[ii, jj, 1] = c[ii] - y1
        ltrb[ii, jj, 2] = x2 - c[jj]
        ltrb[ii, jj, 3] = y2 - c[ii]
        bw[ii, jj, 0] = 1.0
    ltrb = np.maximum(ltrb, 0.0)
    return hm, mask, ltrb, bw


def _train_sample(seed: int) -> tuple[np.ndarray, ...]:
    tile, truth = make_tile(seed)
    return (tile, *encode_targets(truth))


def make_dataset(seed0: int, n: int) -> tuple[np.ndarray, ...]:
    with Pool(2) as pool:
        rows = pool.map(_train_sample, range(seed0, seed0 + n), chunksize=64)
    return tuple(np.stack([r[k] for r in rows]) for k in range(5))


# ----------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------


def cbr(x: tf.Tensor, ch: int, stride: int = 1, k: int = 3, name: str = "") -> tf.Tensor:
    x = tf.keras.layers.Conv2D(ch, k, strides=stride, padding="same", use_bias=False, name=name + "_conv")(x)
    x = tf.keras.layers.BatchNormalization(name=name + "_bn")(x)
    return tf.keras.layers.ReLU(6.0, name=name + "_relu")(x)


def build_toy(export: bool) -> tf.keras.Model:
    """Tiny CenterNet/FCOS-style net. export=True: sigmoid heatmap and ReLU box
    (box scale folded into the last conv by copy_weights); else logits and
    16*ReLU box for training."""
    inp = tf.keras.Input((IN, IN, 3), name="image")  # float pixel/255 in [0, 1]
    x = cbr(inp, 16, 2, name="s2")  # 96
    x = cbr(x, 24, 2, name="s4a")  # 48
    c4 = cbr(x, 24, name="s4b")
    x = cbr(c4, 40, 2, name="s8a")  # 24
    c8 = cbr(x, 40, name="s8b")
    x = cbr(c8, 64, 2, name="s16a")  # 12
    x = cbr(x, 64, name="s16b")
    c16 = cbr(x, 64, name="s16c")
    p = cbr(c16, 40, k=1, name="lat16")
    p = tf.keras.layers.UpSampling2D(2, interpolation="bilinear", name="up8")(p)
    p = tf.keras.layers.Add(name="add8")([p, cbr(c8, 40, k=1, name="lat8")])
    p = cbr(p, 40, name="p8")
    p = tf.keras.layers.UpSampling2D(2, interpolation="bilinear", name="up4")(p)
    p = tf.keras.layers.Add(name="add4")([p, cbr(c4, 40, k=1, name="lat4")])
    p = cbr(p, 32, name="p4")
    h = cbr(p, 32, name="hm_head")
    hm = tf.keras.layers.Conv2D(NCLS, 1, name="hm_out", bias_initializer=tf.keras.initializers.Constant(-4.6))(h)
    b = cbr(p, 32, name="box_head")
    box = tf.keras.layers.Conv2D(4, 1, name="box_out", bias_initializer=tf.keras.initializers.Constant(0.5))(b)
    box = tf.keras.layers.ReLU(name="box_relu")(box)
    if export:
        hm = tf.keras.layers.Activation("sigmoid", name="heatmap")(hm)
    else:
        box = box * BOX_SCALE
    return tf.keras.Model(inp, [hm, box], name="toy_centernet")


def copy_weights(train_m: tf.keras.Model, export_m: tf.keras.Model) -> None:
    for layer in export_m.layers:
        w = train_m.get_layer(layer.name).get_weights() if layer.weights else []
        if layer.name == "box_out":
            w = [w[0] * BOX_SCALE, w[1] * BOX_SCALE]
        if w:
            layer.set_weights(w)


def focal_loss(logits: tf.Tensor, hm: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    p = tf.clip_by_value(tf.sigmoid(logits), 1e-4, 1 - 1e-4)
    pos = tf.cast(hm > 0.999, tf.float32)
    pos_l = -tf.math.log(p) * tf.square(1 - p) * pos
    neg_l = -tf.math.log(1 - p) * tf.square(p) * tf.pow(1 - hm, 4) * (1 - pos) * mask
    npos = tf.maximum(1.0, tf.reduce_sum(pos))
    return (tf.reduce_sum(pos_l) + tf.reduce_sum(neg_l)) / npos


def box_loss(pred: tf.Tensor, tgt: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    pl, pt, pr, pb = tf.unstack(pred, axis=-1)
    tl, tt, tr, tb = tf.unstack(tgt, axis=-1)
    pa = (pl + pr) * (pt + pb)
    ta = (tl + tr) * (tt + tb)
    iw = tf.minimum(pl, tl) + tf.minimum(pr, tr)
    ih = tf.minimum(pt, tt) + tf.minimum(pb, tb)
    inter = iw * ih
    union = pa + ta - inter + 1e-6
    iou = inter / union
    cw = tf.maximum(pl, tl) + tf.maximum(pr, tr)
    ch = tf.maximum(pt, tt) + tf.maximum(pb, tb)
    carea = cw * ch + 1e-6
    giou = iou - (carea - union) / carea
    size = tf.maximum(8.0, (tl + tr + tt + tb) / 2)
    l1 = tf.reduce_sum(tf.abs(pred - tgt), axis=-1) / size
    w = w[..., 0]
    nw = tf.maximum(1.0, tf.reduce_sum(w))
    return tf.reduce_sum(((1 - giou) + 0.5 * l1) * w) / nw


def train(cache: Path, steps: int, resume: bool = False, lr0: float = 2e-3, chunk0: int = 0) -> tf.keras.Model:
    """Train ``steps`` batches of 32 on fresh chunks of toy tiles (cosine LR).  With
    ``resume`` start from the cached weights (fine-tuning on new chunks)."""
    tf.keras.utils.set_random_seed(7 + chunk0)
    model = build_toy(export=False)
    if resume:
        model.load_weights(str(cache / "toy.weights.h5"))
    n_chunk = 4000
    opt = tf.keras.optimizers.Adam(lr0)

    @tf.function
    def step(x: tf.Tensor, hm: tf.Tensor, mask: tf.Tensor, ltrb: tf.Tensor, bw: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            lo, bx = model(x, training=True)
            lh = focal_loss(lo, hm, mask)
            lb = box_loss(bx, ltrb, bw)
            loss = lh + 2.0 * lb
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables, strict=True))
        return lh, lb

    t0 = time.time()
    chunk = chunk0
    total_steps = 0
    bs = 32
    while True:
        data = make_dataset(TRAIN_SEED0 + chunk * n_chunk, n_chunk)
        chunk += 1
        frac = total_steps / steps
        for epoch in range(2):
            perm = np.random.default_rng(chunk * 10 + epoch).permutation(n_chunk)
            lhs, lbs = [], []
            for s in range(0, n_chunk - bs + 1, bs):
                idx = perm[s : s + bs]
                x, hm, mask, ltrb, bw = (d[idx] for d in data)
                if total_steps % 2:  # horizontal flip augmentation
                    x, hm, mask, bw = x[:, :, ::-1], hm[:, :, ::-1], mask[:, :, ::-1], bw[:, :, ::-1]
                    ltrb = ltrb[:, :, ::-1][..., [2, 1, 0, 3]]
                frac = total_steps / steps
                lr = lr0 * 0.5 * (1 + np.cos(np.pi * min(1.0, frac))) + 5e-5
                opt.learning_rate.assign(lr)
                lh, lb = step(
                    tf.constant(x.astype(np.float32) / 255.0),
                    tf.constant(hm),
                    tf.constant(mask),
                    tf.constant(ltrb.copy()),
                    tf.constant(bw),
                )
                lhs.append(float(lh))
                lbs.append(float(lb))
                total_steps += 1
                frac = total_steps / steps
                if frac >= 1.0:
                    break
            print(
                f"chunk {chunk} ep {epoch} steps {total_steps} hm {np.mean(lhs):.3f} box {np.mean(lbs):.3f}"
                f" lr {lr:.2e} t {time.time() - t0:.0f}s",
                flush=True,
            )
            if frac >= 1.0:
                break
        if frac >= 1.0:
            break
    cache.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(cache / "toy.weights.h5"))
    return model


# ----------------------------------------------------------------------------
# in-graph wrappers for the yolo and ssd layouts
# ----------------------------------------------------------------------------


def grid_centres() -> np.ndarray:
    """[2304, 2] cell centres (x, y) in input pixels, k = i*48 + j."""
    c = (np.arange(GRID, dtype=np.float32) + 0.5) * STRIDE
    gy, gx = np.meshgrid(c, c, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def build_yolo(core: tf.keras.Model) -> tf.keras.Model:
    inp = tf.keras.Input((IN, IN, 3), batch_size=1, name="image")  # static shapes: no SHAPE/PACK ops
    hm, box = core(inp)
    # ltrb -> (dx, dy, w, h) / 192 as a fixed 1x1 linear map, then add grid
    m = np.array([[-0.5, 0, 1, 0], [0, -0.5, 0, 1], [0.5, 0, 1, 0], [0, 0.5, 0, 1]], np.float32) / IN
    lin = tf.keras.layers.Conv2D(4, 1, use_bias=True, name="ltrb_to_cxcywh")
    xywh = lin(box)
    lin.set_weights([m[None, None], np.zeros(4, np.float32)])
    xywh = tf.keras.layers.Reshape((NCELL, 4))(xywh)
    g = np.concatenate([grid_centres() / IN, np.zeros((NCELL, 2), np.float32)], axis=1)
    xywh = xywh + tf.constant(g[None])
    cls = tf.keras.layers.Reshape((NCELL, NCLS))(hm)
    out = tf.keras.layers.Concatenate(axis=-1)([xywh, cls])
    out = tf.keras.layers.Permute((2, 1), name="yolo_out")(out)
    return tf.keras.Model(inp, out, name="toy_yolo")


SSD_ANCHOR = 24.0  # anchor h = w = 24 px
SSD_SCALES = (10.0, 10.0, 5.0, 5.0)


def ssd_anchors() -> np.ndarray:
    c = grid_centres() / IN
    a = np.full((NCELL, 1), SSD_ANCHOR / IN, np.float32)
    return np.concatenate([c[:, 1:2], c[:, 0:1], a, a], axis=1).astype(np.float32)  # yc, xc, h, w


def ssd_postprocess_attrs() -> str:
    return " ".join(
        [
            'name: "TFLite_Detection_PostProcess"',
            'attr { key: "max_detections" value { i: 20 } }',
            'attr { key: "max_classes_per_detection" value { i: 1 } }',
            'attr { key: "detections_per_class" value { i: 20 } }',
            'attr { key: "use_regular_nms" value { b: false } }',
            'attr { key: "nms_score_threshold" value { f: 0.300000 } }',
            'attr { key: "nms_iou_threshold" value { f: 0.500000 } }',
            'attr { key: "num_classes" value { i: 2 } }',
            'attr { key: "y_scale" value { f: 10.000000 } }',
            'attr { key: "x_scale" value { f: 10.000000 } }',
            'attr { key: "h_scale" value { f: 5.000000 } }',
            'attr { key: "w_scale" value { f: 5.000000 } }',
        ]
    )


def build_ssd_fn(core: tf.keras.Model) -> Callable:
    """tf.function: image [1,192,192,3] in [0,1] -> SSD encodings + custom op."""
    anchors = tf.constant(ssd_anchors())

    @tf.function(experimental_implements=ssd_postprocess_attrs())
    def postprocess(box_encodings: tf.Tensor, class_predictions: tf.Tensor, anchors_t: tf.Tensor) -> tuple:
        boxes = tf.constant(0.0, dtype=tf.float32, shape=[1, 20, 4], name="boxes")
        scores = tf.constant(0.0, dtype=tf.float32, shape=[1, 20], name="scores")
        classes = tf.constant(0.0, dtype=tf.float32, shape=[1, 20], name="classes")
        num = tf.constant(0.0, dtype=tf.float32, shape=[1], name="num_detections")
        return boxes, classes, scores, num

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # freeze the Keras net first: Keras-3 variables otherwise survive as READ_VARIABLE ops
    core_fn = tf.function(lambda x: core(x, training=False))
    frozen = convert_variables_to_constants_v2(core_fn.get_concrete_function(tf.TensorSpec([1, IN, IN, 3], tf.float32)))

    @tf.function(input_signature=[tf.TensorSpec([1, IN, IN, 3], tf.float32, name="image")])
    def fn(image: tf.Tensor) -> tuple:
        hm, box = frozen(image)
        # only CONV_2D / LOG / MAXIMUM / SUB / CONCATENATION / RESHAPE (XNNPACK-friendly; LOG aside)
        k = 1.0 / SSD_ANCHOR
        m_yx = tf.constant([[0, -0.5], [-0.5, 0], [0, 0.5], [0.5, 0]], tf.float32)  # ltrb -> dy, dx
        m_hw = tf.constant([[0, 1], [1, 0], [0, 1], [1, 0]], tf.float32)  # ltrb -> h, w
        yx = tf.nn.conv2d(box, m_yx[None, None] * (k * SSD_SCALES[0]), 1, "VALID")
        hw = tf.nn.conv2d(box, m_hw[None, None] * k, 1, "VALID") + 0.5 * k  # > 0: ltrb >= 0
        thw = tf.math.log(hw) * SSD_SCALES[2]
        enc = tf.reshape(tf.concat([yx, thw], axis=-1), [1, NCELL, 4])
        # class predictions [background = relu(1 - p0 - p1), p0, p1] as one 1x1 conv + ReLU
        m_cls = tf.constant([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]], tf.float32)
        cls = tf.nn.relu(tf.nn.conv2d(hm, m_cls[None, None], 1, "VALID") + tf.constant([1.0, 0.0, 0.0]))
        cls = tf.reshape(cls, [1, NCELL, NCLS + 1])
        return postprocess(enc, cls, anchors)

    return fn


# ----------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------


def calib_tiles(n: int) -> np.ndarray:
    tiles = np.stack([make_tile(CALIB_SEED0 + k)[0] for k in range(n)]).astype(np.float32) / 255.0
    tiles[0, 0, 0] = 0.0  # pin the input range to exactly [0, 1] -> scale 1/255
    tiles[0, 0, 1] = 1.0
    return tiles


def rep_data(tiles: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for t in tiles:
            yield [t[None].astype(np.float32)]

    return gen


def convert_keras(model: tf.keras.Model, tiles: np.ndarray, in_type: tf.DType) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_data(tiles)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = in_type
    conv.inference_output_type = tf.int8
    return conv.convert()


def convert_ssd(core: tf.keras.Model, tiles: np.ndarray) -> bytes:
    import tempfile

    module = tf.Module()
    module.fn = build_ssd_fn(core)
    tmp = tempfile.mkdtemp(prefix="toy_ssd_sm_")
    tf.saved_model.save(module, tmp, signatures=module.fn.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_data(tiles)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.allow_custom_ops = True
    conv.inference_input_type = tf.uint8
    return conv.convert()


def build_bench() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(11)
    inp = tf.keras.Input((320, 320, 3), name="image")  # pixel/255
    x = tf.keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    mb = tf.keras.applications.MobileNetV2(input_shape=(320, 320, 3), alpha=0.35, include_top=False, weights=None)
    names = {4: "block_2_add", 8: "block_5_add", 16: "block_12_add", 32: "out_relu"}
    feat = tf.keras.Model(mb.input, [mb.get_layer(n).output for n in names.values()])
    c4, c8, c16, c32 = feat(x)
    p = cbr(c32, 64, k=1, name="b_lat32")
    p = tf.keras.layers.UpSampling2D(2, interpolation="bilinear")(p)
    p = tf.keras.layers.Add()([p, cbr(c16, 64, k=1, name="b_lat16")])
    p = cbr(p, 64, name="b_p16")
    p = tf.keras.layers.UpSampling2D(2, interpolation="bilinear")(p)
    p = tf.keras.layers.Add()([p, cbr(c8, 64, k=1, name="b_lat8")])
    p = cbr(p, 48, name="b_p8")
    p = tf.keras.layers.UpSampling2D(2, interpolation="bilinear")(p)
    p = tf.keras.layers.Add()([p, cbr(c4, 48, k=1, name="b_lat4")])
    p = cbr(p, 48, name="b_p4")
    h = cbr(p, 48, name="b_hm_head")
    hm = tf.keras.layers.Conv2D(4, 1, bias_initializer=tf.keras.initializers.Constant(-4.6))(h)
    hm = tf.keras.layers.Activation("sigmoid", name="heatmap")(hm)
    b = cbr(p, 48, name="b_box_head")
    box = tf.keras.layers.Conv2D(4, 1, bias_initializer=tf.keras.initializers.Constant(1.0))(b)
    box = tf.keras.layers.ReLU(name="box")(box)
    return tf.keras.Model(inp, [hm, box], name="bench320_centernet")


def bench_calib(n: int) -> np.ndarray:
    rng = np.random.default_rng(123)
    files = sorted(BG_PHOTOS.glob("*.jpg")) + sorted(BG_PHOTOS.glob("*.png"))
    out = []
    for _ in range(n):
        im = Image.open(files[int(rng.integers(len(files)))]).convert("RGB")
        w, h = im.size
        s = int(rng.integers(320, max(321, min(w, h))))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        im = im.crop((x, y, x + s, y + s)).resize((320, 320), Image.Resampling.BILINEAR)
        out.append(np.asarray(im, np.float32) / 255.0)
    arr = np.stack(out)
    arr[0, 0, 0] = 0.0
    arr[0, 0, 1] = 1.0
    return arr


# ----------------------------------------------------------------------------
# running / decoding with ai_edge_litert (the same way the tests will)
# ----------------------------------------------------------------------------


def interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    return it


def run_raw(it: Any, tile: np.ndarray) -> list[np.ndarray]:
    d = it.get_input_details()[0]
    if d["dtype"] == np.int8:
        x = (tile.astype(np.int16) - 128).astype(np.int8)
    elif d["dtype"] == np.uint8:
        x = tile.astype(np.uint8)
    else:
        x = tile.astype(np.float32) / 255.0
    it.set_tensor(d["index"], x[None])
    it.invoke()
    return [it.get_tensor(o["index"]).copy() for o in it.get_output_details()]


def deq(a: np.ndarray, det: dict) -> np.ndarray:
    s, z = det["quantization"]
    if s == 0:
        return a.astype(np.float32)
    return (a.astype(np.float32) - z) * s


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i], boxes[j]) < iou_thr]
    return keep


def iou(a: np.ndarray | list, b: np.ndarray | list) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / u) if u > 0 else 0.0


def decode(kind: str, it: Any, outs: list[np.ndarray], thr: float = 0.3) -> list[tuple[int, float, np.ndarray]]:
    det = it.get_output_details()
    res: list[tuple[int, float, np.ndarray]] = []
    if kind == "centernet":
        ih, ib = cn_order(it)
        hm = deq(outs[ih], det[ih])[0]
        bx = deq(outs[ib], det[ib])[0]
        pad = np.pad(hm, ((1, 1), (1, 1), (0, 0)), constant_values=-1)
        mx = np.max(np.stack([pad[di : di + GRID, dj : dj + GRID] for di in range(3) for dj in range(3)]), axis=0)
        ii, jj, kk = np.nonzero((hm >= mx) & (hm >= thr))
        for i, j, k in zip(ii, jj, kk, strict=True):
            cx, cy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
            le, t, r, b = bx[i, j]
            res.append((int(k), float(hm[i, j, k]), np.array([cx - le, cy - t, cx + r, cy + b])))
    elif kind == "yolo_v8":
        o = deq(outs[0], det[0])[0]  # [6, 2304]
        sc = o[4:].max(0)
        cl = o[4:].argmax(0)
        for k in np.nonzero(sc >= thr)[0]:
            cx, cy, w, h = o[:4, k] * IN
            res.append((int(cl[k]), float(sc[k]), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])))
    else:
        order = ssd_order(it)
        boxes, classes, scores, count = (outs[order[n]] for n in ("boxes", "classes", "scores", "count"))
        for k in range(int(count[0])):
            if scores[0, k] >= thr:
                y1, x1, y2, x2 = boxes[0, k] * IN
                res.append((int(classes[0, k]), float(scores[0, k]), np.array([x1, y1, x2, y2])))
        return res
    if not res:
        return res
    keep = nms(np.stack([r[2] for r in res]), np.array([r[1] for r in res]), 0.5)
    return [res[k] for k in keep]


def cn_order(it: Any) -> tuple[int, int]:
    """(heatmap, box) output positions: the heatmap is the LOGISTIC output."""
    det = it.get_output_details()
    sig = {int(t) for o in it._get_ops_details() if o["op_name"] == "LOGISTIC" for t in o["outputs"]}
    hm = next(k for k, d in enumerate(det) if d["index"] in sig)
    return hm, 1 - hm


def ssd_order(it: Any) -> dict[str, int]:
    """Identify the post-process outputs by shape and content (names vary)."""
    det = it.get_output_details()
    order: dict[str, int] = {}
    two = []
    for k, d in enumerate(det):
        shp = tuple(d["shape"])
        if len(shp) == 3:
            order["boxes"] = k
        elif len(shp) == 1:
            order["count"] = k
        else:
            two.append(k)
    # TFLite_Detection_PostProcess output tensors are in the op's own order
    # boxes(0), classes(1), scores(2), count(3); match by tensor index order.
    op_out = sorted(two, key=lambda k: det[k]["index"])
    order["classes"], order["scores"] = op_out[0], op_out[1]
    return order


def evaluate(kind: str, path: Path, n: int = 500) -> dict[str, float]:
    it = interpreter(path)
    n_gt = n_hit = n_fp = 0
    for s in range(n):
        tile, truth = make_tile(EVAL_SEED0 + s, 10.0, 64.0)
        dets = decode(kind, it, run_raw(it, tile))
        gts = [t for t in truth if t["inside"]]
        edge = [t for t in truth if not t["inside"]]
        used = set()
        n_gt += len(gts)
        for c, _score, b in dets:
            best, bi = 0.0, -1
            for gi, t in enumerate(gts):
                if gi in used or LABELS.index(t["label"]) != c:
                    continue
                v = iou(b, t["box"])
                if v > best:
                    best, bi = v, gi
            if best >= 0.5:
                used.add(bi)
                n_hit += 1
                continue
            if any(iou(b, t["box"]) >= 0.3 for t in edge):
                continue  # a detection of a target cut by the tile edge: not scored
            n_fp += 1
    return {"recall": n_hit / max(1, n_gt), "fp_per_tile": n_fp / n, "n_targets": n_gt, "n_tiles": n}


def check_ops(path: Path) -> tuple[list[str], list[str]]:
    """(all op names, op names LiteRT's default XNNPACK delegate did NOT take).

    After delegation the interpreter lists its original nodes plus one DELEGATE
    node per XNNPACK partition.  An original node still runs on the reference
    kernels when its output is not produced by a partition but is read by a
    partition, by a graph output or by another such node.
    """
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
    names = sorted({o["op_name"] for o in orig})
    left = [o["op_name"] for o in orig if o["index"] in undelegated]
    return names, left


def time_invoke(path: Path, reps: int = 50) -> float:
    it = interpreter(path)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(5):
        it.invoke()
    t = time.perf_counter()
    for _ in range(reps):
        it.invoke()
    return (time.perf_counter() - t) / reps * 1000


# ----------------------------------------------------------------------------
# sidecars, fixture, golden
# ----------------------------------------------------------------------------

OSM = {
    "fixed": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "fixed" }',
    "dome": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "dome" }',
    "ptz": '{ man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "panning" }',
    "alpr": '{ man_made = "surveillance", "surveillance:type" = "ALPR" }',
}
TOY_PROV = (
    "Trained by tests/models/make_test_models.py on procedurally generated toy targets (no third-party data). "
    "A test model: it finds toy rectangles ('fixed') and discs ('dome'), not real cameras."
)
BENCH_PROV = (
    "Made by tests/models/make_test_models.py: MobileNetV2-0.35 + light FPN + CenterNet heads, "
    "untrained, random weights, for timing only. int8 calibration used crops of street photos "
    "(not distributed with the model). It detects nothing."
)


def write_sidecar(path: Path, name: str, family: str, tensors: str, labels: list[str], prov: str) -> None:
    it = interpreter(path)
    d = it.get_input_details()[0]
    _, h, w, c = (int(v) for v in d["shape"])
    scale, zp = d["quantization"]
    dtype = np.dtype(d["dtype"]).name
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    lines = [
        "[model]",
        f'name = "{name}"',
        'version = "1.0.0"',
        f'sha256 = "{sha}"',
        'licence = "Apache-2.0"',
        f'provenance = "{prov}"',
        "",
        "[input]",
        f"width = {w}",
        f"height = {h}",
        f"channels = {c}",
        'channel_order = "RGB"',
        f'dtype = "{dtype}"',
        f"scale = {float(scale)!r}",
        f"zero_point = {int(zp)}",
        "mean = [0.0, 0.0, 0.0]",
        "std = [255.0, 255.0, 255.0]",
        "",
        "[output]",
        f'family = "{family}"',
        f"tensors = {tensors}",
    ]
    if family == "yolo_v8":
        lines.append('coords = "normalized"')
    lines += ["score_threshold = 0.45", "nms_iou = 0.5"]
    for lab in labels:
        lines += ["", "[[labels]]", f'name = "{lab}"', f"osm = {OSM[lab]}"]
    path.with_suffix(".toml").write_text("\n".join(lines) + "\n")


def make_fixture() -> tuple[np.ndarray, list[dict]]:
    seed = FIXTURE_SEED
    while True:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(4, 6))
        try:
            img, truth = make_scene(seed, IN, IN, n, 12, 60, margin=2)
        except ValueError:
            seed += 1
            continue
        if len({t["label"] for t in truth}) == 2:
            break
        seed += 1
    fx = TESTS / "fixtures"
    fx.mkdir(exist_ok=True)
    Image.fromarray(img).save(fx / "toy_tile.png")
    (fx / "toy_tile.json").write_text(
        json.dumps({"width": IN, "height": IN, "seed": seed, "targets": truth}, indent=2) + "\n"
    )
    return img, truth


def write_golden(path: Path, tile: np.ndarray) -> None:
    it = interpreter(path)
    outs = run_raw(it, tile)
    arrs: dict[str, np.ndarray] = {}
    for k, (o, d) in enumerate(zip(outs, it.get_output_details(), strict=True)):
        arrs[f"out{k}"] = o
        arrs[f"scale{k}"] = np.float32(d["quantization"][0])
        arrs[f"zp{k}"] = np.int32(d["quantization"][1])
    gd = TESTS / "golden"
    gd.mkdir(exist_ok=True)
    np.savez(gd / f"{path.stem}_raw.npz", **arrs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights-cache", type=Path, default=Path("/tmp/sousveil_toy_weights"))
    ap.add_argument("--retrain", action="store_true", help="train from scratch")
    ap.add_argument("--finetune", type=int, default=0, help="steps of extra training from the cache")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--eval-tiles", type=int, default=500)
    args = ap.parse_args()

    wfile = args.weights_cache / "toy.weights.h5"
    if args.retrain or not wfile.exists():
        # the recipe of the committed models: 3000 steps at lr 2e-3, then 1500 at 5e-4 on new tiles
        train(args.weights_cache, args.train_steps)
        train_m = train(args.weights_cache, 1500, resume=True, lr0=5e-4, chunk0=1000)
    elif args.finetune:
        train_m = train(args.weights_cache, args.finetune, resume=True, lr0=5e-4, chunk0=1000)
    else:
        train_m = build_toy(export=False)
        train_m.load_weights(str(wfile))
    core = build_toy(export=True)
    copy_weights(train_m, core)

    tiles = calib_tiles(200)
    cn = HERE / "toy_centernet.tflite"
    cn.write_bytes(convert_keras(core, tiles, tf.int8))
    yo = HERE / "toy_yolo.tflite"
    yo.write_bytes(convert_keras(build_yolo(core), tiles, tf.uint8))
    ssd = HERE / "toy_ssd.tflite"
    ssd.write_bytes(convert_ssd(core, tiles))
    bench = HERE / "bench320_centernet.tflite"
    bench.write_bytes(convert_keras(build_bench(), bench_calib(100), tf.int8))

    def cn_tensors(p: Path) -> str:
        hm, box = cn_order(interpreter(p))
        return f"{{ heatmap = {hm}, box = {box} }}"

    it = interpreter(ssd)
    o = ssd_order(it)
    ssd_t = f"{{ boxes = {o['boxes']}, classes = {o['classes']}, scores = {o['scores']}, count = {o['count']} }}"
    write_sidecar(cn, "toy-centernet", "centernet", cn_tensors(cn), ["fixed", "dome"], TOY_PROV)
    write_sidecar(yo, "toy-yolo", "yolo_v8", "{ output = 0 }", ["fixed", "dome"], TOY_PROV)
    write_sidecar(ssd, "toy-ssd", "ssd_postprocess", ssd_t, ["fixed", "dome"], TOY_PROV)
    write_sidecar(
        bench, "bench320-centernet", "centernet", cn_tensors(bench), ["fixed", "dome", "ptz", "alpr"], BENCH_PROV
    )

    tile, _ = make_fixture()
    for p in (cn, yo, ssd):
        write_golden(p, tile)

    for p, kind in ((cn, "centernet"), (yo, "yolo_v8"), (ssd, "ssd"), (bench, None)):
        it = interpreter(p)
        print(f"== {p.name}: {p.stat().st_size / 1024:.0f} KB")
        print(
            "   in :",
            [
                (d["name"], tuple(d["shape"]), np.dtype(d["dtype"]).name, d["quantization"])
                for d in it.get_input_details()
            ],
        )
        for k, d in enumerate(it.get_output_details()):
            print(f"   out{k}:", d["name"], tuple(d["shape"]), np.dtype(d["dtype"]).name, d["quantization"])
        ops, xnn = check_ops(p)
        print("   ops:", ops)
        print("   not delegated to XNNPACK:", xnn)
        print(f"   invoke: {time_invoke(p):.2f} ms (2 threads)")
        if kind is not None and args.eval_tiles:
            print("   eval:", evaluate(kind, p, args.eval_tiles), flush=True)


if __name__ == "__main__":
    main()
