"""A procedural street-like frame (sky, facades, poles, road, noise) for benchmarks.

No third-party pixels: the benchmark runs anywhere without data. Inference time does not
depend on what is in the frame; this only keeps the numbers free of trivially flat input.
Built in uint8, a band of rows at a time, so making it does not dominate the peak memory
the benchmark reports.
"""

from __future__ import annotations

import numpy as np


def street_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    shade = 1.0 - 0.3 * np.linspace(0.0, 1.0, height)
    for c, value in enumerate((150, 180, 220)):  # sky, darker towards the horizon
        img[:, :, c] = (value * shade).astype(np.uint8)[:, None]
    horizon = int(height * 0.5)
    x = 0
    while x < width:  # facades of varied height and colour, with windows
        w = int(rng.integers(width // 20, width // 6))
        top = int(rng.integers(height // 10, horizon))
        img[top : horizon + height // 8, x : x + w] = rng.integers(60, 200, 3)
        for wy in range(top + 10, horizon, 40):
            img[wy : wy + 18, x + 8 : x + w - 8 : 30] = rng.integers(20, 90)
        x += w
    for _ in range(6):  # poles
        px = int(rng.integers(0, width - 8))
        img[int(height * 0.1) : horizon + height // 6, px : px + 6] = 70
    img[horizon + height // 8 :] = (90, 90, 95)  # road
    band = 64
    for y in range(0, height, band):  # sensor noise, sigma ~6
        rows = img[y : y + band]
        noisy = rows.astype(np.int16) + rng.normal(0.0, 6.0, rows.shape).astype(np.int16)
        np.clip(noisy, 0, 255, out=noisy)
        rows[...] = noisy
    return img
