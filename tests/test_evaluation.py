"""Evaluation: AP50 and precision/recall as a mapper would count them, and `sousveil evaluate`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS
from PIL import Image
from toy_targets import make_scene

from detector.detection import Detection
from detector.evaluation import ANY, ClassCurve, GroundTruth, load_coco, match_image
from firmware.cli import main

LABELS = ["fixed", "dome"]


def truth(*boxes: tuple[str, tuple[float, float, float, float], bool]) -> GroundTruth:
    return GroundTruth(
        Path("x.png"),
        1000,
        1000,
        np.array([b for _, b, _ in boxes], np.float32).reshape(-1, 4),
        tuple(lab for lab, _, _ in boxes),
        np.array([ign for _, _, ign in boxes], bool),
    )


def det(label: str, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection.from_pixels(label, LABELS.index(label), score, box, 1000, 1000)


def curves_of(*images: tuple[list[Detection], GroundTruth]) -> dict[str, ClassCurve]:
    curves: dict[str, ClassCurve] = {}
    for dets, gt in images:
        match_image(dets, gt, curves, LABELS)
    return curves


def test_finding_everything_and_nothing_else_is_ap_1() -> None:
    c = curves_of(
        (
            [det("dome", 0.9, (10, 10, 30, 30)), det("fixed", 0.6, (100, 100, 140, 120))],
            truth(("dome", (11, 10, 30, 31), False), ("fixed", (100, 101, 141, 120), False)),
        ),
    )
    assert c[ANY].average_precision() == 1.0
    assert c["dome"].average_precision() == 1.0 and c["fixed"].average_precision() == 1.0
    assert c[ANY].at(0.7) == (1, 0, 1)  # above 0.7 only the dome: one hit, one missed


def test_a_false_alarm_above_the_hit_halves_ap() -> None:
    c = curves_of(
        (
            [det("dome", 0.9, (500, 500, 520, 520)), det("dome", 0.8, (10, 10, 30, 30))],
            truth(("dome", (10, 10, 30, 30), False)),
        )
    )
    assert c[ANY].average_precision() == pytest.approx(0.5)


def test_half_found_is_ap_one_half() -> None:
    c = curves_of(
        (
            [det("fixed", 0.9, (10, 10, 30, 30))],
            truth(("fixed", (10, 10, 30, 30), False), ("fixed", (300, 300, 330, 330), False)),
        )
    )
    assert c[ANY].average_precision() == pytest.approx(0.5)
    assert c[ANY].at(0.5) == (1, 0, 1)


def test_ignored_boxes_count_neither_way() -> None:
    c = curves_of(
        (
            [det("dome", 0.9, (100, 100, 110, 110)), det("dome", 0.8, (10, 10, 30, 30))],
            truth(
                ("dome", (10, 10, 30, 30), False),
                ("dome", (98, 99, 112, 111), True),
                ("dome", (600, 600, 610, 610), True),
            ),
        )
    )
    assert c[ANY].positives == 1  # the ignored boxes need not be found
    assert c[ANY].average_precision() == 1.0  # the detection on an ignored box is no false alarm


def test_a_wrong_class_is_a_hit_for_any_camera_and_a_false_alarm_for_its_class() -> None:
    c = curves_of(([det("fixed", 0.9, (10, 10, 30, 30))], truth(("dome", (10, 10, 30, 30), False))))
    assert c[ANY].average_precision() == 1.0
    assert c["dome"].average_precision() == 0.0 and c["fixed"].at(0.5) == (0, 1, 0)
    assert math.isnan(c["fixed"].average_precision())  # no fixed camera in the data


def test_one_detection_cannot_claim_two_cameras() -> None:
    c = curves_of(
        (
            [det("dome", 0.9, (10, 10, 30, 30))],
            truth(("dome", (10, 10, 30, 30), False), ("dome", (11, 11, 30, 30), False)),
        )
    )
    assert c[ANY].at(0.5) == (1, 0, 1)


@pytest.fixture(scope="module")
def toy_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small COCO folder of toy scenes: targets, an ignored target, a negative image."""
    folder = tmp_path_factory.mktemp("coco")
    (folder / "images").mkdir()
    images, annotations = [], []
    for i in range(4):
        n = 0 if i == 3 else 5
        frame, boxes = make_scene(300 + i, 960, 540, n_targets=n, min_px=14, max_px=48)
        Image.fromarray(frame).save(folder / "images" / f"s{i}.png")
        images.append({"id": i + 1, "file_name": f"s{i}.png", "width": 960, "height": 540})
        for k, b in enumerate(boxes):
            x1, y1, x2, y2 = b["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": LABELS.index(b["label"]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "ignore": int(i == 0 and k == 0),
                }
            )
    categories = [{"id": 1, "name": "fixed"}, {"id": 2, "name": "dome"}]
    (folder / "labels.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return folder


def test_load_coco_reads_boxes_labels_and_ignore_flags(toy_coco: Path) -> None:
    images, labels = load_coco(toy_coco)
    assert labels == LABELS and len(images) == 4
    assert images[0].ignore.tolist() == [True, False, False, False, False]
    assert len(images[3].boxes) == 0
    x1, y1, x2, y2 = images[1].boxes[0]
    assert x2 > x1 and y2 > y1


def test_evaluate_command_prints_ap_and_writes_plot_and_json(
    toy_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, metrics = tmp_path / "pr.png", tmp_path / "m.json"
    code = main(
        [
            "evaluate",
            str(toy_coco),
            "--model",
            str(MODELS / "toy_centernet.tflite"),
            "--plot",
            str(plot),
            "--json",
            str(metrics),
            "--threads",
            "2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "any camera" in out and "AP50" in out
    data = json.loads(metrics.read_text())
    assert data["classes"][ANY]["positives"] == 14  # 15 targets, one ignored
    assert data["classes"][ANY]["ap50"] >= 0.9
    with Image.open(plot) as image:
        assert image.size == (720, 560)


def test_evaluate_on_shrunken_copies_runs(toy_coco: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(toy_coco), "--model", str(MODELS / "toy_centernet.tflite"), "--shrink", "16"]) == 0
    assert "cameras shrunk to ~16 px" in capsys.readouterr().out


def test_a_folder_without_labels_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path), "--model", str(MODELS / "toy_centernet.tflite")]) == 2
    assert "no COCO labels file" in capsys.readouterr().err


def test_classes_the_model_does_not_know_are_refused(
    toy_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads((toy_coco / "labels.json").read_text())
    data["categories"][1]["name"] = "alpr"
    other = tmp_path / "other"
    other.mkdir()
    (other / "labels.json").write_text(json.dumps(data))
    assert main(["evaluate", str(other), "--model", str(MODELS / "toy_centernet.tflite")]) == 2
    assert "classes ['alpr'] are not labels of the model" in capsys.readouterr().err
