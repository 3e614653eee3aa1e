"""The detector's exceptions: one small tree, each message names the file and the problem.

Everything the detector raises on bad input derives from :class:`DetectorError`, so a
command-line front end can print ``str(err)`` as one line and exit non-zero.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error the detector raises on purpose."""


class RuntimeMissingError(DetectorError):
    """Neither ``ai_edge_litert`` nor ``tflite_runtime`` can be imported."""


class ModelFileError(DetectorError):
    """The model file is missing, unreadable or not a TFLite flatbuffer."""


class SidecarError(DetectorError):
    """The model's sidecar is missing, malformed or has a bad value (the key is named)."""


class ModelMismatchError(DetectorError):
    """The model file does not match its sidecar (hash, input or output tensors)."""


class ConfigError(DetectorError):
    """A detector setting is unknown or out of range (the key is named)."""
