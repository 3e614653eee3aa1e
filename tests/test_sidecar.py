"""The sidecar is parsed strictly: each mistake is one error naming the file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from detector.errors import SidecarError
from detector.sidecar import load_sidecar, parse_sidecar

GOOD: dict[str, Any] = {
    "model": {
        "name": "cams",
        "version": "1.2.0",
        "sha256": "ab" * 32,
        "licence": "Apache-2.0",
        "provenance": "synthetic",
    },
    "input": {
        "width": 320,
        "height": 320,
        "channels": 3,
        "dtype": "int8",
        "scale": 1 / 255,
        "zero_point": -128,
    },
    "output": {"family": "centernet", "tensors": {"heatmap": 0, "box": 1}, "score_threshold": 0.4},
    "labels": [
        {"name": "dome", "osm": {"man_made": "surveillance", "surveillance:type": "camera", "camera:type": "dome"}},
        {"name": "alpr", "osm": {"man_made": "surveillance", "surveillance:type": "ALPR"}},
    ],
}


def parse(data: dict[str, Any]) -> Any:
    return parse_sidecar(data, Path("m.toml"), Path("m.tflite"))


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is None:
        del node[key]
    else:
        node[key] = value
    return data


def test_a_good_sidecar_gives_sizes_quantisation_labels_and_osm_tags() -> None:
    spec = parse(GOOD)
    assert (spec.input.width, spec.input.height, spec.input.dtype, spec.input.zero_point) == (320, 320, "int8", -128)
    assert spec.input.std == (255.0, 255.0, 255.0)  # default normalisation: pixel / 255
    assert spec.output.family == "centernet"
    assert spec.output.score_threshold == 0.4
    assert spec.output.nms_iou == 0.5
    assert spec.label_names == ("dome", "alpr")
    assert spec.osm_tags("alpr") == {"man_made": "surveillance", "surveillance:type": "ALPR"}


CAM = {"man_made": "surveillance", "surveillance:type": "camera"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("model.sha256", "xyz", "model.sha256: expected 64 hex digits"),
        ("model.licence", None, "model.licence: missing"),
        ("model.colour", "red", "unknown key(s): colour"),
        ("input.dtype", "int16", "input.dtype: expected one of uint8, int8, float32, got 'int16'"),
        ("input.width", "320", "input.width: expected an integer"),
        ("input.scale", None, "input.scale: missing"),
        ("input.channels", 1, "only 3-channel"),
        ("input.std", [255, 0, 255], "input.std: no channel may have std 0"),
        ("output.family", "yolo_v42", "output.family: expected one of"),
        ("output.tensors", {"heatmap": 0}, "family 'centernet' needs exactly box, heatmap"),
        ("output.tensors", {"heatmap": 0, "box": 0}, "two names point at the same output index"),
        ("output.score_threshold", 1.5, "output.score_threshold: must be within [0.0, 1.0]"),
        ("output.coords", "pixels", "unknown key(s) for family 'centernet': coords"),
        ("labels", [], "labels: expected at least one"),
        ("labels", [{"name": "dome", "osm": CAM}, {"name": "dome", "osm": CAM}], "duplicate label 'dome'"),
        ("labels", [{"name": "dome"}], "labels[0].osm: missing: the OpenStreetMap tags this label implies"),
        ("labels", [{"name": "dome", "osm": {"camera:type": "dome"}}], "labels[0].osm: needs surveillance:type"),
        ("labels", [{"name": "dome", "osm": {"camera:type": 3}}], "labels[0].osm: expected a table"),
    ],
)
def test_each_mistake_is_one_error_that_names_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(SidecarError) as err:
        parse(with_change(path, value))
    assert message in str(err.value)
    assert "m.toml" in str(err.value)


def test_family_options_are_checked_by_their_decoder() -> None:
    data = with_change("output.family", "yolo_v8")
    data["output"]["tensors"] = {"output": 0}
    data["output"]["coords"] = "pixels"
    assert parse(data).output.options == {"coords": "pixels"}
    data["output"]["coords"] = "furlongs"
    with pytest.raises(SidecarError, match=r"output\]\.coords: expected 'normalized' or 'pixels'"):
        parse(data)


def test_missing_or_broken_sidecar_files(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="model sidecar not found"):
        load_sidecar(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1\n")
    with pytest.raises(SidecarError, match=r"bad\.toml: not valid TOML"):
        load_sidecar(bad)
