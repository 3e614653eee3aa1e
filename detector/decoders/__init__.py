"""One decoder per output family; the sidecar's ``[output].family`` picks it."""

from __future__ import annotations

from detector.decoders.base import Decoder, TensorInfo, TileDetections
from detector.decoders.centernet import CenterNetDecoder
from detector.decoders.ssd import SsdPostprocessDecoder
from detector.decoders.yolo import YoloV8Decoder

FAMILIES: dict[str, type[Decoder]] = {
    cls.FAMILY: cls for cls in (CenterNetDecoder, SsdPostprocessDecoder, YoloV8Decoder)
}

__all__ = ["FAMILIES", "Decoder", "TensorInfo", "TileDetections"]
