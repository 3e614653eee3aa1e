"""A loaded model: sidecar checked, file hashed, interpreter built once, decoder chosen."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detector import runtime
from detector.decoders import FAMILIES, Decoder, TensorInfo
from detector.errors import ConfigError, ModelFileError, ModelMismatchError
from detector.sidecar import ModelSpec, load_sidecar, resolve_model

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sousveil-cams"
"""Stem of the project's default camera model (``<name>.tflite`` + ``<name>.toml``)."""


def default_model_path() -> Path:
    """Where the default model is: ``$SOUSVEIL_MODEL``, then the source tree, then the install."""
    env = os.environ.get("SOUSVEIL_MODEL")
    if env:
        return Path(env)
    candidates = [
        Path(__file__).resolve().parent.parent / "models" / f"{DEFAULT_MODEL_NAME}.tflite",
        Path(sys.prefix) / "share" / "sousveil" / "models" / f"{DEFAULT_MODEL_NAME}.tflite",
    ]
    for path in candidates:
        if path.exists():
            return path
    raise ModelFileError(
        f"no default model found (looked for {', '.join(str(c) for c in candidates)}); "
        "pass --model PATH or set SOUSVEIL_MODEL"
    )


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        index=int(detail["index"]),
        name=str(detail.get("name", "")),
        shape=tuple(int(v) for v in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class Model:
    """One TFLite model and its sidecar, ready to run tile after tile.

    >>> model = Model.load(Path("models/sousveil-cams.tflite"), num_threads=4)  # doctest: +SKIP
    >>> outputs = model.infer(lambda buf: buf.fill(0))  # doctest: +SKIP
    """

    def __init__(self, spec: ModelSpec, interpreter: Any, runtime_name: str, num_threads: int = 1) -> None:
        self.spec = spec
        self.runtime = runtime_name
        self.num_threads = num_threads
        self._interpreter = interpreter
        inputs = interpreter.get_input_details()
        self._check_input(inputs)
        self._input_index = int(inputs[0]["index"])
        details = interpreter.get_output_details()
        self.outputs = [_tensor_info(d) for d in details]
        # Decoders address outputs by position in get_output_details(); keep the tensor ids.
        self._output_indices = [t.index for t in self.outputs]
        positional = [
            TensorInfo(i, t.name, t.shape, t.dtype, t.scale, t.zero_point) for i, t in enumerate(self.outputs)
        ]
        self.decoder: Decoder = FAMILIES[spec.output.family](spec, positional)

    @classmethod
    def load(cls, path: Path, num_threads: int = 1) -> Model:
        """Load a model from its ``.tflite`` (or its ``.toml`` sidecar) path.

        Raises :class:`~detector.errors.DetectorError` subclasses with one clear line:
        missing runtime, missing or non-TFLite file, bad sidecar, hash or tensor mismatch.
        """
        if num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
        model_path, sidecar_path = resolve_model(Path(path))
        data = runtime.read_model_bytes(model_path)
        spec = load_sidecar(sidecar_path, model_path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelMismatchError(
                f"{model_path}: sha256 {digest} does not match its sidecar {sidecar_path.name} "
                f"({spec.sha256}); the model file was changed or the sidecar belongs to another model"
            )
        interpreter, runtime_name = runtime.make_interpreter(model_path, data, num_threads)
        model = cls(spec, interpreter, runtime_name, num_threads)
        log.info(
            "loaded model %s %s (%s, %d thread(s), %s)",
            spec.name,
            spec.version,
            spec.output.family,
            num_threads,
            runtime_name,
        )
        return model

    def _check_input(self, inputs: list[dict[str, Any]]) -> None:
        spec = self.spec.input
        problems: list[str] = []
        if len(inputs) != 1:
            problems.append(f"the model has {len(inputs)} inputs, expected 1 image input")
        else:
            d = inputs[0]
            shape = [int(v) for v in d["shape"]]
            want = [1, spec.height, spec.width, spec.channels]
            if shape != want:
                problems.append(f"input shape is {shape}, the sidecar says {want} ([input] width/height)")
            dtype = np.dtype(d["dtype"]).name
            if dtype != spec.dtype:
                problems.append(f"input dtype is {dtype}, the sidecar says {spec.dtype} ([input].dtype)")
            scale, zero_point = d.get("quantization", (0.0, 0))
            if spec.dtype != "float32" and dtype == spec.dtype:
                if not math.isclose(float(scale), spec.scale, rel_tol=1e-5):
                    problems.append(f"input scale is {scale}, the sidecar says {spec.scale} ([input].scale)")
                if int(zero_point) != spec.zero_point:
                    problems.append(
                        f"input zero point is {zero_point}, the sidecar says {spec.zero_point} ([input].zero_point)"
                    )
        if problems:
            raise ModelMismatchError(
                f"{self.spec.model_path}: does not match its sidecar {self.spec.sidecar_path.name}: "
                + "; ".join(problems)
            )

    def fill_input(self, fill: Callable[[np.ndarray], None]) -> None:
        """``fill`` writes the (H, W, 3) input tensor in place (no intermediate copy)."""
        view = self._interpreter.tensor(self._input_index)()
        fill(view[0])
        del view  # the interpreter refuses to run while a view of its buffers is alive

    def run(self) -> list[np.ndarray]:
        """Invoke the model on the current input; the raw output tensors, in output order."""
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i) for i in self._output_indices]

    def infer(self, fill: Callable[[np.ndarray], None]) -> list[np.ndarray]:
        """:meth:`fill_input` then :meth:`run`."""
        self.fill_input(fill)
        return self.run()

    def invoke_raw(self, data: np.ndarray) -> list[np.ndarray]:
        """Run once on an already quantised input array of the input's full shape."""
        self._interpreter.set_tensor(self._input_index, data)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i) for i in self._output_indices]
