"""NMS, the cross-tile merge, the pixel table and the coarse-level resize."""

from __future__ import annotations

import numpy as np
import pytest

from detector.decoders.nms import batched_nms, iou_matrix, nms
from detector.merge import merge_boxes
from detector.preprocess import Quantiser, pixel_table
from detector.resize import Resizer
from detector.sidecar import InputSpec


def b(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32)


def test_iou_of_known_boxes() -> None:
    m = iou_matrix(b((0, 0, 10, 10)), b((0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)))
    assert m[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def test_nms_keeps_the_best_of_overlapping_boxes_and_separate_ones() -> None:
    boxes = b((0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60))
    keep = nms(boxes, np.array([0.6, 0.9, 0.5], np.float32), 0.5)
    assert keep.tolist() == [1, 2]


def test_batched_nms_never_suppresses_across_classes() -> None:
    boxes = b((0, 0, 10, 10), (1, 1, 11, 11))
    scores = np.array([0.9, 0.8], np.float32)
    assert batched_nms(boxes, scores, np.array([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, np.array([1, 1]), 0.5).tolist() == [0]


def test_merge_drops_duplicates_from_overlapping_tiles() -> None:
    boxes, scores, ids = merge_boxes(
        b((100, 100, 120, 116), (101, 100, 121, 116)), np.array([0.7, 0.9], np.float32), np.array([1, 0])
    )
    assert boxes.tolist() == [[101, 100, 121, 116]] and scores.tolist() == pytest.approx([0.9]) and ids.tolist() == [0]


def test_merge_joins_a_piece_cut_by_a_tile_edge_into_the_whole_box() -> None:
    # a big object seen whole by the coarse level and as a cut piece by a fine tile
    whole, piece = (100, 100, 300, 260), (100, 100, 180, 260)
    boxes, scores, _ = merge_boxes(
        b(piece, whole), np.array([0.9, 0.6], np.float32), np.array([0, 0]), cut=np.array([True, False])
    )
    assert boxes.tolist() == [list(whole)]
    assert scores.tolist() == pytest.approx([0.9])


def test_a_weak_loose_box_around_a_camera_does_not_stretch_its_box() -> None:
    camera, loose = (100, 100, 120, 112), (60, 80, 260, 240)
    boxes, scores, _ = merge_boxes(
        b(camera, loose), np.array([0.9, 0.1], np.float32), np.array([0, 1]), cut=np.array([False, False])
    )
    assert boxes.tolist() == [list(camera)] and scores.tolist() == pytest.approx([0.9])


def test_merge_keeps_distinct_neighbours() -> None:
    boxes, _, _ = merge_boxes(
        b((0, 0, 10, 10), (12, 0, 22, 10), (0, 12, 10, 22)), np.array([0.5, 0.6, 0.7], np.float32), np.zeros(3, int)
    )
    assert len(boxes) == 3


def spec(dtype: str, scale: float, zp: int, mean: float = 0.0, std: float = 255.0, order: str = "RGB") -> InputSpec:
    return InputSpec(8, 8, 3, order, dtype, scale, zp, (mean,) * 3, (std,) * 3)


def test_pixel_tables_for_common_quantisations() -> None:
    p = np.arange(256)
    assert (pixel_table(spec("int8", 1 / 255, -128))[0] == p - 128).all()
    assert (pixel_table(spec("uint8", 1 / 255, 0))[0] == p).all()
    # MobileNet style: (p - 127.5) / 127.5 stored with scale 1/128, zero point 0
    t = pixel_table(spec("int8", 1 / 128, 0, 127.5, 127.5))[0]
    assert t[0] == -128 and t[255] == 127
    f = pixel_table(spec("float32", 1.0, 0, 127.5, 127.5))[0]
    assert f[0] == pytest.approx(-1.0) and f[255] == pytest.approx(1.0)


def test_quantiser_writes_in_place_flips_channels_and_pads() -> None:
    src = np.zeros((4, 6, 3), np.uint8)
    src[..., 0] = 200  # red
    dst = np.full((8, 8, 3), 7, np.int8)
    Quantiser(spec("int8", 1 / 255, -128), pad_value=114).write(src, dst)
    assert (dst[:4, :6, 0] == 72).all() and (dst[:4, :6, 1] == -128).all()
    assert (dst[4:, :, :] == 114 - 128).all() and (dst[:, 6:, :] == 114 - 128).all()
    # a BGR model gets red in its last channel; a BGR frame is flipped back for an RGB model
    dst_bgr = np.zeros((8, 8, 3), np.int8)
    Quantiser(spec("int8", 1 / 255, -128, order="BGR")).write(src, dst_bgr)
    assert (dst_bgr[:4, :6, 2] == 72).all() and (dst_bgr[:4, :6, 0] == -128).all()
    dst2 = np.zeros((8, 8, 3), np.int8)
    Quantiser(spec("int8", 1 / 255, -128)).write(src[..., ::-1], dst2, src_bgr=True)
    assert (dst2 == dst).all()


def test_resize_by_an_integer_factor_is_the_block_mean() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = Resizer(60, 90, 20, 30)(src)
    expected = src.reshape(20, 3, 30, 3, 3).mean(axis=(1, 3))
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-9


def test_resize_to_any_size_keeps_flat_colour_and_small_bright_things() -> None:
    flat = np.full((1080, 1920, 3), 90, np.uint8)
    assert (Resizer(1080, 1920, 99, 320)(flat) == 90).all()
    dot = np.zeros((1080, 1920, 3), np.uint8)
    dot[500:512, 900:912] = 255  # a 12 px bright square: a box filter keeps a trace of it
    out = Resizer(1080, 1920, 180, 320)(dot)
    assert out.shape == (180, 320, 3) and out.max() >= 100
