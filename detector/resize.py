"""Shrinking a region of a frame for the coarse level, in numpy, with tables built once.

An integer box filter first (each output pixel the mean of k x k input pixels, so small
bright things are averaged, not skipped), then bilinear interpolation for the fraction
left. The index tables depend only on the sizes and are built once per tile plan.
"""

from __future__ import annotations

import numpy as np


class Resizer:
    """Resizes ``(src_h, src_w, 3)`` uint8 images to ``(dst_h, dst_w, 3)``."""

    def __init__(self, src_h: int, src_w: int, dst_h: int, dst_w: int) -> None:
        self.src_h, self.src_w, self.dst_h, self.dst_w = src_h, src_w, dst_h, dst_w
        k = int(min(src_h / dst_h, src_w / dst_w))
        self.k = k if k >= 2 else 1
        mid_h, mid_w = src_h // self.k, src_w // self.k
        self.mid_h, self.mid_w = mid_h, mid_w
        self.exact = (mid_h, mid_w) == (dst_h, dst_w)
        if not self.exact:
            self.y0, self.y1, self.wy = self._axis(mid_h, dst_h)
            self.x0, self.x1, self.wx = self._axis(mid_w, dst_w)

    @staticmethod
    def _axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(dst, dtype=np.float32) + 0.5) * (src / dst) - 0.5
        pos = np.clip(pos, 0.0, src - 1)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, src - 1)
        return i0, i1, (pos - i0).astype(np.float32)

    def __call__(self, src: np.ndarray) -> np.ndarray:
        mid = self._box_reduce(src) if self.k > 1 else src
        if self.exact:
            return np.ascontiguousarray(mid)
        rows0 = mid[self.y0].astype(np.float32)
        rows1 = mid[self.y1].astype(np.float32)
        wy = self.wy[:, None, None]
        rows = rows0 + (rows1 - rows0) * wy
        wx = self.wx[None, :, None]
        out = rows[:, self.x0] + (rows[:, self.x1] - rows[:, self.x0]) * wx
        result: np.ndarray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return result

    def _box_reduce(self, src: np.ndarray) -> np.ndarray:
        """Mean of each k x k block. Rows: one sum over a reshaped view. Columns: einsum,
        whose plain loop beats numpy's reductions over such short interleaved axes (and,
        unlike a matrix product, wakes no BLAS threads to compete with the interpreter)."""
        k, h, w = self.k, self.mid_h, self.mid_w
        acc_type = np.uint16 if k * k * 255 <= np.iinfo(np.uint16).max else np.uint32
        rows = src[: h * k, : w * k].reshape(h, k, w * k * 3).sum(axis=1, dtype=acc_type)
        acc: np.ndarray = np.einsum("nkc->nc", rows.reshape(h * w, k, 3))
        acc += (k * k) // 2
        acc //= k * k
        return acc.astype(np.uint8).reshape(h, w, 3)
