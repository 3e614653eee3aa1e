"""Merging detections from overlapping tiles and levels into one box per object."""

from __future__ import annotations

import numpy as np

from detector.decoders.nms import areas, intersections


def merge_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    cut: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    ios_threshold: float = 0.7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy merge across tiles, whatever the class (one physical object, one box).

    The best-scoring box suppresses boxes that overlap it by IoU > ``iou_threshold`` (the
    same object seen by two tiles or two levels), and boxes mostly inside it or mostly
    covering it (intersection over the smaller area > ``ios_threshold``). A box of the
    second kind (by containment, not by IoU) of which one of the pair touches an edge its
    tile shares with a neighbour (``cut``) is a piece of an object too big for one tile: the
    kept box grows to the union of both, keeping the better score and its class; IoU
    duplicates are only suppressed. A box that is not cut never grows, so a weak, loose box
    around a camera cannot stretch the camera's own box.
    """
    n = boxes.shape[0]
    if n == 0:
        return boxes, scores, class_ids
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order].astype(np.float32, copy=True)
    scores, class_ids = scores[order], class_ids[order]
    cut = np.zeros(n, dtype=bool) if cut is None else cut[order].copy()
    alive = np.ones(n, dtype=bool)
    kept: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        kept.append(i)
        alive[i] = False
        while True:
            rest = np.nonzero(alive)[0]
            if rest.size == 0:
                break
            inter = intersections(boxes[i], boxes[rest])
            a_i, a_r = areas(boxes[i : i + 1])[0], areas(boxes[rest])
            union = a_i + a_r - inter
            iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
            ios = np.where(np.minimum(a_i, a_r) > 0, inter / np.maximum(np.minimum(a_i, a_r), 1e-9), 0.0)
            dup = rest[iou > iou_threshold]
            piece = rest[(iou <= iou_threshold) & (ios > ios_threshold)]
            alive[dup] = False
            alive[piece] = False
            pieces = piece if cut[i] else piece[cut[piece]]
            if pieces.size == 0:
                break
            cut[i] = cut[i] or bool(cut[pieces].any())
            group = np.vstack([boxes[i : i + 1], boxes[pieces]])
            boxes[i] = [group[:, 0].min(), group[:, 1].min(), group[:, 2].max(), group[:, 3].max()]
            # The box grew: look again for boxes it now duplicates or contains.
    idx = np.asarray(kept, dtype=np.int64)
    return boxes[idx], scores[idx], class_ids[idx]
