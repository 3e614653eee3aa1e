"""The [detector] table of the config: defaults, and one error naming each bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector.config import parse_detector_config
from detector.errors import ConfigError
from detector.tiling import TilingConfig


def test_defaults_are_the_ride_band_and_the_sidecar_threshold() -> None:
    cfg = parse_detector_config({})
    assert cfg.model is None and cfg.score_threshold is None
    assert cfg.tiling == TilingConfig() and cfg.tiling.roi == (0.0, 0.0, 1.0, 0.55)
    assert 1 <= cfg.num_threads <= 4


def test_a_full_table_is_read_and_relative_model_paths_follow_the_config_file() -> None:
    cfg = parse_detector_config(
        {
            "model": "models/cams.tflite",
            "num_threads": 2,
            "score_threshold": 0.4,
            "tiling": {"roi": [0, 0.1, 1, 0.6], "scales": [1.0, 0.5], "overlap_px": 48, "coarse": False},
        },
        base_dir=Path("/etc/sousveil"),
    )
    assert cfg.model == Path("/etc/sousveil/models/cams.tflite")
    assert (cfg.num_threads, cfg.score_threshold) == (2, 0.4)
    assert cfg.tiling == TilingConfig(roi=(0.0, 0.1, 1.0, 0.6), scales=(1.0, 0.5), overlap_px=48, coarse=False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"threads": 4}, "detector: unknown key(s): threads"),
        ({"num_threads": 0}, "detector.num_threads: must be within [1, 64]"),
        ({"num_threads": "4"}, "detector.num_threads: expected an integer"),
        ({"score_threshold": 2}, "detector.score_threshold: must be within"),
        ({"model": 3}, "detector.model: expected a path"),
        ({"tiling": {"overlap": 3}}, "detector.tiling: unknown key(s): overlap"),
        ({"tiling": {"roi": [0, 0, 1]}}, "detector.tiling.roi: expected [x1, y1, x2, y2]"),
        ({"tiling": {"roi": [0, 0.6, 1, 0.2]}}, "detector.tiling.roi: x1 < x2 and y1 < y2"),
        ({"tiling": {"scales": []}}, "detector.tiling.scales: expected a non-empty list"),
        ({"tiling": {"coarse": "yes"}}, "detector.tiling.coarse: expected true or false"),
    ],
)
def test_bad_values_name_their_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_detector_config(data)
    assert message in str(err.value)
