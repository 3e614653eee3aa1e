"""Raw YOLO heads (Ultralytics v8/v11 layout): boxes and class scores, NMS here in numpy.

One output ``[1, 4 + C, N]`` (or its transpose ``[1, N, 4 + C]``): for each of N
candidates the box centre and size ``cx, cy, w, h`` and C class probabilities (no
objectness). Coordinates are normalised to the input (``coords = "normalized"``, what
Ultralytics' TFLite export writes) or in input pixels (``coords = "pixels"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detector.decoders.base import Decoder, TensorInfo, TileDetections
from detector.decoders.nms import batched_nms
from detector.errors import SidecarError

if TYPE_CHECKING:
    from detector.sidecar import ModelSpec


class YoloV8Decoder(Decoder):
    FAMILY: ClassVar[str] = "yolo_v8"
    TENSORS: ClassVar[tuple[str, ...]] = ("output",)
    MAX_CANDIDATES: ClassVar[int] = 1000

    @classmethod
    def parse_options(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        raw = dict(raw)
        coords = raw.pop("coords", "normalized")
        if coords not in ("normalized", "pixels"):
            raise SidecarError(f"{where}.coords: expected 'normalized' or 'pixels', got {coords!r}")
        if raw:
            raise SidecarError(f"{where}: unknown key(s) for family 'yolo_v8': {', '.join(sorted(raw))}")
        return {"coords": coords}

    def __init__(self, spec: ModelSpec, outputs: Sequence[TensorInfo]) -> None:
        super().__init__(spec, outputs)
        shape = self.t["output"].shape
        rows = 4 + self.num_classes
        if len(shape) != 3 or shape[0] != 1 or rows not in shape[1:]:
            raise self.mismatch(
                f"output has shape {list(shape)}, expected [1, {rows}, N] or [1, N, {rows}] "
                f"(4 box values + {self.num_classes} class scores)"
            )
        self.channels_first = shape[1] == rows
        if spec.output.options.get("coords", "normalized") == "pixels":
            self.norm = np.array([self.in_w, self.in_h, self.in_w, self.in_h], np.float32)
        else:
            self.norm = np.ones(4, np.float32)

    def decode(self, outputs: Sequence[np.ndarray], score_threshold: float) -> TileDetections:
        info = self.t["output"]
        raw = self.raw(outputs, "output")[0]
        if not self.channels_first:
            raw = raw.T  # a view: (4 + C, N)
        cls_q = raw[4:, :]
        best_q = cls_q.max(axis=0)
        qthr = info.quantised_threshold(score_threshold)
        if best_q.max() < qthr:
            return TileDetections.empty()
        cand = np.nonzero(best_q >= qthr)[0]
        if cand.size == 0:
            return TileDetections.empty()
        if cand.size > self.MAX_CANDIDATES:
            top = np.argsort(-best_q[cand].astype(np.float32), kind="stable")[: self.MAX_CANDIDATES]
            cand = cand[top]
        class_ids = cls_q[:, cand].argmax(axis=0).astype(np.int32)
        scores = info.dequantise(best_q[cand])
        xywh = info.dequantise(raw[:4, cand]).T / self.norm
        half = xywh[:, 2:] / 2.0
        boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1).astype(np.float32)
        np.clip(boxes, 0.0, 1.0, out=boxes)
        keep = batched_nms(boxes, scores, class_ids, self.nms_iou)
        return TileDetections(boxes[keep], scores[keep], class_ids[keep])
