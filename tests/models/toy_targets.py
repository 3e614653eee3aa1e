"""Procedural "toy target" scenes used to train and test the toy detector models.

This is a stand-in for street cameras so the test models can be small, free of
third-party data and fully reproducible.  Two classes are drawn, named like the
project's camera classes so the label / OSM-tag path is exercised:

* ``fixed``: filled axis-aligned rectangles, wider than tall (w/h 1.6-3.0).
* ``dome``: filled discs (optionally slightly elliptical, aspect 0.8-1.25).

Targets are high contrast (dark 0-50 on lighter background or bright 205-255
on darker background, with a slight colour tint, optionally a 1-2 px outline).
Backgrounds are smooth random gradients with Gaussian noise, a few thin lines
(poles / wires) and a few distractor shapes that are *not* targets (thin long
bars and triangles), so a model has to learn shape, not just contrast.

Only numpy and Pillow are needed (no TensorFlow).  Everything is deterministic
given the seed / generator.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

LABELS: tuple[str, ...] = ("fixed", "dome")
FIXED_ASPECT = (1.6, 3.0)
DOME_ASPECT = (0.8, 1.25)


def _rand_colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi + 1, size=3))  # type: ignore[return-value]


def render_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Render a textured background: HxWx3 uint8 RGB.

    Smooth random colour gradient + a few thin lines + a few distractor shapes
    (long thin bars, triangles) + Gaussian noise.
    """
    gh, gw = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    base = rng.uniform(30.0, 225.0, size=(gh, gw, 1))
    tint = rng.uniform(-25.0, 25.0, size=(gh, gw, 3))
    grid = np.clip(base + tint, 0, 255).astype(np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    scale = max(1.0, (width * height) / (192.0 * 192.0))
    # thin lines: poles / wires
    n_lines = int(rng.integers(0, 4) * min(scale, 8.0) ** 0.5)
    for _ in range(n_lines):
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        if rng.random() < 0.5:  # near-vertical pole
            x1 = x0 + rng.uniform(-0.1, 0.1) * height
            y0, y1 = 0.0, float(height)
        draw.line(
            [(float(x0), float(y0)), (float(x1), float(y1))],
            fill=_rand_colour(rng, 0, 255),
            width=int(rng.integers(1, 4)),
        )
    # distractor shapes (not targets)
    n_distr = int(rng.integers(0, 4) * min(scale, 16.0) ** 0.5)
    for _ in range(n_distr):
        dark = rng.random() < 0.5
        colour = _rand_colour(rng, 0, 50) if dark else _rand_colour(rng, 205, 255)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(12, 70)
        kind = rng.random()
        if kind < 0.5:  # thin long bar, aspect >= 5 (never target-shaped)
            thick = rng.uniform(2, min(6.0, size / 5))
            if rng.random() < 0.5:
                box = (cx - size / 2, cy - thick / 2, cx + size / 2, cy + thick / 2)
            else:
                box = (cx - thick / 2, cy - size / 2, cx + thick / 2, cy + size / 2)
            draw.rectangle([float(v) for v in box], fill=colour)
        else:  # triangle
            ang = rng.uniform(0, 2 * np.pi)
            pts = [
                (
                    float(cx + size / 2 * np.cos(ang + k * 2 * np.pi / 3)),
                    float(cy + size / 2 * np.sin(ang + k * 2 * np.pi / 3)),
                )
                for k in range(3)
            ]
            draw.polygon(pts, fill=colour)
    out = np.asarray(img, dtype=np.float32)
    sigma = rng.uniform(2.0, 8.0)
    out = out + rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_target(
    img: np.ndarray,
    label: str,
    box: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> None:
    """Draw one target in place into ``box`` (x1, y1, x2, y2 in pixels).

    ``label`` is ``"fixed"`` (filled rectangle) or ``"dome"`` (filled ellipse).
    The target is dark on a light region or bright on a dark region.
    """
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}")
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    pad = 3
    cx1, cy1 = max(0, int(np.floor(x1)) - pad), max(0, int(np.floor(y1)) - pad)
    cx2, cy2 = min(w, int(np.ceil(x2)) + pad), min(h, int(np.ceil(y2)) + pad)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    crop = img[cy1:cy2, cx1:cx2]
    local = float(crop.mean())
    value = float(rng.uniform(0, 50)) if local > 128 else float(rng.uniform(205, 255))
    colour = tuple(int(np.clip(value + rng.uniform(-12, 12), 0, 255)) for _ in range(3))
    outline_w = int(rng.integers(1, 3)) if rng.random() < 0.3 else 0
    outline = tuple(int(np.clip(255 - c + rng.uniform(-30, 30), 0, 255)) for c in colour)
    pil = Image.fromarray(np.ascontiguousarray(crop), "RGB")
    draw = ImageDraw.Draw(pil)
    # PIL boxes are inclusive of the last pixel: draw [x1, x2 - 1]
    shape = [float(x1 - cx1), float(y1 - cy1), float(x2 - cx1) - 1.0, float(y2 - cy1) - 1.0]
    kwargs: dict[str, object] = {"fill": colour}
    if outline_w:
        kwargs.update(outline=outline, width=outline_w)
    if label == "fixed":
        draw.rectangle(shape, **kwargs)  # type: ignore[arg-type]
    else:
        draw.ellipse(shape, **kwargs)  # type: ignore[arg-type]
    img[cy1:cy2, cx1:cx2] = np.asarray(pil)


def _target_size(rng: np.random.Generator, label: str, min_px: float, max_px: float) -> tuple[float, float]:
    longest = float(rng.uniform(min_px, max_px))
    if label == "fixed":
        aspect = float(rng.uniform(*FIXED_ASPECT))
        return longest, max(3.0, longest / aspect)
    aspect = float(rng.uniform(*DOME_ASPECT))
    if aspect >= 1.0:
        return longest, longest / aspect
    return longest * aspect, longest


def make_scene(
    seed: int,
    width: int,
    height: int,
    n_targets: int,
    min_px: float,
    max_px: float,
    margin: int = 0,
) -> tuple[np.ndarray, list[dict]]:
    """Render a scene with ``n_targets`` non-overlapping targets.

    Target sizes: longest side uniform in [min_px, max_px]; all targets lie
    fully inside the image, at least ``margin`` px from its border, with a gap
    of at least 4 px between targets.  Returns ``(image HxWx3 uint8 RGB,
    truth)`` where truth is a list of ``{"label": str, "box": [x1, y1, x2, y2]}``
    in pixels (float, x2/y2 exclusive).  Raises ValueError if the targets do
    not fit.
    """
    rng = np.random.default_rng(seed)
    img = render_background(rng, width, height)
    truth: list[dict] = []
    placed: list[tuple[float, float, float, float]] = []
    gap = 4.0
    for _ in range(n_targets):
        label = LABELS[int(rng.integers(0, 2))]
        for _attempt in range(2000):
            bw, bh = _target_size(rng, label, min_px, max_px)
            lo_x, hi_x = margin, width - margin - bw
            lo_y, hi_y = margin, height - margin - bh
            if hi_x < lo_x or hi_y < lo_y:
                raise ValueError("target does not fit in the scene")
            x1 = float(np.round(rng.uniform(lo_x, hi_x)))
            y1 = float(np.round(rng.uniform(lo_y, hi_y)))
            bw, bh = float(np.round(bw)), float(np.round(bh))
            box = (x1, y1, min(x1 + bw, width - margin), min(y1 + bh, height - margin))
            if all(
                box[0] >= p[2] + gap or p[0] >= box[2] + gap or box[1] >= p[3] + gap or p[1] >= box[3] + gap
                for p in placed
            ):
                break
        else:
            raise ValueError(f"could not place {n_targets} non-overlapping targets")
        placed.append(box)
        draw_target(img, label, box, rng)
        truth.append({"label": label, "box": [box[0], box[1], box[2], box[3]]})
    # light sensor noise over everything, so targets are not perfectly flat
    noise = rng.normal(0.0, 2.0, size=img.shape).astype(np.float32)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, truth
