"""Each decoder on recorded raw output tensors (golden files) of a real model.

The three toy models share one trained network and differ only in their output layout, so
each decoder must find the same targets in the same tile, where the truth is known.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES, GOLDEN, MODELS

from detector.decoders import FAMILIES, TensorInfo, TileDetections
from detector.decoders.nms import iou_matrix
from detector.errors import ModelMismatchError
from detector.images import load_rgb
from detector.model import Model
from detector.preprocess import Quantiser
from detector.sidecar import ModelSpec, load_sidecar

TOY_MODELS = ["toy_centernet", "toy_yolo", "toy_ssd"]


def golden(stem: str) -> tuple[list[np.ndarray], list[TensorInfo]]:
    data = np.load(GOLDEN / f"{stem}_raw.npz")
    n = len([k for k in data.files if k.startswith("out")])
    outputs = [data[f"out{i}"] for i in range(n)]
    infos = [
        TensorInfo(i, f"out{i}", o.shape, o.dtype, float(data[f"scale{i}"]), int(data[f"zp{i}"]))
        for i, o in enumerate(outputs)
    ]
    return outputs, infos


def truth() -> dict[str, Any]:
    return json.loads((FIXTURES / "toy_tile.json").read_text())


def decode(stem: str) -> tuple[ModelSpec, TileDetections]:
    spec = load_sidecar(MODELS / f"{stem}.toml")
    outputs, infos = golden(stem)
    decoder = FAMILIES[spec.output.family](spec, infos)
    return spec, decoder.decode(outputs, spec.output.score_threshold)


@pytest.mark.parametrize("stem", TOY_MODELS)
def test_decoder_finds_every_target_of_the_golden_tile_and_nothing_else(stem: str) -> None:
    spec, dets = decode(stem)
    t = truth()
    size = np.array([t["width"], t["height"]] * 2, np.float32)
    want = np.array([target["box"] for target in t["targets"]], np.float32) / size
    labels = [target["label"] for target in t["targets"]]
    assert len(dets) == len(want), f"{stem}: {len(dets)} detections for {len(want)} targets"
    iou = iou_matrix(want, dets.boxes)
    for i, label in enumerate(labels):
        j = int(iou[i].argmax())
        assert iou[i, j] >= 0.5, f"{stem}: target {i} best IoU {iou[i, j]:.2f}"
        assert spec.label_names[dets.class_ids[j]] == label
        assert spec.output.score_threshold <= dets.scores[j] <= 1.0


def test_the_three_layouts_agree_on_boxes() -> None:
    _, ref = decode("toy_centernet")
    for stem in TOY_MODELS[1:]:
        _, other = decode(stem)
        iou = iou_matrix(ref.boxes, other.boxes)
        assert (iou.max(axis=1) > 0.85).all(), stem


def test_a_higher_threshold_only_removes_detections() -> None:
    spec = load_sidecar(MODELS / "toy_centernet.toml")
    outputs, infos = golden("toy_centernet")
    decoder = FAMILIES["centernet"](spec, infos)
    low, high = decoder.decode(outputs, 0.05), decoder.decode(outputs, 0.99)
    assert len(low) >= len(decode("toy_centernet")[1]) >= len(high)
    assert (high.scores >= 0.99).all()


@pytest.mark.parametrize("stem", TOY_MODELS)
def test_live_inference_reproduces_the_golden_recording(stem: str) -> None:
    """Our pre-processing feeds the model exactly what the golden recording fed it."""
    model = Model.load(MODELS / f"{stem}.tflite", num_threads=1)
    tile = load_rgb(FIXTURES / "toy_tile.png")
    quantiser = Quantiser(model.spec.input)
    outputs = model.infer(lambda buf: quantiser.write(tile, buf))
    recorded, infos = golden(stem)
    for got, want, info in zip(outputs, recorded, infos, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        if info.quantised:  # int8 kernels: equal up to one step on a few values
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
            assert float(np.mean(diff <= 1)) >= 0.99
    # Float outputs (the SSD post-process op) hold stale memory past `count`: compare decoded.
    threshold = model.spec.output.score_threshold
    live = model.decoder.decode(outputs, threshold)
    _, gold = decode(stem)
    assert len(live) == len(gold)
    assert np.allclose(live.boxes, gold.boxes, atol=2 / 192) and (live.class_ids == gold.class_ids).all()


def test_shapes_that_do_not_fit_the_family_are_refused() -> None:
    spec = load_sidecar(MODELS / "toy_yolo.toml")
    bad = [TensorInfo(0, "out0", (1, 7, 2304), np.dtype(np.int8), 0.01, 0)]
    with pytest.raises(ModelMismatchError, match=r"output has shape \[1, 7, 2304\], expected \[1, 6, N\]"):
        FAMILIES["yolo_v8"](spec, bad)
    spec = load_sidecar(MODELS / "toy_ssd.toml")
    bad = [TensorInfo(i, f"out{i}", (1, 20), np.dtype(np.float32), 0.0, 0) for i in range(4)]
    with pytest.raises(ModelMismatchError, match="boxes output has shape"):
        FAMILIES["ssd_postprocess"](spec, bad)


def test_transposed_yolo_output_decodes_the_same() -> None:
    spec = load_sidecar(MODELS / "toy_yolo.toml")
    outputs, infos = golden("toy_yolo")
    flipped = [np.ascontiguousarray(outputs[0].transpose(0, 2, 1))]
    info = infos[0]
    flipped_info = [TensorInfo(0, info.name, flipped[0].shape, info.dtype, info.scale, info.zero_point)]
    a = FAMILIES["yolo_v8"](spec, infos).decode(outputs, 0.3)
    b = FAMILIES["yolo_v8"](spec, flipped_info).decode(flipped, 0.3)
    assert np.allclose(a.boxes, b.boxes) and (a.class_ids == b.class_ids).all()
