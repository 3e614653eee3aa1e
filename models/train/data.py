"""Training data: synthetic COCO tiles, real photos cut into tiles the way the detector does,
augmentation, and CenterNet target encoding (stride 4).

A sample is ``(tile uint8 [S,S,3], targets)``; targets are dicts with ``cls`` (0..3), ``box``
(visible part in tile pixels), ``full`` (whole box in tile pixels) and ``ignore``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from models.synth.assets import CLASSES

TILE = 320
PAD = 114
STRIDE = 4
NCLS = len(CLASSES)


@dataclass
class Record:
    path: Path
    boxes: np.ndarray  # [N, 4] x1 y1 x2 y2 image pixels
    cls: np.ndarray  # [N] 0..3
    ignore: np.ndarray  # [N] bool
    scene: str = ""
    meta: dict = field(default_factory=dict)


LABELS = CLASSES  # the sighting contract's classes, in the model's output order


def class_index(categories: list[dict]) -> dict[int, int]:
    """COCO category id -> class 0..3, by category name (a labelling tool's export may number
    the classes in another order); ValueError for a name that is not one of ``LABELS``."""
    out: dict[int, int] = {}
    for c in categories:
        name = str(c["name"])
        if name not in LABELS:
            raise ValueError(f"COCO category {c['name']!r} is not one of {', '.join(LABELS)}; rename it")
        out[int(c["id"])] = LABELS.index(name)
    return out


def load_coco(root: Path) -> list[Record]:
    """Records of ``root/labels.json`` whose image file exists (images/ or root).

    Classes go by category name (``fixed``, ``dome``, ``ptz``, ``alpr``); a file without
    ``categories`` is read as ids 1..4 in that order.  ``ignore: 1`` (or ``iscrowd: 1``) boxes
    are masked out of the loss."""
    d = json.loads((root / "labels.json").read_text())
    cats = class_index(d["categories"]) if d.get("categories") else {k + 1: k for k in range(NCLS)}
    anns: dict[int, list[dict]] = {}
    for a in d.get("annotations", []):
        anns.setdefault(int(a["image_id"]), []).append(a)
    out = []
    for im in d["images"]:
        p = root / "images" / im["file_name"]
        if not p.exists():
            p = root / im["file_name"]
            if not p.exists():
                continue
        al = anns.get(int(im["id"]), [])
        b = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in al]
        )
        out.append(
            Record(
                p,
                b.reshape(-1, 4).astype(np.float32),
                np.array([cats[int(a["category_id"])] for a in al], np.int64),
                np.array([bool(a.get("ignore", 0)) or bool(a.get("iscrowd", 0)) for a in al], bool),
                str(im.get("scene", "")),
            )
        )
    return out


def is_heldout(rec: Record) -> bool:
    """Deterministic 1-in-20 split of the synthetic set by file name."""
    return zlib.crc32(rec.path.name.encode()) % 20 == 0


def synth_split(root: Path) -> tuple[list[Record], list[Record]]:
    try:
        recs = load_coco(root)
    except (OSError, ValueError, KeyError):
        return [], []
    return [r for r in recs if not is_heldout(r)], [r for r in recs if is_heldout(r)]


def _targets(boxes: np.ndarray, cls: np.ndarray, ign: np.ndarray, ox: float, oy: float, s: float, size: int) -> list:
    """Map image boxes through scale ``s`` and offset, clip to a ``size`` tile."""
    out = []
    for b, c, ig in zip(boxes, cls, ign, strict=True):
        full = [b[0] * s - ox, b[1] * s - oy, b[2] * s - ox, b[3] * s - oy]
        vis = [max(0.0, full[0]), max(0.0, full[1]), min(float(size), full[2]), min(float(size), full[3])]
        if vis[2] <= vis[0] or vis[3] <= vis[1]:
            continue
        out.append({"cls": int(c), "box": vis, "full": full, "ignore": bool(ig)})
    return out


def _window(w: int, h: int, boxes: np.ndarray, rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Top-left of a size x size window (may go past the image: padded), 70 % on an object."""
    if len(boxes) and rng.random() < 0.7:
        b = boxes[rng.integers(len(boxes))]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        x = int(cx - rng.uniform(0.1, 0.9) * size)
        y = int(cy - rng.uniform(0.1, 0.9) * size)
    else:
        x = int(rng.integers(0, max(1, w - size + 1)))
        y = int(rng.integers(0, max(1, h - size + 1)))
    x = min(max(x, 0), max(0, w - size))
    y = min(max(y, 0), max(0, h - size))
    return x, y


def _crop_pad(img: Image.Image, x: int, y: int, size: int) -> np.ndarray:
    tile = np.full((size, size, 3), PAD, np.uint8)
    a = np.asarray(img.crop((x, y, min(img.width, x + size), min(img.height, y + size))))
    tile[: a.shape[0], : a.shape[1]] = a
    return tile


class RealTiles:
    """Real photos -> tiles: native 320 windows, rescaled copies (cameras 6-60 px), letterbox."""

    def __init__(self, root: Path) -> None:
        self.recs = load_coco(root)
        self.imgs = [Image.open(r.path).convert("RGB") for r in self.recs]
        for im in self.imgs:
            im.load()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
        k = int(rng.integers(len(self.recs)))
        rec, img = self.recs[k], self.imgs[k]
        w, h = img.size
        good = rec.boxes[~rec.ignore] if len(rec.boxes) else rec.boxes
        mode = rng.choice(3, p=[0.3, 0.5, 0.2])
        if mode == 2:  # whole image letterboxed into one tile
            s = TILE / max(w, h)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            tile = np.full((TILE, TILE, 3), PAD, np.uint8)
            ox, oy = (TILE - nw) // 2, (TILE - nh) // 2
            tile[oy : oy + nh, ox : ox + nw] = np.asarray(img.resize((nw, nh), Image.Resampling.BILINEAR))
            return tile, _targets(rec.boxes, rec.cls, rec.ignore, -ox, -oy, s, TILE)
        if mode == 1:  # cameras shrunk to 6..60 px, as the bike sees them
            if len(good):
                med = float(np.median(np.maximum(good[:, 2] - good[:, 0], good[:, 3] - good[:, 1])))
                s = float(np.exp(rng.uniform(np.log(6.0), np.log(60.0)))) / max(med, 1.0)
            else:
                s = float(rng.uniform(0.25, 1.0))
            s = min(s, 1.5)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            img = img.resize((nw, nh), Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR)
        else:
            s = 1.0
        x, y = _window(img.width, img.height, good * s, rng, TILE)
        tile = _crop_pad(img, x, y, TILE)
        return tile, _targets(rec.boxes, rec.cls, rec.ignore, x, y, s, TILE)


def synth_sample(rec: Record) -> tuple[np.ndarray, list[dict]]:
    img = Image.open(rec.path).convert("RGB")
    a = np.asarray(img)
    if a.shape[:2] != (TILE, TILE):
        tile = np.full((TILE, TILE, 3), PAD, np.uint8)
        tile[: min(TILE, a.shape[0]), : min(TILE, a.shape[1])] = a[:TILE, :TILE]
        a = tile
    return a, _targets(rec.boxes, rec.cls, rec.ignore, 0, 0, 1.0, TILE)


def augment(tile: np.ndarray, tg: list[dict], rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict]]:
    """Scale jitter + random crop to ``size``, flip, colour jitter, blur/noise."""
    img = Image.fromarray(tile)
    s = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    n = max(size, round(TILE * s))
    s = n / TILE
    if n != TILE:
        img = img.resize((n, n), Image.Resampling.BILINEAR)
    x, y = int(rng.integers(0, n - size + 1)), int(rng.integers(0, n - size + 1))
    img = img.crop((x, y, x + size, y + size))
    out = []
    for t in tg:
        f = [t["full"][0] * s - x, t["full"][1] * s - y, t["full"][2] * s - x, t["full"][3] * s - y]
        v = [t["box"][0] * s - x, t["box"][1] * s - y, t["box"][2] * s - x, t["box"][3] * s - y]
        v = [max(0.0, v[0]), max(0.0, v[1]), min(float(size), v[2]), min(float(size), v[3])]
        if v[2] > v[0] and v[3] > v[1]:
            out.append({**t, "box": v, "full": f})
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for t in out:
            b, f = t["box"], t["full"]
            t["box"] = [size - b[2], b[1], size - b[0], b[3]]
            t["full"] = [size - f[2], f[1], size - f[0], f[3]]
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    a = np.asarray(img)
    if rng.random() < 0.3:
        a = np.clip(a + rng.normal(0, rng.uniform(2, 7), a.shape), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a), out


def encode(tg: list[dict], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap [G,G,4], loss mask [G,G,1], ltrb [G,G,4], box weight [G,G,1] for a size x size tile.

    Ignored boxes, slivers cut by the edge (< 40 % visible) and boxes under 3 px are masked out
    of the heatmap loss; the rest are Gaussian peaks with ltrb targets near the centre.
    """
    g = size // STRIDE
    hm = np.zeros((g, g, NCLS), np.float32)
    mask = np.ones((g, g, 1), np.float32)
    ltrb = np.zeros((g, g, 4), np.float32)
    bw = np.zeros((g, g, 1), np.float32)
    c = (np.arange(g, dtype=np.float32) + 0.5) * STRIDE
    ar = np.arange(g)
    for t in tg:
        x1, y1, x2, y2 = t["box"]
        f = t["full"]
        vis_frac = (x2 - x1) * (y2 - y1) / max(1e-6, (f[2] - f[0]) * (f[3] - f[1]))
        if t["ignore"] or vis_frac < 0.4 or (x2 - x1) < 3 or (y2 - y1) < 3:
            i1, i2 = max(0, int(y1 // STRIDE) - 1), int(np.ceil(y2 / STRIDE)) + 1
            j1, j2 = max(0, int(x1 // STRIDE) - 1), int(np.ceil(x2 / STRIDE)) + 1
            mask[i1:i2, j1:j2] = 0.0
            continue
        k = t["cls"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ci, cj = min(g - 1, int(cy // STRIDE)), min(g - 1, int(cx // STRIDE))
        sx = max(0.6, (x2 - x1) / STRIDE / 6.0)
        sy = max(0.6, (y2 - y1) / STRIDE / 6.0)
        gx = np.exp(-((ar - cj) ** 2) / (2 * sx * sx))
        gy = np.exp(-((ar - ci) ** 2) / (2 * sy * sy))
        gg = gy[:, None] * gx[None, :]
        hm[:, :, k] = np.maximum(hm[:, :, k], gg)
        hm[ci, cj, k] = 1.0
        inside = (c[None, :] > x1) & (c[None, :] < x2) & (c[:, None] > y1) & (c[:, None] < y2)
        sel = ((gg > 0.3) & inside) | ((ar[:, None] == ci) & (ar[None, :] == cj))
        ii, jj = np.nonzero(sel)
        ltrb[ii, jj, 0] = c[jj] - x1
        ltrb[ii, jj, 1] = c[ii] - y1
        ltrb[ii, jj, 2] = x2 - c[jj]
        ltrb[ii, jj, 3] = y2 - c[ii]
        bw[ii, jj, 0] = 1.0
    return hm, mask, np.maximum(ltrb, 0.0), bw


class Batches:
    """Background thread making augmented, encoded batches; re-reads the synthetic folder
    each time it has gone through its list (so a growing set is picked up)."""

    def __init__(
        self, synth: Path | None, real: Path | None, size: int, bs: int, real_frac: float, seed: int = 0
    ) -> None:
        self.synth, self.size, self.bs, self.real_frac = synth, size, bs, real_frac
        self.real = RealTiles(real) if real else None
        self.rng = np.random.default_rng(seed)
        self.pool: list[Record] = []
        self.order: list[int] = []
        self.n_synth = 0
        self.reloads = 0
        self.t_reload = time.time()
        self.q: queue.Queue = queue.Queue(maxsize=6)
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _reload(self) -> None:
        if self.synth is not None and (self.synth / "labels.json").exists():
            train, _ = synth_split(self.synth)
            if train:
                self.pool = train
        self.n_synth = len(self.pool)
        self.order = list(self.rng.permutation(len(self.pool)))
        self.reloads += 1

    def _one(self) -> tuple[np.ndarray, list[dict]]:
        if not self.pool and time.time() - self.t_reload > 60:  # synthetic set not there yet
            self.t_reload = time.time()
            self._reload()
        rf = self.real_frac if self.pool else 1.0
        if self.real is not None and self.rng.random() < rf:
            return self.real.sample(self.rng)
        if not self.order:
            self._reload()
        try:
            return synth_sample(self.pool[self.order.pop()])
        except (OSError, IndexError):
            assert self.real is not None
            return self.real.sample(self.rng)

    def _run(self) -> None:
        self._reload()
        while not self.stop:
            xs, hs, ms, ls, ws = [], [], [], [], []
            for _ in range(self.bs):
                tile, tg = self._one()
                tile, tg = augment(tile, tg, self.rng, self.size)
                h, m, lt, w = encode(tg, self.size)
                xs.append(tile)
                hs.append(h)
                ms.append(m)
                ls.append(lt)
                ws.append(w)
            self.q.put(tuple(np.stack(a) for a in (xs, hs, ms, ls, ws)))

    def get(self) -> tuple[np.ndarray, ...]:
        return self.q.get()
