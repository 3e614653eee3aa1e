"""Centre-point heads on a grid, the family of sousveil's own camera model.

Two outputs on one grid of ``H x W`` cells (stride ``input / grid``):

- ``heatmap`` ``[1, H, W, C]``: per-class probability that an object's centre lies in the
  cell (sigmoid applied inside the model, so int8 quantisation keeps it in [0, 1]);
- ``box`` ``[1, H, W, 4]``: distances from the cell centre ``((j + .5) * stride,
  (i + .5) * stride)`` to the box's left, top, right and bottom edges, in input pixels.

A detection is a cell that is a local maximum (3x3) of its class's heatmap and scores at
least the threshold. The threshold is applied to the raw int8 values first, so only the
few candidate cells are ever dequantised. Small objects (a few pixels) get their own cell
at stride 4, which is why this family suits far-away cameras better than anchor boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from detector.decoders.base import Decoder, TensorInfo, TileDetections
from detector.decoders.nms import batched_nms

if TYPE_CHECKING:
    from detector.sidecar import ModelSpec

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


class CenterNetDecoder(Decoder):
    FAMILY: ClassVar[str] = "centernet"
    TENSORS: ClassVar[tuple[str, ...]] = ("heatmap", "box")
    MAX_CANDIDATES: ClassVar[int] = 200

    def __init__(self, spec: ModelSpec, outputs: Sequence[TensorInfo]) -> None:
        super().__init__(spec, outputs)
        hm, box = self.t["heatmap"].shape, self.t["box"].shape
        if len(hm) != 4 or hm[0] != 1 or hm[3] != self.num_classes:
            raise self.mismatch(
                f"heatmap output has shape {list(hm)}, expected [1, H, W, {self.num_classes}] (one channel per label)"
            )
        if list(box) != [1, hm[1], hm[2], 4]:
            raise self.mismatch(f"box output has shape {list(box)}, expected [1, {hm[1]}, {hm[2]}, 4]")
        self.grid_h, self.grid_w = hm[1], hm[2]
        self.stride_x = self.in_w / self.grid_w
        self.stride_y = self.in_h / self.grid_h

    def decode(self, outputs: Sequence[np.ndarray], score_threshold: float) -> TileDetections:
        hm_info, box_info = self.t["heatmap"], self.t["box"]
        hm = self.raw(outputs, "heatmap")[0]
        qthr = hm_info.quantised_threshold(score_threshold)
        if hm.max() < qthr:  # most tiles hold no camera: a max is far cheaper than nonzero
            return TileDetections.empty()
        ii, jj, cc = np.nonzero(hm >= qthr)
        values = hm[ii, jj, cc]
        if ii.size > self.MAX_CANDIDATES:
            top = np.argsort(-values.astype(np.float32), kind="stable")[: self.MAX_CANDIDATES]
            ii, jj, cc, values = ii[top], jj[top], cc[top], values[top]
        # Keep cells that are a local maximum of their class's heatmap (3x3 neighbourhood).
        peak = np.ones(ii.shape, dtype=bool)
        for dy, dx in _OFFSETS:
            ni, nj = ii + dy, jj + dx
            inside = (ni >= 0) & (ni < self.grid_h) & (nj >= 0) & (nj < self.grid_w)
            neighbour = hm[np.clip(ni, 0, self.grid_h - 1), np.clip(nj, 0, self.grid_w - 1), cc]
            peak &= ~inside | (values >= neighbour)
        ii, jj, cc, values = ii[peak], jj[peak], cc[peak], values[peak]
        scores = hm_info.dequantise(values)
        ltrb = box_info.dequantise(self.raw(outputs, "box")[0, ii, jj, :])
        ltrb = np.maximum(ltrb, 0.0)
        cx = (jj.astype(np.float32) + 0.5) * np.float32(self.stride_x)
        cy = (ii.astype(np.float32) + 0.5) * np.float32(self.stride_y)
        boxes = np.stack(
            [
                (cx - ltrb[:, 0]) / self.in_w,
                (cy - ltrb[:, 1]) / self.in_h,
                (cx + ltrb[:, 2]) / self.in_w,
                (cy + ltrb[:, 3]) / self.in_h,
            ],
            axis=1,
        )
        np.clip(boxes, 0.0, 1.0, out=boxes)
        class_ids = cc.astype(np.int32)
        keep = batched_nms(boxes, scores, class_ids, self.nms_iou)
        return TileDetections(boxes[keep], scores[keep], class_ids[keep])
