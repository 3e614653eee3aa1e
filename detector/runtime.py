"""The TFLite runtime: LiteRT (``ai_edge_litert``) first, ``tflite_runtime`` as a fallback.

The interpreter class is imported once per process (:func:`interpreter_class` is cached);
each model gets one interpreter, built at start-up and reused for every tile of every
frame. Building one per frame, as some camera examples do, costs far more than inference.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.errors import ModelFileError, RuntimeMissingError

log = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier every TFLite model carries at bytes 4..8."""


@functools.cache
def interpreter_class() -> tuple[Any, str]:
    """``(Interpreter class, runtime name)``; raises :class:`RuntimeMissingError`."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError as err:
        litert_error = err
    try:
        from tflite_runtime.interpreter import Interpreter as LegacyInterpreter  # type: ignore[import-not-found]

        log.warning("ai_edge_litert is not installed; using the older tflite_runtime (slower, no XNNPACK)")
        return LegacyInterpreter, "tflite_runtime"
    except ImportError:
        pass
    raise RuntimeMissingError(
        "no TFLite runtime is installed: `pip install ai-edge-litert` (wheels for Raspberry Pi OS "
        f"Bookworm and Trixie, aarch64); the fallback tflite_runtime is missing too ({litert_error})"
    )


def read_model_bytes(path: Path) -> bytes:
    """The model file's bytes, after checking that it is a TFLite flatbuffer."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read model file: {err.strerror}") from None
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(
            f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier; "
            f"the file is {len(data)} bytes and may be truncated or something else)"
        )
    return data


NATIVE_INFO_PREFIX = "INFO: "
"""LiteRT's C++ layer prints lines such as ``INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.`` straight to file descriptor 2 while it builds an interpreter; they go to the log instead."""


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Catch what native code writes to fd 2 inside the block: ``INFO:`` lines go to the debug
    log, anything else is written back to stderr afterwards (delayed, not lost). The block is
    only the interpreter's construction; were the runtime to abort the process right there,
    its last message would be lost with it (a Python error is written back as usual)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pytest capture, embedded)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
    rest = []
    for line in text.splitlines(keepends=True):
        if line.startswith(NATIVE_INFO_PREFIX):
            log.debug("runtime: %s", line.strip())
        else:
            rest.append(line)
    if rest:
        sys.stderr.write("".join(rest))
        sys.stderr.flush()


def make_interpreter(path: Path, data: bytes, num_threads: int) -> tuple[Any, str]:
    """A ready interpreter (tensors allocated) for the model bytes of ``path``."""
    cls, runtime = interpreter_class()
    try:
        with native_stderr_to_log():
            interpreter = cls(model_content=data, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: {runtime} cannot load this model: {first}") from None
    return interpreter, runtime
