"""Drawing detections on an image, for ``sousveil detect --draw`` (needs Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.detection import Detection

COLOURS = {
    "fixed": (255, 196, 0),
    "dome": (0, 200, 255),
    "ptz": (255, 64, 160),
    "alpr": (255, 40, 40),
}


def draw_detections(image: np.ndarray, detections: Sequence[Detection], out: Path) -> None:
    """Save ``image`` (RGB) with a labelled box around each detection to ``out``."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(image.shape[:2]) / 600))
    for det in detections:
        colour = COLOURS.get(det.label, (0, 255, 0))
        x1, y1, x2, y2 = det.box_px
        pad = width + 2  # small cameras: keep the box visible around, not over, the object
        pen.rectangle((x1 - pad, y1 - pad, x2 + pad, y2 + pad), outline=colour, width=width)
        text = f"{det.label} {det.score:.2f}"
        ty = y1 - pad - 12 if y1 - pad - 12 >= 0 else y2 + pad + 2
        bbox = pen.textbbox((x1 - pad, ty), text)
        pen.rectangle(bbox, fill=(0, 0, 0))
        pen.text((x1 - pad, ty), text, fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
