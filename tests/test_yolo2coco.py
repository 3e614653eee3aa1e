"""A YOLO export of a labelling tool becomes a COCO folder that `sousveil evaluate` reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from detector.evaluation import load_coco
from models.yolo2coco import ConversionError, convert


def export(
    tmp_path: Path, classes: str = "dome\nalpr\n", label: str = "0 0.5 0.25 0.1 0.2\n1 0.05 0.1 0.2 0.2\n"
) -> Path:
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (200, 100)).save(root / "images" / "a.jpg")
    Image.new("RGB", (50, 50)).save(root / "images" / "negative.png")
    (root / "labels" / "a.txt").write_text(label)
    (root / "classes.txt").write_text(classes)
    return root


def test_boxes_classes_and_negatives_survive_the_round_trip(tmp_path: Path) -> None:
    convert(export(tmp_path), tmp_path / "coco")
    images, labels = load_coco(tmp_path / "coco")
    assert labels == ["fixed", "dome", "ptz", "alpr"]
    a = next(i for i in images if i.file.name == "a.jpg")
    assert a.labels == ("dome", "alpr")
    assert a.boxes.tolist()[0] == pytest.approx([90.0, 15.0, 110.0, 35.0])
    assert a.boxes.tolist()[1] == pytest.approx([0.0, 0.0, 30.0, 20.0])  # clipped at the image edge
    assert a.file.exists()
    assert len(next(i for i in images if i.file.name == "negative.png").boxes) == 0


def test_data_yaml_names_are_read(tmp_path: Path) -> None:
    root = export(tmp_path)
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("path: .\nnames:\n  0: dome\n  1: alpr\n")
    convert(root, tmp_path / "coco")
    assert load_coco(tmp_path / "coco")[0][0].labels == ("dome", "alpr")


@pytest.mark.parametrize(
    ("classes", "label", "message"),
    [
        ("camera\n", "0 0.5 0.5 0.1 0.1\n", "classes ['camera'] are not sousveil's"),
        ("dome\n", "3 0.5 0.5 0.1 0.1\n", "a.txt:1: expected 'class cx cy w h'"),
        ("dome\n", "0 50 50 10 10\n", "a.txt:1: coordinates must be normalised"),
    ],
)
def test_bad_exports_are_refused_naming_the_file_and_line(
    tmp_path: Path, classes: str, label: str, message: str
) -> None:
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert(export(tmp_path, classes, label), tmp_path / "coco")
