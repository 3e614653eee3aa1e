"""Make the README's sample frame: toy targets drawn into a real street photo, 1920x1080.

Run by hand (needs ../shared/data); the output is committed under samples/. The photo is
OpenSfM's Lund sample (BSD-2-Clause, see samples/README.md); the targets are the toy
shapes the test models know (tests/models/toy_targets.py), placed where cameras hang: on a
lamp post, on facades, under eaves.

    .venv/bin/python scripts/make_sample.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "models"))

from toy_targets import draw_target  # noqa: E402

BACKGROUND = ROOT.parent / "shared" / "data" / "synth" / "backgrounds" / "opensfm_027.jpg"
OUT = ROOT / "samples" / "lund-toy-targets.jpg"
# (label, x1, y1, width, height) in the 1920x1080 frame: far ones small, near ones bigger
TARGETS = [
    ("dome", 1668, 92, 26, 24),  # on the near lamp post
    ("fixed", 1440, 420, 34, 16),  # on the brick facade
    ("dome", 1310, 330, 20, 20),
    ("dome", 1180, 500, 14, 13),  # far down the street
    ("fixed", 1100, 520, 18, 9),
    ("fixed", 30, 420, 50, 22),  # on the sign post, left
    ("dome", 716, 512, 12, 12),  # on the far lamp post
]


def main() -> int:
    if not BACKGROUND.exists():
        print(f"needs {BACKGROUND} (the shared data folder)", file=sys.stderr)
        return 1
    with Image.open(BACKGROUND) as photo:
        w, h = photo.size  # 1024x768: crop to 16:9 around the street, scale to 1920x1080
        crop_h = round(w * 9 / 16)
        top = (h - crop_h) // 3
        frame = np.array(photo.convert("RGB").crop((0, top, w, top + crop_h)).resize((1920, 1080), Image.LANCZOS))
    rng = np.random.default_rng(2026)
    truth = []
    for label, x, y, bw, bh in TARGETS:
        box = (float(x), float(y), float(x + bw), float(y + bh))
        draw_target(frame, label, box, rng)
        truth.append({"label": label, "box": list(box)})
    OUT.parent.mkdir(exist_ok=True)
    Image.fromarray(frame).save(OUT, quality=90)
    OUT.with_suffix(".json").write_text(json.dumps({"width": 1920, "height": 1080, "targets": truth}, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
