"""The model sidecar: everything model-specific, read from a TOML file next to the model.

A model ``cams.tflite`` has its sidecar in ``cams.toml``. The detector's loop never
hard-codes an input size, a quantisation or an output layout; it reads them here. The
format is documented in ``docs/model-sidecar.md``. Parsing is strict: an unknown key or a
bad value is a :class:`~detector.errors.SidecarError` that names the file and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import SidecarError

DTYPES = ("uint8", "int8", "float32")
CHANNEL_ORDERS = ("RGB", "BGR")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor and how pixels map onto it.

    The network expects ``(pixel - mean) / std`` (pixel in 0..255, per channel); a
    quantised input stores that value as ``round(value / scale) + zero_point``.
    """

    width: int
    height: int
    channels: int
    channel_order: str
    dtype: str
    scale: float
    zero_point: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class OutputSpec:
    """Which decoder reads the outputs, and where its tensors are."""

    family: str
    tensors: dict[str, int]
    score_threshold: float
    nms_iou: float
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelSpec:
    """One class of the model and the OpenStreetMap tags it implies."""

    name: str
    osm: dict[str, str]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed sidecar, with the paths of the sidecar and the model file it describes."""

    name: str
    version: str
    sha256: str
    licence: str
    provenance: str
    input: InputSpec
    output: OutputSpec
    labels: tuple[LabelSpec, ...]
    model_path: Path
    sidecar_path: Path

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def osm_tags(self, label: str) -> dict[str, str]:
        """The OpenStreetMap tags a detection of ``label`` suggests."""
        for spec in self.labels:
            if spec.name == label:
                return dict(spec.osm)
        raise KeyError(label)


class _Table:
    """Reads one TOML table strictly: every key is consumed once; leftovers are errors."""

    def __init__(self, data: Any, where: str, source: Path) -> None:
        if not isinstance(data, dict):
            raise SidecarError(f"{source}: {where} must be a table")
        self._data = dict(data)
        self.where = where
        self.source = source

    def _fail(self, key: str, problem: str) -> SidecarError:
        return SidecarError(f"{self.source}: {self.where}.{key}: {problem}")

    def _take(self, key: str, default: Any = ...) -> Any:
        if key not in self._data:
            if default is ...:
                raise self._fail(key, "missing")
            return default
        return self._data.pop(key)

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] = ()) -> str:
        value = self._take(key, default)
        if not isinstance(value, str) or not value:
            raise self._fail(key, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self._fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: Any = ..., lo: int | None = None) -> int:
        value = self._take(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"expected an integer, got {value!r}")
        if lo is not None and value < lo:
            raise self._fail(key, f"must be >= {lo}, got {value}")
        return value

    def number(self, key: str, default: Any = ..., lo: float = -math.inf, hi: float = math.inf) -> float:
        value = self._take(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._fail(key, f"expected a finite number, got {value!r}")
        if not lo <= value <= hi:
            raise self._fail(key, f"must be within [{lo}, {hi}], got {value}")
        return float(value)

    def numbers(self, key: str, n: int, default: Any = ...) -> tuple[float, ...]:
        value = self._take(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise self._fail(key, f"expected a list of {n} numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def table(self, key: str) -> _Table:
        return _Table(self._take(key), f"{self.where}.{key}" if self.where else key, self.source)

    def raw(self, key: str, default: Any = ...) -> Any:
        return self._take(key, default)

    def rest(self) -> dict[str, Any]:
        """Hand over the keys not read yet (for a family's own options)."""
        rest, self._data = self._data, {}
        return rest

    def done(self) -> None:
        if self._data:
            keys = ", ".join(sorted(self._data))
            raise SidecarError(f"{self.source}: {self.where}: unknown key(s): {keys}")


def sidecar_for(model_path: Path) -> Path:
    """The sidecar path of a model file: same folder, same stem, ``.toml``."""
    return model_path.with_suffix(".toml")


def resolve_model(path: Path) -> tuple[Path, Path]:
    """``(model file, sidecar)`` from either of them."""
    if path.suffix == ".toml":
        return path.with_suffix(".tflite"), path
    return path, sidecar_for(path)


def load_sidecar(sidecar_path: Path, model_path: Path | None = None) -> ModelSpec:
    """Parse and check a sidecar file. Raises :class:`SidecarError` naming the bad key."""
    try:
        text = sidecar_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SidecarError(
            f"{sidecar_path}: model sidecar not found (every model needs a .toml sidecar "
            "next to it; see docs/model-sidecar.md)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SidecarError(f"{sidecar_path}: cannot read sidecar: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SidecarError(f"{sidecar_path}: not valid TOML: {err}") from None
    return parse_sidecar(data, sidecar_path, model_path or sidecar_path.with_suffix(".tflite"))


def parse_sidecar(data: dict[str, Any], sidecar_path: Path, model_path: Path) -> ModelSpec:
    from detector.decoders import FAMILIES  # the decoders define which families exist

    top = _Table(data, "", sidecar_path)
    m = top.table("model")
    name = m.text("name")
    version = m.text("version")
    sha256 = m.text("sha256").lower()
    if not _SHA256.match(sha256):
        raise m._fail("sha256", "expected 64 hex digits (the sha256 of the model file)")
    licence = m.text("licence")
    provenance = m.text("provenance")
    m.done()

    i = top.table("input")
    dtype = i.text("dtype", choices=DTYPES)
    channels = i.integer("channels", 3, lo=1)
    if channels != 3:
        raise i._fail("channels", f"only 3-channel colour models are supported, got {channels}")
    inp = InputSpec(
        width=i.integer("width", lo=8),
        height=i.integer("height", lo=8),
        channels=channels,
        channel_order=i.text("channel_order", "RGB", choices=CHANNEL_ORDERS),
        dtype=dtype,
        scale=i.number("scale", 1.0 if dtype == "float32" else ..., lo=0.0),
        zero_point=i.integer("zero_point", 0 if dtype == "float32" else ...),
        mean=i.numbers("mean", 3, [0.0, 0.0, 0.0]),
        std=i.numbers("std", 3, [255.0, 255.0, 255.0]),
    )
    if inp.scale <= 0.0:
        raise i._fail("scale", "must be > 0")
    if any(s == 0.0 for s in inp.std):
        raise i._fail("std", "no channel may have std 0")
    i.done()

    o = top.table("output")
    family = o.text("family", choices=tuple(sorted(FAMILIES)))
    tensors_raw = o.raw("tensors")
    if not isinstance(tensors_raw, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in tensors_raw.values()
    ):
        raise o._fail("tensors", "expected a table of name = output index (>= 0)")
    wanted = set(FAMILIES[family].TENSORS)
    if set(tensors_raw) != wanted:
        raise o._fail(
            "tensors",
            f"family {family!r} needs exactly {', '.join(sorted(wanted))}; got "
            f"{', '.join(sorted(tensors_raw)) or 'nothing'}",
        )
    if len(set(tensors_raw.values())) != len(tensors_raw):
        raise o._fail("tensors", "two names point at the same output index")
    score_threshold = o.number("score_threshold", lo=0.0, hi=1.0)
    nms_iou = o.number("nms_iou", 0.5, lo=0.0, hi=1.0)
    options = FAMILIES[family].parse_options(o.rest(), f"{sidecar_path}: [output]")
    out = OutputSpec(family, dict(tensors_raw), score_threshold, nms_iou, options)

    labels_raw = top.raw("labels")
    if not isinstance(labels_raw, list) or not labels_raw:
        raise SidecarError(f"{sidecar_path}: labels: expected at least one [[labels]] table")
    labels: list[LabelSpec] = []
    for n, entry in enumerate(labels_raw):
        t = _Table(entry, f"labels[{n}]", sidecar_path)
        lname = t.text("name")
        osm = t.raw("osm", None)
        if osm is None:
            raise t._fail("osm", "missing: the OpenStreetMap tags this label implies (at least surveillance:type)")
        if not isinstance(osm, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in osm.items()
        ):
            raise t._fail("osm", "expected a table of OpenStreetMap key = value strings")
        if "surveillance:type" not in osm:
            raise t._fail("osm", "needs surveillance:type (camera, ALPR, guard, ...): what a mapper tags")
        t.done()
        if lname in (label.name for label in labels):
            raise t._fail("name", f"duplicate label {lname!r}")
        labels.append(LabelSpec(lname, dict(osm)))
    top.done()
    return ModelSpec(
        name=name,
        version=version,
        sha256=sha256,
        licence=licence,
        provenance=provenance,
        input=inp,
        output=out,
        labels=tuple(labels),
        model_path=model_path,
        sidecar_path=sidecar_path,
    )
