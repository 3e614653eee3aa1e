"""The camera model: MobileNetV2 (ImageNet, ported) + light FPN to stride 4 + CenterNet heads.

Training variant: heatmap logits and ``BOX_SCALE * relu(conv)`` box.  Export variant: sigmoid
heatmap and ``relu(conv)`` box with ``BOX_SCALE`` folded into the last conv (``copy_weights``).
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from models.synth.assets import CLASSES
from models.train.backbone import imagenet_norm_layer, mobilenet_v2_features, set_imagenet_norm

L = tf.keras.layers
STRIDE = 4
LABELS = list(CLASSES)
NCLS = len(LABELS)
BOX_SCALE = 16.0
FPN_CH = 64
HEAD_CH = 48


def cbr(x: tf.Tensor, ch: int, name: str) -> tf.Tensor:
    """1x1 conv + BN + ReLU6."""
    x = L.Conv2D(ch, 1, use_bias=False, name=name + "_conv")(x)
    x = L.BatchNormalization(name=name + "_bn")(x)
    return L.ReLU(6.0, name=name + "_relu")(x)


def dsconv(x: tf.Tensor, ch: int, name: str) -> tf.Tensor:
    """Depthwise-separable 3x3: DW + BN + ReLU6, PW + BN + ReLU6."""
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=name + "_dw")(x)
    x = L.BatchNormalization(name=name + "_dwbn")(x)
    x = L.ReLU(6.0, name=name + "_dwrelu")(x)
    return cbr(x, ch, name + "_pw")


def build(size: int | None = 320, export: bool = False) -> tf.keras.Model:
    """Input: pixel/255 in [0, 1], shape [size, size, 3] (size None: any multiple of 32)."""
    batch = 1 if export else None
    inp = tf.keras.Input((size, size, 3), batch_size=batch, name="image")
    norm = imagenet_norm_layer()
    x = norm(inp)
    set_imagenet_norm(norm)
    f = mobilenet_v2_features(x, 32)
    p = cbr(f[32], FPN_CH, "lat32")
    for st in (16, 8, 4):
        p = L.UpSampling2D(2, interpolation="bilinear", name=f"up{st}")(p)
        ch = FPN_CH if st > 4 else HEAD_CH
        if st == 4:
            p = cbr(p, HEAD_CH, "red4")
        p = L.Add(name=f"add{st}")([p, cbr(f[st], ch, f"lat{st}")])
        p = dsconv(p, ch, f"p{st}")
    h = dsconv(p, HEAD_CH, "hm_head")
    hm = L.Conv2D(NCLS, 1, name="hm_out", bias_initializer=tf.keras.initializers.Constant(-4.6))(h)
    b = dsconv(p, HEAD_CH, "box_head")
    box = L.Conv2D(4, 1, name="box_out", bias_initializer=tf.keras.initializers.Constant(0.5))(b)
    box = L.ReLU(name="box")(box)
    if export:
        hm = L.Activation("sigmoid", name="heatmap")(hm)
    else:
        box = L.Rescaling(BOX_SCALE, name="box_scale")(box)
    return tf.keras.Model(inp, [hm, box], name="sousveil_cams")


def copy_weights(train_m: tf.keras.Model, export_m: tf.keras.Model) -> None:
    for layer in export_m.layers:
        if not layer.weights:
            continue
        w = train_m.get_layer(layer.name).get_weights()
        if layer.name == "box_out":
            w = [w[0] * BOX_SCALE, w[1] * BOX_SCALE]
        layer.set_weights(w)


def focal_loss(logits: tf.Tensor, hm: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    p = tf.clip_by_value(tf.sigmoid(logits), 1e-4, 1 - 1e-4)
    pos = tf.cast(hm > 0.999, tf.float32)
    pos_l = -tf.math.log(p) * tf.square(1 - p) * pos
    neg_l = -tf.math.log(1 - p) * tf.square(p) * tf.pow(1 - hm, 4) * (1 - pos) * mask
    npos = tf.maximum(1.0, tf.reduce_sum(pos))
    return (tf.reduce_sum(pos_l) + tf.reduce_sum(neg_l)) / npos


def box_loss(pred: tf.Tensor, tgt: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """GIoU + 0.5 * size-normalised L1 on ltrb distances, weighted cells only."""
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


def count_params(m: tf.keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in m.weights if "moving" not in v.name))
