"""sousveil's detector: surveillance cameras in one camera frame (numpy + LiteRT only).

The flow: :class:`~detector.model.Model` (sidecar, hash check, one interpreter) ->
:class:`~detector.detector.Detector` (tile plan, quantise, infer, decode, merge) ->
:class:`~detector.detection.Detection`. It never imports ``firmware``.
"""

from __future__ import annotations

from detector.config import DetectorConfig, parse_detector_config
from detector.detection import Detection
from detector.detector import Detector, FrameTimings
from detector.errors import (
    ConfigError,
    DetectorError,
    ModelFileError,
    ModelMismatchError,
    RuntimeMissingError,
    SidecarError,
)
from detector.model import Model, default_model_path
from detector.tiling import TilePlan, TilingConfig, build_plan


def load_model(config: DetectorConfig) -> Model:
    """The model ``config`` names (the project's default model when it names none)."""
    return Model.load(config.model or default_model_path(), num_threads=config.num_threads)


def load_detector(config: DetectorConfig, model: Model | None = None) -> Detector:
    """A ready :class:`Detector` for ``config``, on ``model`` when one is already loaded."""
    if model is None:
        model = load_model(config)
    return Detector(
        model,
        config.tiling,
        score_threshold=config.score_threshold,
        merge_iou=config.merge_iou,
        merge_ios=config.merge_ios,
    )


__all__ = [
    "ConfigError",
    "Detection",
    "Detector",
    "DetectorConfig",
    "DetectorError",
    "FrameTimings",
    "Model",
    "ModelFileError",
    "ModelMismatchError",
    "RuntimeMissingError",
    "SidecarError",
    "TilePlan",
    "TilingConfig",
    "build_plan",
    "default_model_path",
    "load_detector",
    "load_model",
    "parse_detector_config",
]
