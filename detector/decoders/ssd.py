"""SSD models whose graph ends in TFLite's ``TFLite_Detection_PostProcess`` op.

What EfficientDet-Lite, SSD-MobileNet and the TF object-detection API's TFLite exports
produce: four float outputs, boxes ``[1, N, 4]`` as ``ymin, xmin, ymax, xmax``
normalised, classes ``[1, N]``, scores ``[1, N]`` and the valid count ``[1]``. The op has
already done NMS; the decoder only filters by score. Exports list the four tensors in
different orders, so the sidecar names each index. ``label_offset`` shifts class ids for
exports whose label 0 is a background or '???' entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detector.decoders.base import Decoder, TensorInfo, TileDetections
from detector.errors import SidecarError

if TYPE_CHECKING:
    from detector.sidecar import ModelSpec


class SsdPostprocessDecoder(Decoder):
    FAMILY: ClassVar[str] = "ssd_postprocess"
    TENSORS: ClassVar[tuple[str, ...]] = ("boxes", "classes", "scores", "count")

    @classmethod
    def parse_options(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        raw = dict(raw)
        offset = raw.pop("label_offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise SidecarError(f"{where}.label_offset: expected an integer, got {offset!r}")
        if raw:
            raise SidecarError(f"{where}: unknown key(s) for family 'ssd_postprocess': {', '.join(sorted(raw))}")
        return {"label_offset": offset}

    def __init__(self, spec: ModelSpec, outputs: Sequence[TensorInfo]) -> None:
        super().__init__(spec, outputs)
        boxes, classes = self.t["boxes"].shape, self.t["classes"].shape
        scores, count = self.t["scores"].shape, self.t["count"].shape
        if len(boxes) != 3 or boxes[0] != 1 or boxes[2] != 4:
            raise self.mismatch(f"boxes output has shape {list(boxes)}, expected [1, N, 4]")
        n = boxes[1]
        if list(classes) != [1, n] or list(scores) != [1, n]:
            raise self.mismatch(f"classes {list(classes)} and scores {list(scores)} must both be [1, {n}]")
        if int(np.prod(count)) != 1:
            raise self.mismatch(f"count output has shape {list(count)}, expected [1]")
        self.label_offset = int(spec.output.options.get("label_offset", 0))

    def decode(self, outputs: Sequence[np.ndarray], score_threshold: float) -> TileDetections:
        count = int(self.t["count"].dequantise(self.raw(outputs, "count")).reshape(-1)[0])
        count = max(0, min(count, self.t["boxes"].shape[1]))
        scores = self.t["scores"].dequantise(self.raw(outputs, "scores")[0, :count])
        classes = self.t["classes"].dequantise(self.raw(outputs, "classes")[0, :count])
        yxyx = self.t["boxes"].dequantise(self.raw(outputs, "boxes")[0, :count])
        class_ids = np.rint(classes).astype(np.int32) - self.label_offset
        ok = (scores >= score_threshold) & (class_ids >= 0) & (class_ids < self.num_classes)
        yxyx = yxyx[ok]
        boxes = np.stack([yxyx[:, 1], yxyx[:, 0], yxyx[:, 3], yxyx[:, 2]], axis=1).astype(np.float32)
        np.clip(boxes, 0.0, 1.0, out=boxes)
        return TileDetections(boxes.reshape(-1, 4), scores[ok].astype(np.float32), class_ids[ok])
