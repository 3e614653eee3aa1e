"""The whole detector on 1920x1080 frames with the real toy model: tiles find small targets
a whole-frame resize misses, objects across tile edges and big objects are found once."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS
from toy_targets import draw_target, make_scene, render_background

from detector import Detection, Detector, DetectorError, Model, TilingConfig
from detector.decoders.nms import iou_matrix

W, H = 1920, 1080


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.load(MODELS / "toy_centernet.tflite", num_threads=2)


def full(model: Model, **kwargs: object) -> Detector:
    return Detector(model, TilingConfig.full_frame(**kwargs))


def match(dets: list[Detection], truth: list[dict[str, object]]) -> tuple[int, int, int]:
    """(targets found with IoU >= 0.5 and the right label, false detections, duplicates)."""
    if not dets:
        return 0, 0, 0
    want = np.array([t["box"] for t in truth], np.float32)
    got = np.array([d.box_px for d in dets], np.float32)
    iou = iou_matrix(want, got)
    found = sum(
        1 for i, t in enumerate(truth) if iou[i].max() >= 0.5 and dets[int(iou[i].argmax())].label == t["label"]
    )
    hits_per_det = (iou >= 0.3).sum(axis=0)
    false = int((hits_per_det == 0).sum())
    dups = int(sum(max(0, int((iou[i] >= 0.3).sum()) - 1) for i in range(len(truth))))
    return found, false, dups


def test_tiles_find_small_targets_anywhere_in_a_1080p_frame(model: Model) -> None:
    det = full(model)
    found = false = dups = total = 0
    for seed in range(3):
        frame, truth = make_scene(100 + seed, W, H, n_targets=25, min_px=12, max_px=40)
        f, fa, d = match(det.detect(frame), truth)
        found, false, dups, total = found + f, false + fa, dups + d, total + len(truth)
    assert found / total >= 0.9, f"recall {found}/{total}"
    assert false <= 0.05 * total and dups == 0


def test_the_naive_whole_frame_resize_misses_what_tiles_find(model: Model) -> None:
    frame, truth = make_scene(7, W, H, n_targets=25, min_px=12, max_px=24)
    tiled, _, _ = match(full(model).detect(frame), truth)
    # the baseline: the whole frame shrunk to one model input, no tiles
    naive, _, _ = match(Detector(model, TilingConfig.full_frame(scales=(0.1,), coarse=False)).detect(frame), truth)
    assert tiled >= 0.9 * len(truth)
    assert naive <= 0.3 * len(truth)


def place(frame: np.ndarray, label: str, box: tuple[float, float, float, float], seed: int = 0) -> dict[str, object]:
    draw_target(frame, label, box, np.random.default_rng(seed))
    return {"label": label, "box": list(box)}


def test_a_target_across_a_tile_edge_is_found_once_where_it_is(model: Model) -> None:
    det = full(model)
    plan = det.plan_for(W, H)
    fine = [t for t in plan.tiles if not plan.levels[t.level].coarse]
    xs = sorted({t.x for t in fine})
    ys = sorted({t.y for t in fine})
    frame = render_background(np.random.default_rng(3), W, H)
    truth = []
    for k in range(1, 6):  # straddle the left edge of tile column k, and of row 1 and 2
        edge_x = xs[k]
        y0 = 60 + 150 * (k - 1)
        truth.append(
            place(frame, "dome" if k % 2 else "fixed", (edge_x - 14, y0, edge_x + 14, y0 + (28 if k % 2 else 14)))
        )
    for row in (1, 2):
        edge_y = ys[row]
        x0 = 1500 + 150 * (row - 1)
        truth.append(place(frame, "dome", (x0, edge_y - 12, x0 + 24, edge_y + 12)))
    dets = det.detect(frame)
    found, false, dups = match(dets, truth)
    assert (found, false, dups) == (len(truth), 0, 0)
    # the box found through the tiles is the box drawn in frame coordinates
    want = np.array([t["box"] for t in truth], np.float32)
    got = np.array([d.box_px for d in dets], np.float32)
    assert (iou_matrix(want, got).max(axis=1) >= 0.6).all()


def test_a_close_camera_bigger_than_a_tile_is_found_whole_by_the_coarse_pass(model: Model) -> None:
    frame = render_background(np.random.default_rng(5), W, H)
    big_box = (700.0, 300.0, 1000.0, 590.0)  # 300 px: bigger than a 192 px tile
    truth = [place(frame, "dome", big_box), place(frame, "fixed", (60, 80, 100, 100))]
    dets = full(model).detect(frame)
    found, _, dups = match(dets, truth)
    assert (found, dups) == (2, 0)
    # one box for the big target: no pieces of it cut by the fine tiles survive the merge
    big = np.array([big_box], np.float32)
    touching = [d for d in dets if iou_matrix(big, np.array([d.box_px], np.float32))[0, 0] > 0]
    assert len(touching) == 1
    without_coarse = full(model, coarse=False).detect(frame)
    assert not any(iou_matrix(big, np.array([d.box_px], np.float32))[0, 0] >= 0.5 for d in without_coarse)


def test_the_ride_band_looks_only_above_the_horizon(model: Model) -> None:
    frame = render_background(np.random.default_rng(9), W, H)
    above = place(frame, "dome", (400, 200, 430, 230))
    place(frame, "dome", (900, 900, 930, 930))  # on the road, below the band
    dets = Detector(model, TilingConfig()).detect(frame)
    assert [d.label for d in dets] == ["dome"]
    assert match(dets, [above])[0] == 1


def test_bgr_frames_give_the_same_detections(model: Model) -> None:
    frame, _ = make_scene(11, W, H, n_targets=10, min_px=14, max_px=40)
    det = full(model)
    rgb = det.detect(frame)
    bgr = det.detect(np.ascontiguousarray(frame[..., ::-1]), bgr=True)
    assert [d.box_px for d in rgb] == [d.box_px for d in bgr]


def test_detections_carry_pixel_and_normalised_boxes(model: Model) -> None:
    frame, truth = make_scene(12, 1280, 720, n_targets=6, min_px=16, max_px=40)
    det = full(model)
    dets = det.detect(frame)
    assert match(dets, truth)[0] == len(truth)
    for d in dets:
        x1, y1, x2, y2 = d.box_px
        assert d.box_norm == pytest.approx((x1 / 1280, y1 / 720, x2 / 1280, y2 / 720))
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
    assert det.last_timings.tiles == len(det.plan_for(1280, 720).tiles)
    assert det.last_timings.infer_s > 0


def test_the_plan_is_built_once_per_frame_size(model: Model) -> None:
    det = full(model)
    frame = np.zeros((480, 640, 3), np.uint8)
    det.detect(frame)
    plan = det.plan_for(640, 480)
    det.detect(frame)
    assert det.plan_for(640, 480) is plan


@pytest.mark.parametrize(
    "frame",
    [np.zeros((100, 100), np.uint8), np.zeros((100, 100, 3), np.float32), np.zeros((100, 100, 4), np.uint8), "x"],
)
def test_a_frame_that_is_not_rgb_uint8_is_refused(model: Model, frame: object) -> None:
    with pytest.raises(DetectorError, match=r"a frame must be an \(H, W, 3\) uint8 array"):
        full(model).detect(frame)  # type: ignore[arg-type]


def test_a_threshold_out_of_range_is_refused(model: Model) -> None:
    with pytest.raises(DetectorError, match="score_threshold"):
        Detector(model, score_threshold=0.0)
