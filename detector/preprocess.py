"""Pixels to model input: one table look-up per tile, written straight into the input tensor.

The sidecar says how a pixel (0..255) becomes the network's value, ``(p - mean) / std``,
and how that value is stored, ``round(v / scale) + zero_point``. Both together map 256
pixel values to 256 stored values per channel, so the whole conversion of a tile is one
pass into the interpreter's own input buffer: no float image, no temporary copy. The two
common inputs need no table: raw uint8 pixels are a copy, and int8 ``pixel - 128`` (scale
1/255, zero point -128, our camera model) is the pixel's top bit flipped; anything else is
one ``np.take`` through the table (per channel when the channels differ).
"""

from __future__ import annotations

import numpy as np

from detector.sidecar import InputSpec

_NP_DTYPES: dict[str, type[np.generic]] = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32}


def pixel_table(spec: InputSpec) -> np.ndarray:
    """``(3, 256)`` table: stored input value of pixel value p in channel c (model order)."""
    p = np.arange(256, dtype=np.float64)
    rows = []
    for c in range(3):
        value = (p - spec.mean[c]) / spec.std[c]
        if spec.dtype == "float32":
            rows.append(value)
            continue
        info = np.iinfo(np.dtype(spec.dtype))
        rows.append(np.clip(np.rint(value / spec.scale) + spec.zero_point, info.min, info.max))
    return np.stack(rows).astype(_NP_DTYPES[spec.dtype])


class Quantiser:
    """Writes an RGB (or BGR) uint8 tile into a model input view, in the model's order."""

    def __init__(self, spec: InputSpec, pad_value: int = 114) -> None:
        self.table = pixel_table(spec)
        self.model_bgr = spec.channel_order == "BGR"
        self.same_for_all = bool(np.all(self.table == self.table[0]))
        p = np.arange(256)
        # The two common cases need no table: uint8 input of raw pixels, and int8 input of
        # pixel - 128 (scale 1/255, zero point -128), which is the pixel's top bit flipped.
        self.identity = self.same_for_all and spec.dtype == "uint8" and bool(np.all(self.table[0] == p))
        self.flip_top_bit = self.same_for_all and spec.dtype == "int8" and bool(np.all(self.table[0] == p - 128))
        self.pad = self.table[:, pad_value]

    def write(self, src: np.ndarray, dst: np.ndarray, *, src_bgr: bool = False) -> None:
        """Convert ``src`` (h, w, 3 uint8) into the top-left of ``dst`` (H, W, 3); pad the rest."""
        h, w = src.shape[:2]
        if h < dst.shape[0]:
            dst[h:] = self.pad
        if w < dst.shape[1]:
            dst[:h, w:] = self.pad
        if src_bgr != self.model_bgr:
            src = src[..., ::-1]  # a strided view, no copy
        target = dst[:h, :w]
        if self.identity:
            np.copyto(target, src)
        elif self.flip_top_bit:
            np.bitwise_xor(src, np.uint8(0x80), out=target.view(np.uint8))
        elif self.same_for_all:
            np.take(self.table[0], src, out=target, mode="clip")
        else:
            for c in range(3):
                np.take(self.table[c], src[..., c], out=target[..., c], mode="clip")
