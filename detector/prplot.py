"""A precision-recall plot as a PNG, drawn with Pillow (no plotting library on the Pi)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.evaluation import ANY, ClassCurve

COLOURS = [(20, 20, 20), (230, 160, 0), (0, 150, 220), (220, 60, 140), (220, 40, 40), (60, 170, 60)]


def plot_pr(curves: dict[str, ClassCurve], ap50: dict[str, float], out: Path, title: str) -> None:
    """Precision (y) against recall (x) for each class with positives, AP50 in the legend."""
    from PIL import Image, ImageDraw

    w, h, left, top, right, bottom = 720, 560, 70, 50, 200, 60
    img = Image.new("RGB", (w, h), "white")
    pen = ImageDraw.Draw(img)
    pw, ph = w - left - right, h - top - bottom

    def xy(recall: float, precision: float) -> tuple[float, float]:
        return left + recall * pw, top + (1.0 - precision) * ph

    for k in range(11):  # grid and ticks every 0.1
        v = k / 10
        pen.line([xy(v, 0), xy(v, 1)], fill=(225, 225, 225))
        pen.line([xy(0, v), xy(1, v)], fill=(225, 225, 225))
        pen.text((xy(v, 0)[0] - 8, top + ph + 6), f"{v:.1f}", fill="black")
        pen.text((left - 30, xy(0, v)[1] - 6), f"{v:.1f}", fill="black")
    pen.rectangle([left, top, left + pw, top + ph], outline="black")
    pen.text((left + pw / 2 - 20, top + ph + 28), "recall", fill="black")
    pen.text((8, top - 24), "precision", fill="black")
    pen.text((left, 14), title, fill="black")

    legend_y = top
    names = [ANY, *[n for n in curves if n != ANY]]
    for i, name in enumerate(names):
        curve = curves.get(name)
        if curve is None or curve.positives == 0:
            continue
        colour = COLOURS[i % len(COLOURS)]
        if curve.scores:
            _, precision, recall = curve.pr()
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            points = [xy(0.0, float(envelope[0]))] + [
                xy(float(r), float(p)) for r, p in zip(recall, envelope, strict=True)
            ]
            pen.line(points, fill=colour, width=3 if name == ANY else 2)
        pen.line([(left + pw + 14, legend_y + 7), (left + pw + 34, legend_y + 7)], fill=colour, width=3)
        pen.text((left + pw + 40, legend_y), f"{name}  AP50 {ap50[name]:.2f}  (n={curve.positives})", fill="black")
        legend_y += 20
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
