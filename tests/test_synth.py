"""The synthetic tile generator (models/synth): determinism, label sanity, size distribution."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synth"

needs_src = pytest.mark.skipif(
    not (SRC / "backgrounds").is_dir() or not (SRC / "cutouts").is_dir(),
    reason=f"synthetic-data raw materials not found at {SRC} (licensed inputs, not in the repo)",
)

N = 24
STRIDE = 6  # every 6th cut-out per class: the first (cold-cache) run mattes ~30 images, not 157


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from models.synth.generate import generate

    a = tmp_path_factory.mktemp("synth_a")
    b = tmp_path_factory.mktemp("synth_b")
    generate(a, N, seed=123, src=SRC, log=False, stride=STRIDE)
    generate(b, N, seed=123, src=SRC, log=False, stride=STRIDE)
    return a, b


def _coco(d: Path) -> dict:
    return json.loads((d / "labels.json").read_text())


@needs_src
def test_deterministic(runs: tuple[Path, Path]) -> None:
    a, b = runs
    assert _coco(a) == _coco(b)
    files = sorted(p.name for p in a.glob("*.jpg"))
    assert len(files) == N
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@needs_src
def test_coco_consistent(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    coco = _coco(a)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in coco["categories"]] == ["fixed", "dome", "ptz", "alpr"]
    ids = [im["id"] for im in coco["images"]]
    assert len(set(ids)) == len(ids) == N
    for im in coco["images"]:
        assert im["width"] == 320 and im["height"] == 320
        assert (a / im["file_name"]).is_file()
    ann_ids = [an["id"] for an in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for an in coco["annotations"]:
        assert an["image_id"] in set(ids)
        assert an["category_id"] in (1, 2, 3, 4)
        assert an["iscrowd"] == 0
        x, y, w, h = an["bbox"]
        assert w >= 2 and h >= 2
        assert x >= 0 and y >= 0 and x + w <= 320 and y + h <= 320
        assert an["area"] == pytest.approx(w * h, rel=0.01)


@needs_src
def test_negatives_and_sizes() -> None:
    """Over more tiles: some have no camera, and most cameras are 6-60 px long."""
    import numpy as np

    from models.synth.generate import Generator

    gen = Generator(SRC, stride=STRIDE)
    empty, sizes = 0, []
    for i in range(150):
        img, labels = gen.tile(np.random.default_rng([5, i]))
        assert img.size == (320, 320)
        empty += not labels
        sizes += [max(b[2] - b[0], b[3] - b[1]) for _, b in labels]
    assert 5 <= empty <= 75
    sizes_a = np.array(sizes)
    assert len(sizes_a) > 100
    assert ((sizes_a >= 4) & (sizes_a <= 64)).mean() > 0.7
    assert (sizes_a < 20).mean() > 0.2
    assert sizes_a.max() <= 140


def test_classes_csv() -> None:
    from models.synth.assets import CLASSES_CSV

    rows = CLASSES_CSV.read_text().splitlines()[1:]
    counts = Counter(r.split(",")[1] for r in rows)
    assert set(counts) <= {"fixed", "dome", "ptz", "alpr", "skip"}
    assert all(counts[c] > 0 for c in ("fixed", "dome", "ptz", "alpr"))
    # the recipe and the model card quote these counts
    cams = sum(counts[c] for c in ("fixed", "dome", "ptz", "alpr"))
    models = CLASSES_CSV.parents[1]
    recipe = (models / "synth" / "README.md").read_text()
    card = " ".join((models / "README.md").read_text().split())
    assert f"{counts['fixed']} fixed, {counts['dome']} dome, {counts['ptz']} ptz, {counts['alpr']} alpr" in recipe
    assert f"{counts['skip']} skip" in recipe
    assert f"the {cams} labelled camera images" in recipe
    assert f"({cams} labelled by hand" in card
