"""Make the README's sample frame: renders of CC0 3D camera models in a real street photo.

Run by hand (needs ../shared/data and a sprite bank rendered by models/synth/render_sprites.py
from the project's own CC0 procedural models); the output is committed under samples/.

    .venv/bin/python scripts/make_sample.py [--sprites /work/data/sprites]

The photo is OpenSfM's Lund sample (BSD-2-Clause, see samples/README.md). Only sprites of the
procedural models (CC0, made for this project) are used, so the frame may be redistributed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = ROOT.parent / "shared" / "data" / "synth" / "backgrounds" / "opensfm_027.jpg"
OUT = ROOT / "samples" / "lund-cameras.jpg"
# (sprite, x, y of the housing's top-left, housing width in px, mount) in the 1920x1080 frame
PLACES = [
    ("dome_white_003.png", 1612, 118, 30, "pole-right"),  # under the near lamp head
    ("bullet_simple_005.png", 1460, 400, 40, "wall"),  # on the brick facade
    ("turret_eyeball_010.png", 1296, 318, 22, "wall"),
    ("ptz_pendant_wallarm_002.png", 1168, 470, 20, "none"),  # far down the street
    ("alpr_flock_style_pole_004.png", 40, 380, 36, "none"),  # on the sign post, left
    ("dome_dark_007.png", 722, 505, 14, "pole-right"),  # on the far lamp post
]


def paste(
    frame: Image.Image, sprite: Image.Image, housing: list[float], x: float, y: float, width: float
) -> list[float]:
    """Paste ``sprite`` scaled so its housing is ``width`` px wide with the housing's top-left
    at (x, y); return the housing box in the frame."""
    hx0, hy0, hx1, hy1 = housing
    s = width / (hx1 - hx0)
    size = (max(1, round(sprite.width * s)), max(1, round(sprite.height * s)))
    small = sprite.resize(size, Image.Resampling.LANCZOS)
    ox, oy = round(x - hx0 * s), round(y - hy0 * s)
    shade = small.filter(ImageFilter.GaussianBlur(0.4))  # no razor edges on a real sensor
    frame.paste(shade, (ox, oy), shade)
    return [ox + hx0 * s, oy + hy0 * s, ox + hx1 * s, oy + hy1 * s]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sprites", type=Path, default=Path("/work/data/sprites"))
    args = ap.parse_args()
    index = {item["file"]: item for item in json.loads((args.sprites / "index.json").read_text())}
    if not BACKGROUND.exists():
        print(f"needs {BACKGROUND} (the shared data folder)", file=sys.stderr)
        return 1
    with Image.open(BACKGROUND) as photo:
        w, h = photo.size  # 1024x768: crop to 16:9 around the street, scale to 1920x1080
        crop_h = round(w * 9 / 16)
        top = (h - crop_h) // 3
        frame = photo.convert("RGB").crop((0, top, w, top + crop_h)).resize((1920, 1080), Image.Resampling.LANCZOS)
    pen = ImageDraw.Draw(frame)
    truth = []
    for name, x, y, width, mount in PLACES:
        item = index[name]
        assert item["model"].startswith("procedural/"), "only the CC0 procedural models may ship"
        with Image.open(args.sprites / name) as sprite:
            box = paste(frame, sprite.convert("RGBA"), item["housing"], x, y, width)
        if mount == "pole-right":  # a short grey bracket back to the pole
            pen.rectangle(
                (box[0] - 10, (box[1] + box[3]) / 2 - 2, box[0], (box[1] + box[3]) / 2 + 1), fill=(95, 95, 98)
            )
        elif mount == "wall":
            pen.rectangle(((box[0] + box[2]) / 2 - 2, box[1] - 6, (box[0] + box[2]) / 2 + 2, box[1]), fill=(80, 80, 84))
        truth.append({"label": item["class"], "box": [round(v, 1) for v in box]})
    arr = np.asarray(frame).astype(np.int16)
    arr += np.random.default_rng(7).normal(0, 2.0, arr.shape).astype(np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(OUT, quality=90)
    OUT.with_suffix(".json").write_text(json.dumps({"width": 1920, "height": 1080, "targets": truth}, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
