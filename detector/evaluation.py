"""Measuring a model on a COCO-labelled folder, through the same detector the bike runs.

Average precision at IoU 0.5 (all-point interpolation of the precision envelope, as
PASCAL VOC 2010+), for any camera (class-agnostic) and per class, plus precision and recall
at the model's default threshold. Boxes flagged ``ignore: 1`` (or ``iscrowd: 1``) count
neither way: a detection on one is neither a hit nor a false alarm, and it need not be
found. A detection of the wrong class on a real camera is a hit for "any camera" and a
false alarm for its own class.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.decoders.nms import iou_matrix
from detector.detection import Detection
from detector.errors import DetectorError

IOU_THRESHOLD = 0.5
ANY = "any camera"


class DatasetError(DetectorError):
    """A COCO labels file is missing, malformed or refers to missing images."""


@dataclass(frozen=True)
class GroundTruth:
    """One labelled image: boxes ``x1, y1, x2, y2`` in pixels, labels, ignore flags."""

    file: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: tuple[str, ...]
    ignore: np.ndarray
    scene: str = ""

    def scaled(self, factor: float) -> GroundTruth:
        return GroundTruth(
            self.file,
            max(1, round(self.width * factor)),
            max(1, round(self.height * factor)),
            self.boxes * factor,
            self.labels,
            self.ignore,
            self.scene,
        )


def load_coco(folder: Path) -> tuple[list[GroundTruth], list[str]]:
    """``folder/labels.json`` (COCO) with images in ``folder/images/`` (or ``folder/``)."""
    path = folder / "labels.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no COCO labels file (expected labels.json in {folder})") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read COCO labels: {err}") from None
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        images: list[GroundTruth] = []
        for img in data["images"]:
            anns = by_image.get(int(img["id"]), [])
            boxes = np.array(
                [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                np.float32,
            ).reshape(-1, 4)
            images.append(
                GroundTruth(
                    file=image_dir / str(img["file_name"]),
                    width=int(img["width"]),
                    height=int(img["height"]),
                    boxes=boxes,
                    labels=tuple(categories[int(a["category_id"])] for a in anns),
                    ignore=np.array([bool(a.get("ignore", 0) or a.get("iscrowd", 0)) for a in anns], bool),
                    scene=str(img.get("scene", "")),
                )
            )
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a COCO detection file ({type(err).__name__}: {err})") from None
    return images, [categories[k] for k in sorted(categories)]


@dataclass
class ClassCurve:
    """Scored detections of one class (or of any camera) over a whole dataset."""

    scores: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)
    positives: int = 0

    def pr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores descending, precision, recall) after each detection."""
        order = np.argsort(-np.asarray(self.scores, np.float64), kind="stable")
        scores = np.asarray(self.scores, np.float64)[order]
        hits = np.asarray(self.hits, bool)[order]
        tp = np.cumsum(hits)
        fp = np.cumsum(~hits)
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / max(self.positives, 1)
        return scores, precision, recall

    def average_precision(self) -> float:
        """Area under the precision envelope; NaN when the class has no positives."""
        if self.positives == 0:
            return float("nan")
        if not self.scores:
            return 0.0
        _, precision, recall = self.pr()
        r = np.concatenate([[0.0], recall, [recall[-1]]])
        p = np.concatenate([[1.0], precision, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        return float(np.sum((r[1:] - r[:-1]) * p[1:]))

    def at(self, threshold: float) -> tuple[int, int, int]:
        """(true positives, false positives, missed) counting detections scoring >= threshold."""
        s = np.asarray(self.scores, np.float64)
        h = np.asarray(self.hits, bool)
        keep = s >= threshold
        tp = int(np.sum(h & keep))
        return tp, int(np.sum(~h & keep)), self.positives - tp


def match_image(
    dets: Sequence[Detection], truth: GroundTruth, curves: dict[str, ClassCurve], labels: Iterable[str]
) -> None:
    """Add one image's detections to the curves (greedy by score, IoU >= 0.5)."""
    real = ~truth.ignore
    dets = sorted(dets, key=lambda d: -d.score)
    det_boxes = np.array([d.box_px for d in dets], np.float32).reshape(-1, 4)
    iou = iou_matrix(det_boxes, truth.boxes) if dets and len(truth.boxes) else np.zeros((len(dets), 0))
    # a detection overlapping an ignore box this much, or mostly inside one, is not judged
    on_ignore = np.zeros(len(dets), bool)
    for j in np.nonzero(truth.ignore)[0]:
        ix = np.clip(
            np.minimum(det_boxes[:, 2], truth.boxes[j, 2]) - np.maximum(det_boxes[:, 0], truth.boxes[j, 0]), 0, None
        )
        iy = np.clip(
            np.minimum(det_boxes[:, 3], truth.boxes[j, 3]) - np.maximum(det_boxes[:, 1], truth.boxes[j, 1]), 0, None
        )
        area = np.maximum((det_boxes[:, 2] - det_boxes[:, 0]) * (det_boxes[:, 3] - det_boxes[:, 1]), 1e-9)
        on_ignore |= (iou[:, j] >= IOU_THRESHOLD) | (ix * iy / area >= 0.5)

    for name in [ANY, *labels]:
        curve = curves.setdefault(name, ClassCurve())
        gt_mask = real if name == ANY else real & np.array([lab == name for lab in truth.labels], bool)
        curve.positives += int(gt_mask.sum())
        taken = np.zeros(len(truth.boxes), bool)
        for i, det in enumerate(dets):
            if name not in (ANY, det.label):
                continue
            candidates = np.where(gt_mask & ~taken, iou[i], -1.0) if iou.shape[1] else np.zeros(0)
            if candidates.size and candidates.max() >= IOU_THRESHOLD:
                taken[int(candidates.argmax())] = True
                curve.scores.append(det.score)
                curve.hits.append(True)
            elif not on_ignore[i]:
                curve.scores.append(det.score)
                curve.hits.append(False)


@dataclass(frozen=True)
class Report:
    """Metrics of one evaluation run."""

    images: int
    threshold: float
    ap50: dict[str, float]
    at_threshold: dict[str, tuple[int, int, int]]
    curves: dict[str, ClassCurve]

    def table(self) -> str:
        lines = [
            f"{'class':<12} {'AP50':>6} {'positives':>9} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>6}"
        ]
        for name, ap in self.ap50.items():
            tp, fp, fn = self.at_threshold[name]
            prec = tp / (tp + fp) if tp + fp else float("nan")
            rec = tp / (tp + fn) if tp + fn else float("nan")
            lines.append(f"{name:<12} {ap:6.3f} {tp + fn:9d} {tp:4d} {fp:4d} {fn:4d} {prec:9.3f} {rec:6.3f}")
        lines.append(f"({self.images} images; precision and recall at the threshold {self.threshold:.2f})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.images, "threshold": self.threshold, "classes": {}}
        for name, ap in self.ap50.items():
            tp, fp, fn = self.at_threshold[name]
            out["classes"][name] = {
                "ap50": None if np.isnan(ap) else round(ap, 4),
                "positives": tp + fn,
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        return out


def evaluate(
    images: Sequence[GroundTruth],
    labels: Sequence[str],
    detect: Callable[[GroundTruth], tuple[list[Detection], float]],
    threshold: float,
) -> Report:
    """Run ``detect`` (returns detections and the scale it applied) over every image."""
    if not images:
        raise DatasetError("no images to evaluate")
    curves: dict[str, ClassCurve] = {}
    for truth in images:
        dets, factor = detect(truth)
        match_image(dets, truth.scaled(factor) if factor != 1.0 else truth, curves, labels)
    ap = {name: curves[name].average_precision() for name in [ANY, *labels]}
    at = {name: curves[name].at(threshold) for name in [ANY, *labels]}
    return Report(len(images), threshold, ap, at, curves)
