"""The tile plan: where in a frame the model looks, at which scales, built once per frame size.

Street cameras are small (often 5-20 px in a 1920x1080 frame), so the model looks at tiles
cut at full resolution from a region of interest (the *fine* level, scale 1), not at the
whole frame shrunk to its input. A *coarse* level, the whole region shrunk to fit one model
input, finds the cameras that are close and too big for one fine tile. Tiles of a level
overlap by at least ``overlap_px`` so an object smaller than the overlap lies whole in at
least one tile; a box cut by a tile edge that a neighbour covers is left to the neighbour.

Coordinates: *frame* pixels; *level* pixels (the region of interest scaled by the level's
scale); *tile* coordinates normalised to the model input (0..1), as decoders return them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.errors import ConfigError

Box = tuple[float, float, float, float]

EDGE_MARGIN_PX = 1.5
"""A box within this many level pixels of a tile edge counts as cut by that edge."""


@dataclass(frozen=True)
class TilingConfig:
    """How to tile a frame. ``roi`` is ``x1, y1, x2, y2`` as fractions of the frame.

    The default region is the band above the horizon of a forward-looking bike camera
    (the top 55 % of the frame), where street cameras hang; :meth:`full_frame` covers all.
    """

    roi: Box = (0.0, 0.0, 1.0, 0.55)
    scales: tuple[float, ...] = (1.0,)
    overlap_px: int = 40
    coarse: bool = True
    pad_value: int = 114

    @classmethod
    def full_frame(cls, **kwargs: object) -> TilingConfig:
        return cls(roi=(0.0, 0.0, 1.0, 1.0), **kwargs)  # type: ignore[arg-type]

    def validate(self, input_w: int, input_h: int) -> None:
        x1, y1, x2, y2 = self.roi
        if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
            raise ConfigError(f"tiling.roi: expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, got {list(self.roi)}")
        if not self.scales or any(not (0.05 <= s <= 4.0) for s in self.scales):
            raise ConfigError(f"tiling.scales: each scale must be within [0.05, 4], got {list(self.scales)}")
        if not 0 <= self.overlap_px < min(input_w, input_h) // 2:
            raise ConfigError(
                f"tiling.overlap_px: must be >= 0 and below half the model input "
                f"({min(input_w, input_h) // 2}), got {self.overlap_px}"
            )
        if not 0 <= self.pad_value <= 255:
            raise ConfigError(f"tiling.pad_value: must be within [0, 255], got {self.pad_value}")


@dataclass(frozen=True)
class Level:
    """The region of interest at one scale: an image of ``width x height`` level pixels."""

    scale_x: float
    scale_y: float
    width: int
    height: int
    coarse: bool

    @property
    def native(self) -> bool:
        """True when the level is the frame's own pixels (no resize needed)."""
        return self.scale_x == 1.0 and self.scale_y == 1.0


@dataclass(frozen=True)
class Tile:
    """One model input's worth of a level: content ``w x h`` at ``(x, y)``, padded to the input.

    ``cut`` gives, for the left, top, right and bottom edge, how many level pixels the
    neighbouring tile overlaps across that edge (0 where the edge is the level's border).
    """

    level: int
    x: int
    y: int
    w: int
    h: int
    cut: tuple[int, int, int, int]


def axis_positions(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, size)`` of tiles covering ``length`` with at least ``overlap`` between them."""
    if length <= tile:
        return [(0, length)]
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    return [(round(k * (length - tile) / (n - 1)), tile) for k in range(n)]


def _cuts(spans: list[tuple[int, int]], k: int) -> tuple[int, int]:
    """Overlap across the low and high edge of span ``k`` with its neighbours."""
    start, size = spans[k]
    low = spans[k - 1][0] + spans[k - 1][1] - start if k > 0 else 0
    high = start + size - spans[k + 1][0] if k + 1 < len(spans) else 0
    return low, high


@dataclass(frozen=True)
class TilePlan:
    """All tiles of all levels for one frame size; map boxes between tiles and the frame."""

    frame_w: int
    frame_h: int
    input_w: int
    input_h: int
    roi_px: tuple[int, int, int, int]
    levels: tuple[Level, ...]
    tiles: tuple[Tile, ...]

    @property
    def roi_w(self) -> int:
        return self.roi_px[2] - self.roi_px[0]

    @property
    def roi_h(self) -> int:
        return self.roi_px[3] - self.roi_px[1]

    def tile_to_frame(self, tile: Tile, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) normalised to the model input of ``tile`` -> frame pixels."""
        level = self.levels[tile.level]
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (tile.x + boxes[:, 0::2] * self.input_w) / level.scale_x + self.roi_px[0]
        out[:, 1::2] = (tile.y + boxes[:, 1::2] * self.input_h) / level.scale_y + self.roi_px[1]
        return out

    def frame_to_tile(self, tile: Tile, box: Box) -> Box:
        """A frame box -> normalised model-input coordinates of ``tile`` (inverse of the above)."""
        level = self.levels[tile.level]
        x1, y1, x2, y2 = box

        def fx(v: float) -> float:
            return ((v - self.roi_px[0]) * level.scale_x - tile.x) / self.input_w

        def fy(v: float) -> float:
            return ((v - self.roi_px[1]) * level.scale_y - tile.y) / self.input_h

        return (fx(x1), fy(y1), fx(x2), fy(y2))

    def shared_edge_contact(self, tile: Tile, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(touches, droppable)``: boxes touching an edge shared with a neighbour tile
        (the object may go on beyond it), and those of them smaller than the overlap there."""
        bx1 = boxes[:, 0] * self.input_w
        by1 = boxes[:, 1] * self.input_h
        bx2 = boxes[:, 2] * self.input_w
        by2 = boxes[:, 3] * self.input_h
        w, h = bx2 - bx1, by2 - by1
        left, top, right, bottom = tile.cut
        m = EDGE_MARGIN_PX
        touches = np.zeros(boxes.shape[0], dtype=bool)
        drop = np.zeros(boxes.shape[0], dtype=bool)
        for overlap, at_edge, extent in (
            (left, bx1 <= m, w),
            (top, by1 <= m, h),
            (right, bx2 >= tile.w - m, w),
            (bottom, by2 >= tile.h - m, h),
        ):
            if overlap:
                touches |= at_edge
                drop |= at_edge & (extent < overlap)
        return touches, drop


def build_plan(frame_w: int, frame_h: int, input_w: int, input_h: int, config: TilingConfig) -> TilePlan:
    """The tile plan of ``config`` for frames of ``frame_w x frame_h`` and a model input."""
    config.validate(input_w, input_h)
    rx1, ry1, rx2, ry2 = config.roi
    roi = (round(rx1 * frame_w), round(ry1 * frame_h), round(rx2 * frame_w), round(ry2 * frame_h))
    roi_w, roi_h = max(1, roi[2] - roi[0]), max(1, roi[3] - roi[1])
    roi = (roi[0], roi[1], roi[0] + roi_w, roi[1] + roi_h)

    scales = sorted(set(config.scales), reverse=True)
    level_specs: list[tuple[float, bool]] = [(s, False) for s in scales]
    fit = min(input_w / roi_w, input_h / roi_h)
    if config.coarse and fit < 0.75 * min(scales):
        level_specs.append((fit, True))

    levels: list[Level] = []
    tiles: list[Tile] = []
    for s, coarse in level_specs:
        lw = max(1, min(round(roi_w * s), input_w) if coarse else round(roi_w * s))
        lh = max(1, min(round(roi_h * s), input_h) if coarse else round(roi_h * s))
        level = Level(lw / roi_w, lh / roi_h, lw, lh, coarse)
        index = len(levels)
        levels.append(level)
        xs = axis_positions(lw, input_w, config.overlap_px)
        ys = axis_positions(lh, input_h, config.overlap_px)
        for j, (ty, th) in enumerate(ys):
            top, bottom = _cuts(ys, j)
            for i, (tx, tw) in enumerate(xs):
                left, right = _cuts(xs, i)
                tiles.append(Tile(index, tx, ty, tw, th, (left, top, right, bottom)))
    return TilePlan(frame_w, frame_h, input_w, input_h, roi, tuple(levels), tuple(tiles))
