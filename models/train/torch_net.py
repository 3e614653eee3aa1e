"""The camera model in PyTorch, layer for layer the Keras model of ``net.py``.

For training on a GPU (``torch_train.py``); the trained weights go back into the Keras
model with :func:`to_keras` and are exported to int8 TFLite by ``export.py`` as usual.
Module names are the Keras layer names, so the transfer is a mechanical copy. Batch norm
epsilon is torchvision's 1e-5 in the backbone and Keras's default 1e-3 in the FPN and heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

FPN_CH, HEAD_CH, NCLS, BOX_SCALE = 64, 48, 4, 16.0
TAPS = {4: 3, 8: 6, 16: 13, 32: 17}
KERAS_BN_EPS = 1e-3
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _cna(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class InvertedResidual(nn.Module):
    """torchvision's block, with its parameter names (``conv.0.0.weight`` ...)."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [] if t == 1 else [_cna(cin, hidden, k=1)]
        layers += [
            _cna(hidden, hidden, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features() -> nn.Sequential:
    """torchvision ``mobilenet_v2().features[:18]`` without torchvision (same names)."""
    blocks: list[nn.Module] = [_cna(3, 32, 2)]
    cin = 32
    for t, c, n, s in SETTINGS:
        for r in range(n):
            blocks.append(InvertedResidual(cin, c, s if r == 0 else 1, t))
            cin = c
    return nn.Sequential(*blocks)


class CBR(nn.Sequential):
    """1x1 conv + BN + ReLU6 (Keras ``cbr``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=KERAS_BN_EPS), nn.ReLU6())


class DSConv(nn.Module):
    """Depthwise 3x3 + BN + ReLU6, then CBR (Keras ``dsconv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.dwbn = nn.BatchNorm2d(cin, eps=KERAS_BN_EPS)
        self.pw = CBR(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(F.relu6(self.dwbn(self.dw(x))))


class CamsNet(nn.Module):
    """Input: pixel/255 in [0, 1], NCHW. Output: heatmap logits, box ltrb in pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.features = mobilenet_v2_features()
        chans = {4: 24, 8: 32, 16: 96, 32: 320}
        self.lat32 = CBR(chans[32], FPN_CH)
        self.lat16, self.lat8, self.lat4 = CBR(chans[16], FPN_CH), CBR(chans[8], FPN_CH), CBR(chans[4], HEAD_CH)
        self.red4 = CBR(FPN_CH, HEAD_CH)
        self.p16, self.p8, self.p4 = DSConv(FPN_CH, FPN_CH), DSConv(FPN_CH, FPN_CH), DSConv(HEAD_CH, HEAD_CH)
        self.hm_head, self.box_head = DSConv(HEAD_CH, HEAD_CH), DSConv(HEAD_CH, HEAD_CH)
        self.hm_out, self.box_out = nn.Conv2d(HEAD_CH, NCLS, 1), nn.Conv2d(HEAD_CH, 4, 1)
        nn.init.constant_(self.hm_out.bias, -4.6)
        nn.init.constant_(self.box_out.bias, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (x - self.mean) / self.std
        taps: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.features):
            y = block(y)
            for st, bi in TAPS.items():
                if bi == i:
                    taps[st] = y
        p = self.lat32(taps[32])
        for st, lat, post in ((16, self.lat16, self.p16), (8, self.lat8, self.p8), (4, self.lat4, self.p4)):
            p = F.interpolate(p, scale_factor=2.0, mode="bilinear", align_corners=False)
            if st == 4:
                p = self.red4(p)
            p = post(p + lat(taps[st]))
        hm = self.hm_out(self.hm_head(p))
        box = BOX_SCALE * F.relu(self.box_out(self.box_head(p)))
        return hm, box


def load_imagenet(model: CamsNet, weights: Path) -> None:
    """torchvision MobileNetV2 ImageNet weights (.pth, or .npz of float16 arrays) into the backbone."""
    if weights.suffix == ".npz":
        data = np.load(weights)
        sd = {k: torch.from_numpy(data[k].astype(np.float32)) for k in data.files}
    else:
        sd = torch.load(str(weights), map_location="cpu", weights_only=True)
    own = {k: v for k, v in sd.items() if k.startswith("features.") and int(k.split(".")[1]) < 18}
    missing, _ = model.load_state_dict(own, strict=False)
    assert not [k for k in missing if k.startswith("features.")], "backbone weights incomplete"


def focal_loss(logits: torch.Tensor, hm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = (hm > 0.999).float()
    pos_l = -torch.log(p) * (1 - p) ** 2 * pos
    neg_l = -torch.log(1 - p) * p**2 * (1 - hm) ** 4 * (1 - pos) * mask
    return (pos_l.sum() + neg_l.sum()) / pos.sum().clamp(min=1.0)


def box_loss(pred: torch.Tensor, tgt: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    pred = pred.float()
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = tgt.unbind(1)
    pa, ta = (pl + pr) * (pt + pb), (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = pa + ta - inter + 1e-6
    carea = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb)) + 1e-6
    giou = inter / union - (carea - union) / carea
    size = ((tl + tr + tt + tb) / 2).clamp(min=8.0)
    l1 = (pred - tgt).abs().sum(1) / size
    w = w[:, 0]
    return (((1 - giou) + 0.5 * l1) * w).sum() / w.sum().clamp(min=1.0)


def _bn(sd: dict[str, np.ndarray], pfx: str) -> list[np.ndarray]:
    return [sd[f"{pfx}.weight"], sd[f"{pfx}.bias"], sd[f"{pfx}.running_mean"], sd[f"{pfx}.running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))


def to_keras(state: dict[str, Any], keras_model: Any) -> int:
    """Copy a CamsNet state dict into the Keras training model of ``net.build``; layers set."""
    from models.train.backbone import port_weights

    sd = {k: (v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in state.items()}
    n = port_weights(keras_model, {k: v for k, v in sd.items() if k.startswith("features.")})

    def cbr(name: str, pfx: str) -> None:
        keras_model.get_layer(f"{name}_conv").set_weights([_conv(sd[f"{pfx}.0.weight"])])
        keras_model.get_layer(f"{name}_bn").set_weights(_bn(sd, f"{pfx}.1"))

    def dsconv(name: str) -> None:
        keras_model.get_layer(f"{name}_dw").set_weights([np.transpose(sd[f"{name}.dw.weight"], (2, 3, 0, 1))])
        keras_model.get_layer(f"{name}_dwbn").set_weights(_bn(sd, f"{name}.dwbn"))
        cbr(f"{name}_pw", f"{name}.pw")

    for name in ("lat32", "lat16", "lat8", "lat4", "red4"):
        cbr(name, name)
    for name in ("p16", "p8", "p4", "hm_head", "box_head"):
        dsconv(name)
    for name in ("hm_out", "box_out"):
        keras_model.get_layer(name).set_weights([_conv(sd[f"{name}.weight"]), sd[f"{name}.bias"]])
    return n + 17
