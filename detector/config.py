"""Detector settings: a frozen dataclass and a strict parser for the ``[detector]`` table.

The service's TOML config embeds this table; unknown keys and bad values are
:class:`~detector.errors.ConfigError` naming the key, e.g. ``detector.tiling.overlap_px``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.tiling import TilingConfig


def default_threads() -> int:
    """All cores up to 4 (a Pi has 4; more threads than cores only slows LiteRT down)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class DetectorConfig:
    """``model`` None means the project's default model; ``score_threshold`` None means
    the sidecar's default."""

    model: Path | None = None
    num_threads: int = field(default_factory=default_threads)
    score_threshold: float | None = None
    merge_iou: float = 0.5
    merge_ios: float = 0.7
    tiling: TilingConfig = field(default_factory=TilingConfig)


def _number(where: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: must be within [{lo}, {hi}], got {value}")
    return float(value)


def _integer(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: must be within [{lo}, {hi}], got {value}")
    return value


def _unknown(where: str, data: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(extra)} (known: {', '.join(sorted(known))})")


def parse_tiling(data: Any, where: str = "detector.tiling", base: TilingConfig | None = None) -> TilingConfig:
    base = base or TilingConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    _unknown(where, data, {"roi", "scales", "overlap_px", "coarse", "pad_value"})
    roi = base.roi
    if "roi" in data:
        raw = data["roi"]
        if not isinstance(raw, list) or len(raw) != 4:
            raise ConfigError(f"{where}.roi: expected [x1, y1, x2, y2] as fractions of the frame, got {raw!r}")
        roi = tuple(_number(f"{where}.roi", v, 0.0, 1.0) for v in raw)  # type: ignore[assignment]
    scales = base.scales
    if "scales" in data:
        raw = data["scales"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}.scales: expected a non-empty list of numbers, got {raw!r}")
        scales = tuple(_number(f"{where}.scales", v, 0.05, 4.0) for v in raw)
    coarse = data.get("coarse", base.coarse)
    if not isinstance(coarse, bool):
        raise ConfigError(f"{where}.coarse: expected true or false, got {coarse!r}")
    tiling = TilingConfig(
        roi=roi,
        scales=scales,
        overlap_px=_integer(f"{where}.overlap_px", data.get("overlap_px", base.overlap_px), 0, 10_000),
        coarse=coarse,
        pad_value=_integer(f"{where}.pad_value", data.get("pad_value", base.pad_value), 0, 255),
    )
    x1, y1, x2, y2 = tiling.roi
    if not (x1 < x2 and y1 < y2):
        raise ConfigError(f"{where}.roi: x1 < x2 and y1 < y2 required, got {list(tiling.roi)}")
    return tiling


def parse_detector_config(data: Any, where: str = "detector", base_dir: Path | None = None) -> DetectorConfig:
    """Parse the ``[detector]`` table; relative model paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    _unknown(where, data, {"model", "num_threads", "score_threshold", "merge_iou", "merge_ios", "tiling"})
    model: Path | None = None
    if "model" in data:
        if not isinstance(data["model"], str) or not data["model"]:
            raise ConfigError(f"{where}.model: expected a path, got {data['model']!r}")
        model = Path(data["model"]).expanduser()
        if base_dir is not None and not model.is_absolute():
            model = base_dir / model
    threshold = data.get("score_threshold")
    return DetectorConfig(
        model=model,
        num_threads=_integer(f"{where}.num_threads", data.get("num_threads", default_threads()), 1, 64),
        score_threshold=None if threshold is None else _number(f"{where}.score_threshold", threshold, 0.01, 1.0),
        merge_iou=_number(f"{where}.merge_iou", data.get("merge_iou", 0.5), 0.0, 1.0),
        merge_ios=_number(f"{where}.merge_ios", data.get("merge_ios", 0.7), 0.0, 1.0),
        tiling=parse_tiling(data.get("tiling", {}), f"{where}.tiling"),
    )
