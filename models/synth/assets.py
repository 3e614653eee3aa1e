"""Load and prepare the raw materials: backgrounds, matted cut-outs and optional 3D sprites.

Cut-outs on white are matted by a near-white flood fill from the image borders, cropped to
the largest connected object (drops watermarks and logos), eroded by a pixel and feathered.
Every object is stored as an RGBA crop (longest side <= ``MAX_SIDE``) with its class and the
housing box (the part a label covers) in crop pixels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from firmware.sighting import LABELS

CLASSES: tuple[str, ...] = LABELS  # the sighting contract's classes, in the model's order
MAX_SIDE = 256
WHITE_THRESH = 246
HERE = Path(__file__).resolve().parent
DEFAULT_SRC = HERE.parents[2] / "shared" / "data" / "synth"
CLASSES_CSV = HERE / "cutout_classes.csv"
MATTE_VERSION = "m2"
DEFAULT_CACHE = Path.home() / ".cache" / "sousveil" / f"synth_cutouts_{MATTE_VERSION}"


@dataclass
class Sprite:
    """An RGBA object crop, its class index (0..3) and its housing box in crop pixels."""

    image: Image.Image
    cls: int
    housing: tuple[float, float, float, float]
    name: str


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Bounding mask of the largest 8-connected blob, found on a downsampled, dilated copy."""
    h, w = mask.shape
    f = max(1, max(h, w) // 100)
    # no dilation: a watermark a few pixels away must stay a separate blob
    lab = (mask[::f, ::f] * 255).astype(np.uint8)
    best, best_n = 0, 0
    value = 1
    while value < 250:
        left = lab == 255
        remaining = int(left.sum())
        if remaining <= best_n:  # what is left cannot beat the best blob
            break
        ys, xs = np.nonzero(left)
        img = Image.fromarray(lab).copy()
        ImageDraw.floodfill(img, (int(xs[0]), int(ys[0])), value)
        lab = np.array(img)
        n = int((lab == value).sum())
        if n > best_n:
            best, best_n = value, n
        value += 1
    keep = lab == best
    full = np.repeat(np.repeat(keep, f, axis=0), f, axis=1)[:h, :w]
    out = np.zeros_like(mask)
    out[: full.shape[0], : full.shape[1]] = full
    # grow by the dilation margin so thin parts at the blob's edge are kept
    grown = Image.fromarray((out * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * f + 1))
    return mask & (np.array(grown) > 0)


def matte(im: Image.Image) -> Image.Image:
    """RGBA of the object: alpha from the file or a near-white flood fill from the borders."""
    if max(im.size) > 2 * MAX_SIDE:  # only <= MAX_SIDE is kept: matte at twice that
        im = im.copy()
        im.thumbnail((2 * MAX_SIDE, 2 * MAX_SIDE), Image.Resampling.LANCZOS)
    if im.mode in ("RGBA", "LA", "P") and "A" in im.convert("RGBA").getbands():
        rgba = im.convert("RGBA")
        a = np.array(rgba)[:, :, 3]
        if (a < 128).mean() > 0.02:
            fg = a >= 128
            fg = _largest_component(fg)
            arr = np.array(rgba)
            arr[:, :, 3] = np.where(fg, arr[:, :, 3], 0)
            return Image.fromarray(arr, "RGBA")
    rgb = np.array(im.convert("RGB"))
    white = rgb.min(axis=2) >= WHITE_THRESH
    h, w = white.shape
    # flood fill (pure Python in Pillow) on a small copy, then refine at full resolution
    f = max(1, max(h, w) // 160)
    small = white[::f, ::f]
    sh, sw = small.shape
    wimg = Image.fromarray(small.astype(np.uint8) * 255).copy()
    border = [(x, 0) for x in range(sw)] + [(x, sh - 1) for x in range(sw)]
    border += [(0, y) for y in range(sh)] + [(sw - 1, y) for y in range(sh)]
    for p in border:
        if wimg.getpixel(p) == 255:
            ImageDraw.floodfill(wimg, p, 128)
    bg_small = Image.fromarray(((np.array(wimg) == 128) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
    bg_up = np.repeat(np.repeat(np.array(bg_small) > 0, f, axis=0), f, axis=1)[:h, :w]
    bg = np.zeros_like(white)
    bg[: bg_up.shape[0], : bg_up.shape[1]] = bg_up
    fg = ~(bg & white)
    fg = _largest_component(fg)
    alpha = Image.fromarray((fg * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(3))
    alpha = alpha.filter(ImageFilter.GaussianBlur(0.8))
    out = im.convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def load_classes(path: Path = CLASSES_CSV) -> dict[str, tuple[str, tuple[float, float, float, float] | None]]:
    table: dict[str, tuple[str, tuple[float, float, float, float] | None]] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            hs = (row.get("housing") or "").split()
            frac = (float(hs[0]), float(hs[1]), float(hs[2]), float(hs[3])) if len(hs) == 4 else None
            table[row["file"]] = (row["class"], frac)
    return table


def _crop_object(
    rgba: Image.Image, frac: tuple[float, float, float, float] | None, cls: int, name: str
) -> Sprite | None:
    bbox = rgba.getchannel("A").point(lambda v: 255 if v > 40 else 0).getbbox()
    if bbox is None:
        return None
    obj = rgba.crop(bbox)
    s = MAX_SIDE / max(obj.size)
    if s < 1:
        obj = obj.resize((max(1, round(obj.width * s)), max(1, round(obj.height * s))), Image.Resampling.LANCZOS)
    w, h = obj.size
    full = (0.0, 0.0, float(w), float(h))
    housing = full if frac is None else (frac[0] * w, frac[1] * h, frac[2] * w, frac[3] * h)
    return Sprite(obj, cls, housing, name)


def load_cutouts(src: Path = DEFAULT_SRC, cache: Path | None = None, stride: int = 1) -> list[Sprite]:
    """All labelled cut-outs and product photos as sprites (cached as PNG under ``cache``).

    ``stride`` > 1 keeps every stride-th file of each class (quick tests on a cold cache).
    """
    table = load_classes()
    sprites: list[Sprite] = []
    seen: dict[str, int] = {}
    for rel, (cname, frac) in sorted(table.items()):
        if cname in CLASSES:
            seen[cname] = seen.get(cname, -1) + 1
            if seen[cname] % stride:
                continue
        if cname not in CLASSES:
            continue
        path = src / rel
        if not path.exists():
            continue
        cpath = cache / (rel.replace("/", "__") + ".png") if cache is not None else None
        if cpath is not None and cpath.exists():
            rgba = Image.open(cpath).convert("RGBA")
            rgba.load()
            frac_c = frac
            sp = _crop_object(rgba, None, CLASSES.index(cname), rel)
            if sp is not None and frac_c is not None:
                w, h = sp.image.size
                sp.housing = (frac_c[0] * w, frac_c[1] * h, frac_c[2] * w, frac_c[3] * h)
        else:
            with Image.open(path) as im:
                im.load()
                rgba = matte(im)
            sp = _crop_object(rgba, frac, CLASSES.index(cname), rel)
            if sp is not None and cpath is not None:
                cpath.parent.mkdir(parents=True, exist_ok=True)
                sp.image.save(cpath)
        if sp is not None:
            sprites.append(sp)
    return sprites


def load_rendered(sprite_dir: Path) -> list[Sprite]:
    """3D sprites from ``render_sprites.py``: PNGs plus an ``index.json`` of class and housing box."""
    index = sprite_dir / "index.json"
    if not index.exists():
        return []
    out: list[Sprite] = []
    for item in json.loads(index.read_text()):
        p = sprite_dir / item["file"]
        if not p.exists() or item["class"] not in CLASSES:
            continue
        im = Image.open(p).convert("RGBA")
        im.load()
        x0, y0, x1, y1 = item["housing"]
        out.append(Sprite(im, CLASSES.index(item["class"]), (x0, y0, x1, y1), item["file"]))
    return out


def list_backgrounds(src: Path = DEFAULT_SRC) -> list[Path]:
    return sorted((src / "backgrounds").glob("*.jpg"))
