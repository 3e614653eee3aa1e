"""`Detector`: one frame in, the surveillance cameras in it out.

For each frame: cut the tiles of the tile plan (built once per frame size), write each
straight into the model's input, run the model, decode, map boxes back to the frame, drop
boxes a neighbouring tile sees whole, and merge what overlapping tiles and levels found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from detector.decoders.base import TileDetections
from detector.detection import Detection
from detector.errors import ConfigError, DetectorError
from detector.merge import merge_boxes
from detector.model import Model
from detector.preprocess import Quantiser
from detector.resize import Resizer
from detector.tiling import TilePlan, TilingConfig, build_plan


@dataclass
class FrameTimings:
    """Where the time of the last frame went, in seconds."""

    pre_s: float = 0.0
    infer_s: float = 0.0
    post_s: float = 0.0
    tiles: int = 0

    @property
    def total_s(self) -> float:
        return self.pre_s + self.infer_s + self.post_s


@dataclass
class _PlanState:
    plan: TilePlan
    resizers: dict[int, Resizer] = field(default_factory=dict)


class Detector:
    """Finds cameras in frames with one model and one tiling.

    >>> det = Detector(Model.load(path, num_threads=4), TilingConfig())  # doctest: +SKIP
    >>> det.detect(frame)  # frame: (H, W, 3) uint8 RGB  # doctest: +SKIP
    [Detection(label='dome', label_id=1, score=0.87, box_px=(...), box_norm=(...))]
    """

    def __init__(
        self,
        model: Model,
        tiling: TilingConfig | None = None,
        *,
        score_threshold: float | None = None,
        merge_iou: float = 0.5,
        merge_ios: float = 0.7,
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.tiling = tiling or TilingConfig()
        self.tiling.validate(self.spec.input.width, self.spec.input.height)
        threshold = self.spec.output.score_threshold if score_threshold is None else score_threshold
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"score_threshold: must be within (0, 1], got {threshold}")
        self.score_threshold = threshold
        self.merge_iou = merge_iou
        self.merge_ios = merge_ios
        self.quantiser = Quantiser(self.spec.input, self.tiling.pad_value)
        self.last_timings = FrameTimings()
        self._plans: dict[tuple[int, int], _PlanState] = {}

    def plan_for(self, frame_w: int, frame_h: int) -> TilePlan:
        return self._state(frame_w, frame_h).plan

    def _state(self, frame_w: int, frame_h: int) -> _PlanState:
        key = (frame_w, frame_h)
        state = self._plans.get(key)
        if state is None:
            plan = build_plan(frame_w, frame_h, self.spec.input.width, self.spec.input.height, self.tiling)
            state = _PlanState(plan)
            for i, level in enumerate(plan.levels):
                if not level.native:
                    state.resizers[i] = Resizer(plan.roi_h, plan.roi_w, level.height, level.width)
            self._plans[key] = state
        return state

    def detect(self, frame: np.ndarray, *, bgr: bool = False) -> list[Detection]:
        """Cameras in ``frame``, an ``(H, W, 3)`` uint8 array (RGB; BGR with ``bgr=True``)."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            shape = getattr(frame, "shape", None)
            dtype = getattr(frame, "dtype", type(frame).__name__)
            raise DetectorError(f"a frame must be an (H, W, 3) uint8 array, got shape {shape} dtype {dtype}")
        frame_h, frame_w = frame.shape[:2]
        state = self._state(frame_w, frame_h)
        plan = state.plan
        timings = FrameTimings()
        clock = time.perf_counter

        t0 = clock()
        x1, y1, x2, y2 = plan.roi_px
        roi = frame[y1:y2, x1:x2]
        images = [state.resizers[i](roi) if i in state.resizers else roi for i in range(len(plan.levels))]
        timings.pre_s += clock() - t0

        found_boxes: list[np.ndarray] = []
        found_scores: list[np.ndarray] = []
        found_ids: list[np.ndarray] = []
        found_cut: list[np.ndarray] = []
        for tile in plan.tiles:
            t0 = clock()
            src = images[tile.level][tile.y : tile.y + tile.h, tile.x : tile.x + tile.w]
            self.model.fill_input(partial(self.quantiser.write, src, src_bgr=bgr))
            t1 = clock()
            outputs = self.model.run()
            t2 = clock()
            dets: TileDetections = self.model.decoder.decode(outputs, self.score_threshold)
            if len(dets):
                touches, drop = plan.shared_edge_contact(tile, dets.boxes)
                keep = ~drop
                if keep.any():
                    found_boxes.append(plan.tile_to_frame(tile, dets.boxes[keep]))
                    found_scores.append(dets.scores[keep])
                    found_ids.append(dets.class_ids[keep])
                    found_cut.append(touches[keep])
            t3 = clock()
            timings.pre_s += t1 - t0
            timings.infer_s += t2 - t1
            timings.post_s += t3 - t2
            timings.tiles += 1

        t0 = clock()
        result: list[Detection] = []
        if found_boxes:
            boxes, scores, ids = merge_boxes(
                np.concatenate(found_boxes),
                np.concatenate(found_scores),
                np.concatenate(found_ids),
                np.concatenate(found_cut),
                self.merge_iou,
                self.merge_ios,
            )
            np.clip(boxes[:, 0::2], 0, frame_w, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, frame_h, out=boxes[:, 1::2])
            labels = self.spec.label_names
            for box, score, cid in zip(boxes.tolist(), scores.tolist(), ids.tolist(), strict=True):
                result.append(
                    Detection.from_pixels(labels[cid], int(cid), float(score), tuple(box), frame_w, frame_h)  # type: ignore[arg-type]
                )
        timings.post_s += clock() - t0
        self.last_timings = timings
        return result
