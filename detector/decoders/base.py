"""What every decoder shares: the tensor description it gets and the result it returns."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from detector.errors import ModelMismatchError, SidecarError

if TYPE_CHECKING:
    from detector.sidecar import ModelSpec


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One output tensor as the interpreter describes it (its quantisation included)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantised(self) -> bool:
        return self.dtype.kind in "iu" and self.scale > 0.0

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        """The real values of (a slice of) this tensor, as float32."""
        if not self.quantised:
            return q.astype(np.float32, copy=False)
        return (q.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def quantised_threshold(self, value: float) -> np.generic | float:
        """The smallest stored value whose real value is >= ``value``, in the tensor's own
        dtype, so masks compare int8 with int8 (no float copy of the tensor)."""
        if not self.quantised:
            return value
        info = _iinfo(self.dtype)
        q = math.ceil(value / self.scale + self.zero_point - 1e-6)
        return self.dtype.type(min(max(q, info.min), info.max))  # type: ignore[no-any-return]


@functools.cache
def _iinfo(dtype: np.dtype[Any]) -> np.iinfo[Any]:
    return np.iinfo(dtype)


@dataclass(frozen=True, slots=True)
class TileDetections:
    """Detections in one model input, boxes ``x1, y1, x2, y2`` normalised to that input."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32

    @classmethod
    def empty(cls) -> TileDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class Decoder(ABC):
    """Turns one model invocation's raw output tensors into :class:`TileDetections`.

    A subclass names its tensors (``TENSORS``, the keys of the sidecar's
    ``[output].tensors``) and checks their shapes once, at load time, in ``__init__``.
    """

    FAMILY: ClassVar[str]
    TENSORS: ClassVar[tuple[str, ...]]

    def __init__(self, spec: ModelSpec, outputs: Sequence[TensorInfo]) -> None:
        self.spec = spec
        self.num_classes = len(spec.labels)
        self.in_w = spec.input.width
        self.in_h = spec.input.height
        self.nms_iou = spec.output.nms_iou
        self.t: dict[str, TensorInfo] = {}
        for name in self.TENSORS:
            idx = spec.output.tensors[name]
            if idx >= len(outputs):
                raise self.mismatch(
                    f"[output].tensors.{name} = {idx}, but the model has only {len(outputs)} output tensor(s)"
                )
            self.t[name] = outputs[idx]

    @classmethod
    def parse_options(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Check the family's own keys of ``[output]``; the default family has none."""
        if raw:
            raise SidecarError(f"{where}: unknown key(s) for family {cls.FAMILY!r}: {', '.join(sorted(raw))}")
        return {}

    def mismatch(self, problem: str) -> ModelMismatchError:
        return ModelMismatchError(
            f"{self.spec.model_path}: does not match its sidecar {self.spec.sidecar_path.name} "
            f"(family {self.FAMILY}): {problem}"
        )

    def raw(self, outputs: Sequence[np.ndarray], name: str) -> np.ndarray:
        return outputs[self.t[name].index]

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], score_threshold: float) -> TileDetections:
        """Detections scoring at least ``score_threshold`` in one invocation's outputs."""
