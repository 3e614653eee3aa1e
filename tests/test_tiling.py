"""Tile plans: the region is covered, boxes round-trip, and each object is seen whole once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.tiling import TilePlan, TilingConfig, axis_positions, build_plan

FRAMES = [(1920, 1080), (1280, 720), (4056, 3040), (640, 480), (300, 200)]


@pytest.mark.parametrize(("w", "h"), FRAMES)
@pytest.mark.parametrize("config", [TilingConfig(), TilingConfig.full_frame(), TilingConfig(scales=(1.0, 0.5))])
def test_fine_tiles_cover_the_region_with_the_overlap_asked_for(w: int, h: int, config: TilingConfig) -> None:
    plan = build_plan(w, h, 320, 320, config)
    x1, y1, x2, y2 = plan.roi_px
    assert (x1, y1, x2) == (0, 0, w) and y2 == round(config.roi[3] * h)
    for index, level in enumerate(plan.levels):
        covered = np.zeros((level.height, level.width), dtype=bool)
        tiles = [t for t in plan.tiles if t.level == index]
        for t in tiles:
            assert t.w <= 320 and t.h <= 320
            assert t.x + t.w <= level.width and t.y + t.h <= level.height
            covered[t.y : t.y + t.h, t.x : t.x + t.w] = True
        assert covered.all()
        xs = sorted({(t.x, t.w) for t in tiles})
        for (a, aw), (b, _) in itertools.pairwise(xs):
            assert a + aw - b >= config.overlap_px  # neighbours overlap by at least overlap_px


def test_default_band_on_1080p_is_two_rows_of_seven_plus_one_coarse_tile() -> None:
    plan = build_plan(1920, 1080, 320, 320, TilingConfig())
    assert plan.roi_px == (0, 0, 1920, 594)
    assert [len([t for t in plan.tiles if t.level == i]) for i in range(len(plan.levels))] == [14, 1]
    coarse = plan.levels[1]
    assert coarse.coarse and coarse.width == 320 and coarse.height == 99


def test_no_coarse_level_when_the_region_fits_one_tile() -> None:
    plan = build_plan(300, 200, 320, 320, TilingConfig.full_frame())
    assert len(plan.levels) == 1 and len(plan.tiles) == 1
    assert (plan.tiles[0].w, plan.tiles[0].h) == (300, 200)


@pytest.mark.parametrize(("w", "h"), FRAMES)
def test_boxes_round_trip_between_frame_and_every_tile(w: int, h: int) -> None:
    plan = build_plan(w, h, 192, 192, TilingConfig(scales=(1.0, 0.6)))
    rng = np.random.default_rng(1)
    for tile in plan.tiles:
        for _ in range(5):
            x, y = rng.uniform(0, w - 10), rng.uniform(0, plan.roi_px[3] - 10)
            box = (x, y, x + rng.uniform(2, 60), y + rng.uniform(2, 60))
            back = plan.tile_to_frame(tile, np.array([plan.frame_to_tile(tile, box)], np.float32))[0]
            assert np.allclose(back, box, atol=1e-2)


def whole_in(plan: TilePlan, box: tuple[float, float, float, float]) -> list[int]:
    """Indices of fine tiles that contain ``box`` whole and keep it (not dropped as cut)."""
    keep = []
    for i, tile in enumerate(plan.tiles):
        if plan.levels[tile.level].coarse:
            continue
        nb = np.array([plan.frame_to_tile(tile, box)], np.float32)
        if (nb < 0).any() or nb[0, 2] * plan.input_w > tile.w or nb[0, 3] * plan.input_h > tile.h:
            continue  # not in this tile at all (or not whole)
        if not plan.shared_edge_contact(tile, nb)[1][0]:
            keep.append(i)
    return keep


def test_every_small_object_is_kept_whole_by_some_tile_and_its_cut_pieces_are_dropped() -> None:
    plan = build_plan(1920, 1080, 320, 320, TilingConfig())
    rng = np.random.default_rng(7)
    for _ in range(2000):
        size = rng.uniform(3, 40)  # smaller than the 40 px overlap
        x, y = rng.uniform(0, 1920 - size), rng.uniform(0, 594 - size)
        box = (x, y, x + size, y + size * rng.uniform(0.5, 1.0))
        assert whole_in(plan, box), f"{box} is seen whole by no tile"
        # The visible piece of the object in a tile that cuts it is dropped.
        for tile in plan.tiles:
            if plan.levels[tile.level].coarse:
                continue
            size_in = np.array([plan.input_w, plan.input_h] * 2, np.float32)
            x1, y1, x2, y2 = np.array(plan.frame_to_tile(tile, box), np.float32) * size_in
            cut = (x1 < 0 < x2) or (y1 < 0 < y2) or (x1 < tile.w < x2) or (y1 < tile.h < y2)
            inside = x2 > 0 and y2 > 0 and x1 < tile.w and y1 < tile.h
            if cut and inside:
                piece = np.clip([x1, y1, x2, y2], 0, [tile.w, tile.h, tile.w, tile.h]) / size_in
                assert plan.shared_edge_contact(tile, piece.reshape(1, 4).astype(np.float32))[1][0]


def test_axis_positions_spread_evenly_and_end_at_the_border() -> None:
    assert axis_positions(100, 320, 40) == [(0, 100)]
    spans = axis_positions(1920, 320, 40)
    assert spans[0][0] == 0 and spans[-1][0] + 320 == 1920
    steps = {b[0] - a[0] for a, b in itertools.pairwise(spans)}
    assert max(steps) - min(steps) <= 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TilingConfig(roi=(0.0, 0.5, 1.0, 0.5)), "tiling.roi"),
        (TilingConfig(scales=()), "tiling.scales"),
        (TilingConfig(scales=(8.0,)), "tiling.scales"),
        (TilingConfig(overlap_px=200), "tiling.overlap_px"),
        (TilingConfig(pad_value=300), "tiling.pad_value"),
    ],
)
def test_bad_tiling_is_a_config_error_naming_the_key(config: TilingConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plan(1920, 1080, 320, 320, config)
