"""Loading a model: the real LiteRT runtime, and one clear error for each way it can fail."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from detector import runtime
from detector.errors import (
    DetectorError,
    ModelFileError,
    ModelMismatchError,
    RuntimeMissingError,
    SidecarError,
)
from detector.model import Model


def set_sidecar_sha(model: Path) -> None:
    sidecar = model.with_suffix(".toml")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    sidecar.write_text(re.sub(r'sha256 = "[0-9a-f]+"', f'sha256 = "{digest}"', sidecar.read_text()))


def edit_sidecar(model: Path, old: str, new: str) -> None:
    sidecar = model.with_suffix(".toml")
    text = sidecar.read_text()
    assert old in text, f"{old!r} not in the sidecar"
    sidecar.write_text(text.replace(old, new, 1))


def test_the_toy_model_loads_in_litert_and_runs(toy_model: Path) -> None:
    model = Model.load(toy_model, num_threads=2)
    assert model.runtime == "ai_edge_litert"
    assert model.spec.name == "toy-centernet" and model.spec.output.family == "centernet"
    outputs = model.infer(lambda buf: buf.fill(0))
    assert [o.shape for o in outputs] == [tuple(t.shape) for t in model.outputs]


def test_the_sidecar_path_loads_the_same_model(toy_model: Path) -> None:
    assert Model.load(toy_model.with_suffix(".toml")).spec.model_path == toy_model


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        Model.load(tmp_path / "nothing.tflite")


def test_a_file_that_is_not_tflite_is_refused_before_the_runtime_sees_it(toy_model: Path) -> None:
    toy_model.write_bytes(b"<html>404 not found</html>" * 10)
    set_sidecar_sha(toy_model)
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        Model.load(toy_model)


def test_a_truncated_model_is_refused_by_its_hash(toy_model: Path) -> None:
    data = toy_model.read_bytes()
    toy_model.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelMismatchError) as err:
        Model.load(toy_model)
    assert "sha256" in str(err.value) and "does not match its sidecar toy_centernet.toml" in str(err.value)


def test_a_corrupt_model_with_a_matching_hash_is_refused_by_the_runtime(toy_model: Path) -> None:
    data = bytearray(toy_model.read_bytes())
    rng = np.random.default_rng(0)
    data[8:] = rng.integers(0, 256, len(data) - 8, dtype=np.uint8).tobytes()  # keep only the header
    toy_model.write_bytes(bytes(data))
    set_sidecar_sha(toy_model)
    with pytest.raises(ModelFileError, match="cannot load this model"):
        Model.load(toy_model)


def test_missing_sidecar(toy_model: Path) -> None:
    toy_model.with_suffix(".toml").unlink()
    with pytest.raises(SidecarError, match="model sidecar not found"):
        Model.load(toy_model)


def test_sidecar_input_size_must_match_the_model(toy_model: Path) -> None:
    edit_sidecar(toy_model, "width = 192", "width = 320")
    with pytest.raises(
        ModelMismatchError, match=r"input shape is \[1, 192, 192, 3\], the sidecar says \[1, 192, 320, 3\]"
    ):
        Model.load(toy_model)


def test_sidecar_quantisation_must_match_the_model(toy_model: Path) -> None:
    edit_sidecar(toy_model, "zero_point = -128", "zero_point = 0")
    with pytest.raises(ModelMismatchError, match=r"input zero point is -128, the sidecar says 0"):
        Model.load(toy_model)


def test_sidecar_labels_must_match_the_heatmap_channels(toy_model: Path) -> None:
    text = toy_model.with_suffix(".toml").read_text()
    ptz = 'osm = { man_made = "surveillance", "surveillance:type" = "camera", "camera:type" = "panning" }'
    toy_model.with_suffix(".toml").write_text(text + f'\n[[labels]]\nname = "ptz"\n{ptz}\n')
    with pytest.raises(ModelMismatchError, match=r"heatmap output has shape \[1, 48, 48, 2\], expected \[1, H, W, 3\]"):
        Model.load(toy_model)


def test_sidecar_output_index_must_exist(toy_model: Path) -> None:
    edit_sidecar(toy_model, "heatmap = 1", "heatmap = 5")
    with pytest.raises(ModelMismatchError, match=r"\[output\]\.tensors\.heatmap = 5, but the model has only 2"):
        Model.load(toy_model)


def test_no_runtime_installed_is_one_clear_error(toy_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.interpreter_class.cache_clear()
    # A None entry in sys.modules makes `import` fail exactly as for an absent package.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    try:
        with pytest.raises(RuntimeMissingError, match=r"no TFLite runtime is installed: `pip install ai-edge-litert`"):
            Model.load(toy_model)
    finally:
        runtime.interpreter_class.cache_clear()


def test_without_litert_the_older_tflite_runtime_is_used(
    toy_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where only ``tflite_runtime`` is installed (older Pi images), the model loads and runs with it.

    The stand-in package is LiteRT's own interpreter under the old name: tflite_runtime's
    ``Interpreter`` has the same API (it is the same code, renamed by Google in 2024).
    """
    import types

    from ai_edge_litert.interpreter import Interpreter

    legacy = types.ModuleType("tflite_runtime")
    legacy_interpreter = types.ModuleType("tflite_runtime.interpreter")
    legacy_interpreter.Interpreter = Interpreter  # type: ignore[attr-defined]
    legacy.interpreter = legacy_interpreter  # type: ignore[attr-defined]
    runtime.interpreter_class.cache_clear()
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", legacy)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", legacy_interpreter)
    try:
        with caplog.at_level("WARNING", logger="detector.runtime"):
            model = Model.load(toy_model, num_threads=1)
        assert model.runtime == "tflite_runtime"
        assert "using the older tflite_runtime" in caplog.text
        outputs = model.infer(lambda buf: buf.fill(0))
        assert [o.shape for o in outputs] == [tuple(t.shape) for t in model.outputs]
    finally:
        runtime.interpreter_class.cache_clear()


def test_the_runtime_is_imported_once_per_process() -> None:
    runtime.interpreter_class.cache_clear()
    first = runtime.interpreter_class()
    assert runtime.interpreter_class() is first
    assert runtime.interpreter_class.cache_info().hits >= 1


def test_one_interpreter_serves_every_tile_of_every_frame(toy_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is built once; tiles and frames reuse it (a new interpreter per frame, as some
    camera examples do, costs more than the inference)."""
    from ai_edge_litert.interpreter import Interpreter

    from detector import DetectorConfig, TilingConfig, load_detector

    built: list[object] = []

    class Counting(Interpreter):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runtime, "interpreter_class", lambda: (Counting, "ai_edge_litert"))
    detector = load_detector(DetectorConfig(model=toy_model, tiling=TilingConfig.full_frame(), num_threads=1))
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    for _ in range(3):
        detector.detect(frame)
    assert len(detector.plan_for(1280, 720).tiles) > 1
    assert len(built) == 1


def test_all_errors_share_one_base_class() -> None:
    for cls in (ModelFileError, ModelMismatchError, RuntimeMissingError, SidecarError):
        assert issubclass(cls, DetectorError)
