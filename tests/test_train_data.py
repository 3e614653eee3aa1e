"""models/train/data.py: reading labelled photos for training (no TensorFlow or torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_training_reads_coco_classes_by_name(tmp_path: Path) -> None:
    """The trainer reads the generator's COCO and a labelling tool's, whose ids may be in any order."""
    from PIL import Image

    from models.train.data import load_coco

    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    names = ["alpr", "fixed", "ptz", "dome"]  # a tool's own order, ids 1..4
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": i + 1, "image_id": 7, "category_id": i + 1, "bbox": [1, 2, 10, 8], "ignore": int(i == 3)}
            for i in range(4)
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    (tmp_path / "labels.json").write_text(json.dumps(coco))
    (rec,) = load_coco(tmp_path)
    assert rec.cls.tolist() == [3, 0, 2, 1]  # alpr, fixed, ptz, dome as the model numbers them
    assert rec.ignore.tolist() == [False, False, False, True]
    assert rec.boxes[0].tolist() == [1, 2, 11, 10]
    coco["categories"][0]["name"] = "bullet"
    (tmp_path / "labels.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="bullet"):
        load_coco(tmp_path)
