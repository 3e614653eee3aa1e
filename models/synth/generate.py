"""Synthetic 320x320 training tiles of street surveillance cameras, with COCO labels.

Tiles are cut as the detector cuts them (docs/detector.md): *fine* tiles are 320x320 windows
of a background scaled as if it were a 1920-px-wide frame; *coarse* tiles are the whole
background (or its top band) letterboxed into 320x320 with pad value 114. Camera cut-outs
(and optional 3D-rendered sprites) are pasted where cameras hang - on poles, walls, eaves,
mast arms - with a drawn mount, colour-matched and degraded. See models/synth/README.md.

    python -m models.synth.generate --out DIR --n N --seed S [--sprites DIR] [--append]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.synth.assets import (
    CLASSES,
    DEFAULT_CACHE,
    DEFAULT_SRC,
    Sprite,
    list_backgrounds,
    load_cutouts,
    load_rendered,
)

TILE = 320
FRAME_W = 1920
PAD = 114
Box = tuple[float, float, float, float]
Rng = np.random.Generator

# mount styles per class and their weights
MOUNTS: dict[int, tuple[tuple[str, ...], tuple[float, ...]]] = {
    0: (("pole", "wall", "arm", "eave", "none"), (0.3, 0.35, 0.15, 0.1, 0.1)),
    1: (("eave", "wall", "pole", "arm", "none"), (0.4, 0.25, 0.15, 0.1, 0.1)),
    2: (("pendant", "arm", "pole", "eave", "none"), (0.4, 0.2, 0.2, 0.1, 0.1)),
    3: (("alpr_pole", "pole", "none"), (0.7, 0.15, 0.15)),
}


@dataclass
class Params:
    p_coarse: float = 0.2
    p_negative: float = 0.15
    p_night: float = 0.08
    p_haze: float = 0.12
    p_motion: float = 0.4
    p_defocus: float = 0.12
    p_distractor_neg: float = 0.7
    p_distractor_pos: float = 0.3
    p_sprite3d: float = 0.3


def _log_uniform(rng: Rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _grey(rng: Rng, lo: int = 40, hi: int = 170) -> tuple[int, int, int]:
    g = int(rng.integers(lo, hi))
    t = rng.integers(-8, 9, size=3)
    return (int(np.clip(g + t[0], 0, 255)), int(np.clip(g + t[1], 0, 255)), int(np.clip(g + t[2], 0, 255)))


def _rect(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int]) -> None:
    draw.rectangle((round(min(x0, x1)), round(min(y0, y1)), round(max(x0, x1)), round(max(y0, y1))), fill=fill)


def _shaded_pole(
    draw: ImageDraw.ImageDraw, x: float, y0: float, y1: float, w: float, col: tuple[int, int, int]
) -> None:
    w = max(1.5, w)
    _rect(draw, x - w / 2, y0, x + w / 2, y1, col)
    dark = (int(col[0] * 0.7), int(col[1] * 0.7), int(col[2] * 0.7))
    if w >= 3:
        _rect(draw, x + w / 6, y0, x + w / 2, y1, dark)


class Generator:
    def __init__(
        self, src: Path = DEFAULT_SRC, sprites: Path | None = None, cache: Path | None = None, stride: int = 1
    ) -> None:
        self.bg_paths = list_backgrounds(src)
        if not self.bg_paths:
            raise FileNotFoundError(f"no backgrounds under {src / 'backgrounds'}")
        self.cutouts = load_cutouts(src, cache if cache is not None else DEFAULT_CACHE, stride)
        self.rendered = load_rendered(sprites) if sprites is not None else []
        self.by_class_cut: list[list[Sprite]] = [[s for s in self.cutouts if s.cls == c] for c in range(len(CLASSES))]
        self.by_class_3d: list[list[Sprite]] = [[s for s in self.rendered if s.cls == c] for c in range(len(CLASSES))]
        self._bg_cache: dict[int, Image.Image] = {}
        self.params = Params()
        # class frequencies: fixed and dome are the commonest street cameras; alpr and ptz rarer
        self.class_p = np.array([0.34, 0.32, 0.16, 0.18])

    # -- backgrounds -------------------------------------------------------------------------
    def background(self, i: int) -> Image.Image:
        im = self._bg_cache.get(i)
        if im is None:
            with Image.open(self.bg_paths[i]) as f:
                im = f.convert("RGB")
            self._bg_cache[i] = im
        return im

    def _fine_base(self, rng: Rng) -> tuple[Image.Image, tuple[int, int, int, int], bool]:
        bg = self.background(int(rng.integers(len(self.bg_paths))))
        if rng.random() < 0.5:
            bg = bg.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        s = FRAME_W / bg.width
        fh = bg.height * s
        x0 = rng.uniform(0, FRAME_W - TILE)
        ymax = max(0.0, min(0.6 * fh, fh - TILE) - 0 if rng.random() < 0.85 else fh - TILE)
        ymax = min(ymax, fh - TILE)
        y0 = rng.uniform(0, max(ymax, 1e-3)) if fh > TILE else 0.0
        box = (x0 / s, y0 / s, (x0 + TILE) / s, (y0 + TILE) / s)
        tile = bg.resize((TILE, TILE), Image.Resampling.BILINEAR, box=box)
        low = y0 + TILE / 2 > 0.6 * fh  # mostly road: cameras rarely hang there
        return tile, (0, 0, TILE, TILE), low

    def _coarse_base(self, rng: Rng) -> tuple[Image.Image, tuple[int, int, int, int]]:
        bg = self.background(int(rng.integers(len(self.bg_paths))))
        if rng.random() < 0.5:
            bg = bg.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        frac_h = 1.0 if rng.random() < 0.5 else 0.55
        region = (0, 0, bg.width, round(bg.height * frac_h))
        rw, rh = region[2], region[3]
        fit = TILE / max(rw, rh)
        cw, ch = max(1, min(TILE, round(rw * fit))), max(1, min(TILE, round(rh * fit)))
        content = bg.resize((cw, ch), Image.Resampling.BOX if fit < 0.5 else Image.Resampling.BILINEAR, box=region)
        tile = Image.new("RGB", (TILE, TILE), (PAD, PAD, PAD))
        tile.paste(content, (0, 0))
        return tile, (0, 0, cw, ch)

    # -- cameras -----------------------------------------------------------------------------
    def _pick_sprite(self, rng: Rng, cls: int) -> Sprite:
        pool3d = self.by_class_3d[cls]
        if pool3d and (rng.random() < self.params.p_sprite3d or not self.by_class_cut[cls]):
            return pool3d[int(rng.integers(len(pool3d)))]
        pool = self.by_class_cut[cls]
        return pool[int(rng.integers(len(pool)))]

    def _prepare(self, sp: Sprite, size: float, rng: Rng) -> tuple[Image.Image, Box]:
        """Scale (housing longest side = size), flip, rotate, colour-jitter a sprite."""
        hx0, hy0, hx1, hy1 = sp.housing
        hl = max(hx1 - hx0, hy1 - hy0, 1.0)
        s = size / hl
        w, h = sp.image.size
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        im = sp.image.resize((nw, nh), Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC)
        sx, sy = nw / w, nh / h
        box = (hx0 * sx, hy0 * sy, hx1 * sx, hy1 * sy)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            box = (nw - box[2], box[1], nw - box[0], box[3])
        if rng.random() < 0.6:
            ang = float(rng.normal(0, 4))
            im2 = im.rotate(ang, resample=Image.Resampling.BICUBIC, expand=True)
            c, sn = math.cos(math.radians(ang)), math.sin(math.radians(ang))
            cx, cy, ncx, ncy = nw / 2, nh / 2, im2.width / 2, im2.height / 2
            xs, ys = [], []
            for px, py in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
                dx, dy = px - cx, py - cy
                xs.append(ncx + c * dx + sn * dy)
                ys.append(ncy - sn * dx + c * dy)
            # shrink the rotated-corner box a little: the housing is rounder than its rectangle
            bx0, by0, bx1, by1 = min(xs), min(ys), max(xs), max(ys)
            shrink = abs(sn) * 0.25
            bw, bh = bx1 - bx0, by1 - by0
            box = (bx0 + bw * shrink / 2, by0 + bh * shrink / 2, bx1 - bw * shrink / 2, by1 - bh * shrink / 2)
            im = im2
        return im, box

    def _colour(self, im: Image.Image, local: np.ndarray, rng: Rng, night: bool) -> Image.Image:
        a = np.asarray(im, dtype=np.float32)
        rgb, alpha = a[:, :, :3], a[:, :, 3:]
        wsum = max(float(alpha.sum()) / 255.0, 1.0)
        m_s = (rgb * alpha / 255.0).reshape(-1, 3).sum(0) / wsum
        k = rng.uniform(0.05, 0.3)
        c = rng.uniform(0.7, 1.1)
        rgb = (rgb - m_s) * c + m_s * (1 - k) + local * k
        rgb *= rng.uniform(0.7, 1.15)
        # directional light: a vertical gradient (lit top, shaded underside) or the reverse
        h = rgb.shape[0]
        g0, g1 = rng.uniform(0.85, 1.15), rng.uniform(0.55, 1.0)
        if rng.random() < 0.25:
            g0, g1 = g1, g0
        rgb *= np.linspace(g0, g1, h, dtype=np.float32)[:, None, None]
        if night:
            rgb *= 0.9
        out = np.concatenate([np.clip(rgb, 0, 255), alpha], axis=2).astype(np.uint8)
        img = Image.fromarray(out, "RGBA")
        if rng.random() < 0.2:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
        return img

    def _mount(
        self,
        draw: ImageDraw.ImageDraw,
        kind: str,
        px: float,
        py: float,
        w: float,
        h: float,
        area: tuple[int, int, int, int],
        rng: Rng,
    ) -> None:
        """Draw the support behind a camera whose pasted image spans (px, py, px+w, py+h)."""
        col = _grey(rng)
        ln = max(w, h)
        cx, cy = px + w / 2, py + h / 2
        th = max(1.0, ln * rng.uniform(0.06, 0.14))
        bottom = area[3]
        if kind in ("pole", "alpr_pole"):
            pw = max(2.0, ln * rng.uniform(0.15, 0.45))
            side = -1 if rng.random() < 0.5 else 1
            pole_x = cx + side * (w / 2 + pw / 2 + ln * rng.uniform(0.05, 0.3))
            top = py - ln * rng.uniform(0.3, 3.0)
            if kind == "alpr_pole":
                top = py - ln * rng.uniform(0.6, 1.2)
                pw_ = ln * rng.uniform(1.0, 1.6)
                ph_ = pw_ * rng.uniform(0.45, 0.8)
                tilt = pw_ * rng.uniform(0.0, 0.25)
                panel = (rng.integers(15, 45), rng.integers(25, 60), rng.integers(50, 110))
                pcol = (int(panel[0]), int(panel[1]), int(panel[2]))
                x0 = pole_x - pw_ / 2
                y0 = top - ph_
                draw.polygon([(x0, y0 + tilt), (x0 + pw_, y0), (x0 + pw_, y0 + ph_), (x0, y0 + ph_ + tilt)], fill=pcol)
                if pw_ > 12:
                    lc = (min(255, pcol[0] + 40), min(255, pcol[1] + 40), min(255, pcol[2] + 50))
                    for j in range(1, 4):
                        xx = x0 + pw_ * j / 4
                        draw.line([(xx, y0 + tilt * (1 - j / 4)), (xx, y0 + ph_ + tilt * (1 - j / 4))], fill=lc)
                top = y0 + ph_ * 0.5
            _shaded_pole(draw, pole_x, top, bottom + 5, pw, col)
            _rect(draw, cx, cy - th / 2, pole_x, cy + th / 2, col)
        elif kind == "wall":
            side = -1 if rng.random() < 0.5 else 1
            _rect(draw, cx, cy - th, cx + side * (w / 2 + ln * rng.uniform(0.1, 0.4)), cy + th, col)
        elif kind == "eave":
            band = max(2.0, ln * rng.uniform(0.25, 1.2))
            ext_l, ext_r = ln * rng.uniform(1, 6), ln * rng.uniform(1, 6)
            stem = ln * rng.uniform(0.0, 0.25)
            ecol = _grey(rng, 60, 220)
            _rect(draw, cx - ext_l, py - stem - band, cx + ext_r, py - stem, ecol)
            if stem >= 1:
                _rect(draw, cx - th / 2, py - stem, cx + th / 2, py + h * 0.2, col)
        elif kind in ("arm", "pendant"):
            side = -1 if rng.random() < 0.5 else 1
            stem = ln * rng.uniform(0.1, 0.5)
            arm_y = py - stem
            length = ln * (rng.uniform(0.6, 1.5) if kind == "pendant" else rng.uniform(1.5, 8))
            end_x = cx + side * length
            _rect(draw, cx - th / 2, arm_y, end_x, arm_y + th * 1.3, col)
            _rect(draw, cx - th / 2, arm_y, cx + th / 2, py + h * 0.15, col)
            if kind == "pendant":
                _rect(draw, end_x - th, arm_y - ln * 0.3, end_x + th, arm_y + ln * 0.3, col)
            elif rng.random() < 0.6:
                _shaded_pole(draw, end_x, arm_y - ln * rng.uniform(0, 1), bottom + 5, max(2.0, ln * 0.3), col)

    def _place(
        self,
        tile: Image.Image,
        layer: Image.Image,
        cls: int,
        size: float,
        area: tuple[int, int, int, int],
        occupied: list[Box],
        rng: Rng,
        night: bool,
    ) -> tuple[Box, tuple[float, float]] | None:
        """Draw a mount on ``tile`` and paste a camera on ``layer`` (composited last, so no later
        mount or distractor covers a labelled camera)."""
        sp = self._pick_sprite(rng, cls)
        im, hb = self._prepare(sp, size, rng)
        w, h = im.size
        ax0, ay0, ax1, ay1 = area
        built_in = sp.housing != (0.0, 0.0, float(sp.image.width), float(sp.image.height))
        for _ in range(6):
            # the housing box must lie inside the usable area; the image may overhang
            bw, bh = hb[2] - hb[0], hb[3] - hb[1]
            if bw > ax1 - ax0 - 2 or bh > ay1 - ay0 - 2:
                return None
            bx = rng.uniform(ax0 + 1, ax1 - 1 - bw)
            ylo, yhi = ay0 + 1, ay1 - 1 - bh
            by = ylo + (yhi - ylo) * float(rng.beta(1.3, 2.0))
            box = (bx, by, bx + bw, by + bh)
            if any(not (box[2] < o[0] or box[0] > o[2] or box[3] < o[1] or box[1] > o[3]) for o in occupied):
                continue
            px, py = round(bx - hb[0]), round(by - hb[1])
            box = (px + hb[0], py + hb[1], px + hb[2], py + hb[3])
            box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(TILE)), min(box[3], float(TILE)))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                return None
            x0i, y0i = max(0, px), max(0, py)
            x1i, y1i = min(TILE, px + w), min(TILE, py + h)
            if x1i - x0i < 1 or y1i - y0i < 1:
                return None
            local = np.asarray(tile.crop((x0i, y0i, x1i, y1i)), dtype=np.float32).reshape(-1, 3).mean(0)
            draw = ImageDraw.Draw(tile)
            kinds, weights = MOUNTS[cls]
            kind = "none" if built_in else str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
            self._mount(draw, kind, px + hb[0], py + hb[1], hb[2] - hb[0], hb[3] - hb[1], area, rng)
            im = self._colour(im, local, rng, night)
            if kind in ("wall", "none", "pendant") and rng.random() < 0.4:
                sh = Image.new("RGBA", im.size, (0, 0, 0, 0))
                sh.putalpha(
                    im.getchannel("A").point(lambda v: v * 0.35).filter(ImageFilter.GaussianBlur(max(1, size / 15)))
                )
                off = max(1, round(size * 0.12))
                tile.paste(sh, (px + off, py + off), sh)
            layer.alpha_composite(im, (px, py)) if px >= 0 and py >= 0 else layer.paste(im, (px, py), im)
            occupied.append(box)
            return box, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        return None

    # -- distractors -------------------------------------------------------------------------
    def _distractor(self, tile: Image.Image, area: tuple[int, int, int, int], size: float, rng: Rng) -> None:
        draw = ImageDraw.Draw(tile)
        ax0, ay0, ax1, ay1 = area
        x = rng.uniform(ax0, ax1)
        y = ay0 + (ay1 - ay0) * rng.beta(1.3, 2.0)
        ln = size
        kind = int(rng.integers(6))
        col = _grey(rng)
        if kind == 0:  # street lamp: pole, arm, head
            arm = ln * rng.uniform(1, 4)
            side = -1 if rng.random() < 0.5 else 1
            _shaded_pole(draw, x + side * arm, y, ay1 + 5, max(2.0, ln * 0.25), col)
            _rect(draw, x, y, x + side * arm, y + max(1.0, ln * 0.1), col)
            head = _grey(rng, 60, 230)
            draw.ellipse((x - ln / 2, y - ln * 0.1, x + ln / 2, y + ln * 0.3), fill=head)
            if rng.random() < 0.5:
                draw.ellipse((x - ln * 0.35, y + ln * 0.15, x + ln * 0.35, y + ln * 0.35), fill=(250, 245, 215))
        elif kind == 1:  # sign on a thin pole
            scol = [(200, 30, 30), (30, 60, 170), (230, 230, 230), (240, 200, 20), (20, 120, 50)][int(rng.integers(5))]
            _shaded_pole(draw, x, y, ay1 + 5, max(1.5, ln * 0.12), col)
            if rng.random() < 0.5:
                draw.ellipse((x - ln / 2, y - ln / 2, x + ln / 2, y + ln / 2), fill=scol, outline=(240, 240, 240))
            else:
                _rect(draw, x - ln / 2, y - ln * 0.4, x + ln / 2, y + ln * 0.4, scol)
        elif kind == 2:  # traffic light
            _rect(draw, x - ln * 0.2, y - ln / 2, x + ln * 0.2, y + ln / 2, (25, 25, 25))
            for j, c in enumerate(((200, 40, 30), (210, 160, 20), (40, 190, 80))):
                cy = y - ln / 3 + j * ln / 3
                r = ln * 0.12
                on = rng.random() < 0.33
                draw.ellipse((x - r, cy - r, x + r, cy + r), fill=c if on else (55, 55, 50))
        elif kind == 3:  # electrical box on a pole / wall
            _shaded_pole(draw, x, y - ln, ay1 + 5, max(2.0, ln * 0.25), col)
            _rect(draw, x - ln * 0.35, y - ln * 0.3, x + ln * 0.35, y + ln * 0.4, _grey(rng, 90, 220))
        elif kind == 4:  # loudspeaker / horn or sensor: short cylinder-ish blob on an arm
            _rect(draw, x, y, x + ln * rng.uniform(0.5, 1.5), y + max(1.0, ln * 0.1), col)
            draw.ellipse((x - ln * 0.4, y - ln * 0.25, x + ln * 0.3, y + ln * 0.25), fill=_grey(rng, 120, 240))
        else:  # window / vent / plain rectangle with a dark hole (lens look-alike)
            _rect(draw, x - ln * 0.4, y - ln * 0.3, x + ln * 0.4, y + ln * 0.3, _grey(rng, 80, 230))
            r = ln * 0.1
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(20, 20, 25))

    # -- whole tile ----------------------------------------------------------------------------
    def tile(self, rng: Rng) -> tuple[Image.Image, list[tuple[int, Box]]]:
        p = self.params
        coarse = rng.random() < p.p_coarse
        low = False
        if coarse:
            tile, area = self._coarse_base(rng)
        else:
            tile, area, low = self._fine_base(rng)
        # cameras hang in the upper part of a frame; in a coarse tile keep them in the top 65 %
        content = area
        if coarse:
            area = (area[0], area[1], area[2], max(area[1] + 20, round(area[3] * 0.65)))
        night = rng.random() < p.p_night
        negative = rng.random() < (0.7 if low else p.p_negative)
        labels: list[tuple[int, Box]] = []
        centres: list[tuple[float, float, int]] = []
        occupied: list[Box] = []
        p_dis = p.p_distractor_neg if negative else p.p_distractor_pos
        if rng.random() < p_dis:
            for _ in range(int(rng.integers(1, 4))):
                self._distractor(tile, area, _log_uniform(rng, 5, 50 if not coarse else 25), rng)
        layer = Image.new("RGBA", (TILE, TILE), (0, 0, 0, 0))
        if not negative:
            k = int(rng.choice([1, 2, 3, 4], p=[0.6, 0.25, 0.1, 0.05]))
            for _ in range(k):
                cls = int(rng.choice(len(CLASSES), p=self.class_p))
                if coarse:
                    size = _log_uniform(rng, 5, 40)
                elif rng.random() < 0.85:
                    size = _log_uniform(rng, 6, 60)
                else:
                    size = _log_uniform(rng, 60, 120)
                got = self._place(tile, layer, cls, size, area, occupied, rng, night)
                if got is not None:
                    labels.append((cls + 1, got[0]))
                    centres.append((got[1][0], got[1][1], cls))
        if labels:
            tile.paste(layer, (0, 0), layer)
        arr = self._degrade(tile, rng, night, centres, coarse, content)
        return Image.fromarray(arr, "RGB"), labels

    def _degrade(
        self,
        tile: Image.Image,
        rng: Rng,
        night: bool,
        centres: list[tuple[float, float, int]],
        coarse: bool,
        area: tuple[int, int, int, int],
    ) -> np.ndarray:
        p = self.params
        if rng.random() < p.p_defocus:
            tile = tile.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.3))))
        a: np.ndarray = np.asarray(tile, dtype=np.float32)
        if rng.random() < p.p_motion:
            k = int(rng.integers(2, 7))
            dy = int(rng.integers(-1, 2)) if rng.random() < 0.3 else 0
            acc = np.zeros_like(a)
            for j in range(k):
                acc += np.roll(a, (round(dy * j / max(1, k - 1)), j - k // 2), axis=(0, 1))
            a = acc / k
        gain = rng.uniform(0.7, 1.3)
        gamma = rng.uniform(0.8, 1.25)
        a = 255.0 * np.power(np.clip(a * gain / 255.0, 0, 1), gamma)
        a *= rng.uniform(0.92, 1.08, size=3).astype(np.float32)
        if rng.random() < p.p_haze:
            hz = rng.uniform(0.1, 0.35)
            a = a * (1 - hz) + rng.uniform(190, 235) * hz
        sigma = rng.uniform(0, 4)
        if night:
            a = 255.0 * np.power(a / 255.0, rng.uniform(1.3, 2.0)) * rng.uniform(0.25, 0.55)
            a *= np.array([0.9, 0.95, 1.1], dtype=np.float32)
            sigma = rng.uniform(5, 12)
            yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
            for cx, cy, cls in centres:
                if cls != 3 and rng.random() < 0.35:
                    r = rng.uniform(1.5, 4)
                    glow = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
                    a += glow[:, :, None] * np.array([200, 170, 220], dtype=np.float32) * rng.uniform(0.4, 1)
        if sigma > 0.3:
            a += rng.normal(0, sigma, size=(TILE, TILE, 1)).astype(np.float32) * 0.6
            a += rng.normal(0, sigma * 0.5, size=a.shape).astype(np.float32)
        out: np.ndarray = np.clip(a, 0, 255).astype(np.uint8)
        if coarse:  # the letterbox padding is exact in the detector's input
            out = _repad(out, (area[2], area[3]))
        return out


def _repad(arr: np.ndarray, content: tuple[int, int]) -> np.ndarray:
    cw, ch = content
    arr[ch:, :, :] = PAD
    arr[:, cw:, :] = PAD
    return arr


def _write_coco(path: Path, seed: int, images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> None:
    coco = {
        "info": {"description": "sousveil synthetic camera tiles", "seed": seed, "generator": "models.synth.generate"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, path)


def generate(
    out: Path,
    n: int,
    seed: int,
    sprites: Path | None = None,
    src: Path = DEFAULT_SRC,
    append: bool = False,
    cache: Path | None = None,
    log: bool = True,
    stride: int = 1,
) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.json"
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    start = 0
    if append and labels_path.exists():
        old = json.loads(labels_path.read_text())
        images, anns = old["images"], old["annotations"]
        start = max((int(im["id"]) for im in images), default=-1) + 1
    gen = Generator(src, sprites, cache, stride)
    t0 = time.perf_counter()
    ann_id = max((int(a["id"]) for a in anns), default=0) + 1
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        img, labels = gen.tile(rng)
        name = f"{i:07d}.jpg"
        img.save(out / name, quality=int(rng.integers(80, 96)))
        images.append({"id": i, "file_name": name, "width": TILE, "height": TILE})
        for cat, (x0, y0, x1, y1) in labels:
            w, h = x1 - x0, y1 - y0
            bbox = [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)]
            anns.append(
                {"id": ann_id, "image_id": i, "category_id": cat, "bbox": bbox, "area": round(w * h, 2), "iscrowd": 0}
            )
            ann_id += 1
        if log and (i - start + 1) % 500 == 0:
            dt = time.perf_counter() - t0
            print(f"{i - start + 1}/{n} tiles, {(i - start + 1) / dt:.1f} tiles/s", file=sys.stderr, flush=True)
        if (i - start + 1) % 2000 == 0 and i + 1 < start + n:
            _write_coco(labels_path, seed, images, anns)  # checkpoint: a reader always sees whole tiles
    dt = time.perf_counter() - t0
    _write_coco(labels_path, seed, images, anns)
    stats: dict[str, object] = {"tiles": n, "seconds": round(dt, 2), "tiles_per_s": round(n / max(dt, 1e-9), 1)}
    if log:
        print(json.dumps(stats), file=sys.stderr)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sprites", type=Path, default=None, help="folder of 3D-rendered sprites (index.json)")
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the shared synth/ raw materials")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder for matted cut-outs")
    ap.add_argument("--append", action="store_true", help="add n tiles after those already in --out")
    args = ap.parse_args(argv)
    generate(args.out, args.n, args.seed, args.sprites, args.src, args.append, args.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
