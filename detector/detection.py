"""`Detection`: one surveillance camera found in one frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]
"""A box as ``(x1, y1, x2, y2)``: left, top, right, bottom."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A camera found in a frame.

    ``box_px`` is in frame pixels (x to the right, y down, origin at the top-left corner of
    the top-left pixel); ``box_norm`` is the same box divided by the frame's width and
    height, so it is independent of the capture resolution.
    """

    label: str
    label_id: int
    score: float
    box_px: Box
    box_norm: Box

    @classmethod
    def from_pixels(cls, label: str, label_id: int, score: float, box_px: Box, frame_w: int, frame_h: int) -> Detection:
        x1, y1, x2, y2 = box_px
        return cls(
            label=label,
            label_id=label_id,
            score=score,
            box_px=box_px,
            box_norm=(x1 / frame_w, y1 / frame_h, x2 / frame_w, y2 / frame_h),
        )

    @property
    def width_px(self) -> float:
        return self.box_px[2] - self.box_px[0]

    @property
    def height_px(self) -> float:
        return self.box_px[3] - self.box_px[1]

    @property
    def center_px(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box_px
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: label, score and the box in pixels, rounded to 0.1 px."""
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box_px],
        }
