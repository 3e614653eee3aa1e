"""Quick self-check: precision/recall at IoU 0.5 on held-out synthetic tiles (never realcams/val).

Decoding mirrors the detector's centernet family: 3x3 peaks above a threshold, ltrb from the
cell centre, class-agnostic-free NMS per tile (IoU 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.train.data import STRIDE, Record, synth_sample


def decode(hm: np.ndarray, box: np.ndarray, thr: float) -> list[tuple[int, float, np.ndarray]]:
    """hm [G,G,C] probabilities, box [G,G,4] ltrb pixels -> (class, score, xyxy) after NMS."""
    g = hm.shape[0]
    pad = np.pad(hm, ((1, 1), (1, 1), (0, 0)), constant_values=-1)
    mx = np.max(np.stack([pad[a : a + g, b : b + hm.shape[1]] for a in range(3) for b in range(3)]), axis=0)
    ii, jj, kk = np.nonzero((hm >= mx) & (hm >= thr))
    res = []
    for i, j, k in zip(ii, jj, kk, strict=True):
        cx, cy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
        le, t, r, b = box[i, j]
        res.append((int(k), float(hm[i, j, k]), np.array([cx - le, cy - t, cx + r, cy + b])))
    res.sort(key=lambda r: -r[1])
    keep: list[tuple[int, float, np.ndarray]] = []
    for r in res:
        if all(iou(r[2], q[2]) < 0.5 for q in keep):
            keep.append(r)
    return keep


def iou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / u) if u > 0 else 0.0


def collect(recs: list[Record], predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], thr: float) -> list:
    """Per tile: (detections at ``thr``, truth dicts)."""
    out = []
    for rec in recs:
        tile, tg = synth_sample(rec)
        hm, box = predict(tile)
        out.append((decode(hm, box, thr), tg))
    return out


def score(rows: list, thr: float, class_aware: bool = True) -> dict[str, float]:
    """Precision/recall/F1 at IoU 0.5 for detections >= thr. Ignored or edge-cut truths count
    neither way (a detection matching them is not a false alarm)."""
    n_gt = n_hit = n_fp = 0
    for dets, tg in rows:
        gts = [t for t in tg if not t["ignore"] and t["box"] == t["full"]]
        other = [t for t in tg if t not in gts]
        used: set[int] = set()
        n_gt += len(gts)
        for c, s, b in dets:
            if s < thr:
                continue
            best, bi = 0.0, -1
            for gi, t in enumerate(gts):
                if gi in used or (class_aware and t["cls"] != c):
                    continue
                v = iou(b, t["box"])
                if v > best:
                    best, bi = v, gi
            if best >= 0.5:
                used.add(bi)
                n_hit += 1
            elif not any(iou(b, t["box"]) >= 0.3 for t in other):
                n_fp += 1
    p = n_hit / max(1, n_hit + n_fp)
    r = n_hit / max(1, n_gt)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-9, p + r), "n_gt": n_gt, "n_tiles": len(rows)}


def best_threshold(rows: list, grid: Sequence[float] = tuple(np.arange(0.15, 0.76, 0.05))) -> tuple[float, dict]:
    best = (0.3, score(rows, 0.3))
    for t in grid:
        s = score(rows, float(t))
        if s["f1"] > best[1]["f1"]:
            best = (round(float(t), 2), s)
    return best
