"""A procedural street-like frame (sky, facades, poles, road, noise) for benchmarks.

No third-party pixels: the benchmark runs anywhere without data. Inference time does not
depend on what is in the frame; this only keeps the numbers free of trivially flat input.
"""

from __future__ import annotations

import numpy as np


def street_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = np.array([150, 180, 220], np.float32) * (1.0 - 0.3 * y)
    img = np.broadcast_to(sky, (height, width, 3)).copy()
    horizon = int(height * 0.5)
    x = 0
    while x < width:  # facades of varied height and colour
        w = int(rng.integers(width // 20, width // 6))
        top = int(rng.integers(height // 10, horizon))
        img[top:horizon + height // 8, x:x + w] = rng.integers(60, 200, 3)
        for wy in range(top + 10, horizon, 40):  # windows
            img[wy:wy + 18, x + 8:x + w - 8:30] = rng.integers(20, 90)
        x += w
    for _ in range(6):  # poles
        px = int(rng.integers(0, width - 8))
        img[int(height * 0.1):horizon + height // 6, px:px + 6] = 70
    img[horizon + height // 8:] = np.array([90, 90, 95], np.float32)  # road
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    frame: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return frame
