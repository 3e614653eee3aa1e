"""Box arithmetic and non-maximum suppression in numpy (boxes are ``x1, y1, x2, y2``)."""

from __future__ import annotations

import numpy as np


def areas(boxes: np.ndarray) -> np.ndarray:
    area: np.ndarray = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return area


def intersections(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection areas of one box with many."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter: np.ndarray = np.clip(w, 0, None) * np.clip(h, 0, None)
    return inter


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_out: int = 300) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    area = areas(boxes)
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        inter = intersections(boxes[i], boxes[rest])
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_out: int = 300
) -> np.ndarray:
    """NMS within each class only (boxes of different classes never suppress each other)."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    # Shift each class to its own region of the plane so one NMS pass does all classes.
    span = float(np.max(boxes[:, 2:]) - min(float(np.min(boxes[:, :2])), 0.0)) + 1.0
    shifted = boxes + (class_ids.astype(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_out)
