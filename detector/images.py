"""Reading still images into RGB frames (Pillow), for ``sousveil detect`` and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.errors import DetectorError


class ImageError(DetectorError):
    """An image file cannot be read."""


def load_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file, turned upright by its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: image not found") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: image too large to read safely ({err})") from None
    except (OSError, ValueError) as err:
        raise ImageError(f"{path}: cannot read image: {err}") from None
