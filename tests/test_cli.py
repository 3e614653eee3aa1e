"""`sousveil detect` and `sousveil bench detector`, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, ROOT
from PIL import Image
from toy_targets import make_scene

from detector import DetectorError
from firmware.cli import main

TOY = str(MODELS / "toy_centernet.tflite")
SURE = ("--threshold", "0.5")  # the toy model scores its targets 0.8-0.95, stray blobs below 0.4


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    frame, truth = make_scene(21, 1280, 720, n_targets=6, min_px=16, max_px=40)
    path = tmp_path_factory.mktemp("img") / "street.png"
    Image.fromarray(frame).save(path)
    return path, truth


def sousveil(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "firmware", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_detect_json_prints_one_line_per_camera(
    scene: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, truth = scene
    assert main(["detect", str(path), "--model", TOY, "--json", *SURE]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(truth)
    for line in lines:
        assert set(line) == {"file", "label", "score", "box"}
        assert line["file"] == str(path) and line["label"] in {"fixed", "dome"} and len(line["box"]) == 4
    # every target is reported near where it was drawn
    for t in truth:
        x1, _, _, y2 = t["box"]  # type: ignore[misc]
        assert any(abs(line["box"][0] - x1) < 6 and abs(line["box"][3] - y2) < 6 for line in lines)


def test_detect_draws_boxes_into_a_folder(
    scene: tuple[Path, list[dict[str, object]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, truth = scene
    out = tmp_path / "drawn"
    assert main(["detect", str(path), str(path), "--model", TOY, "--draw", str(out), *SURE]) == 0
    drawn = out / "street.detections.png"
    with Image.open(drawn) as image, Image.open(path) as original:
        assert image.size == original.size
        assert not np.array_equal(np.asarray(image.convert("RGB")), np.asarray(original.convert("RGB")))
    text = capsys.readouterr().out
    assert f"{path}: {len(truth)} camera(s) in 1280x720" in text


def test_detect_draws_into_a_named_file(scene: tuple[Path, list[dict[str, object]]], tmp_path: Path) -> None:
    path, _ = scene
    assert main(["detect", str(path), "--model", TOY, "--draw", str(tmp_path / "x.jpg")]) == 0
    assert (tmp_path / "x.jpg").stat().st_size > 0


def test_unreadable_images_are_reported_and_the_rest_still_done(
    scene: tuple[Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    path, truth = scene
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = sousveil("detect", str(broken), str(tmp_path / "missing.png"), str(path), "--model", TOY, "--json", *SURE)
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == len(truth)
    assert f"{broken}: not an image Pillow can read" in result.stderr
    assert "missing.png: image not found" in result.stderr
    assert "2 of 3 image(s) could not be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("model_text", "message"),
    [
        (None, "model file not found"),
        (b"garbage", "not a TFLite model"),
    ],
)
def test_a_bad_model_is_one_line_and_exit_2(
    scene: tuple[Path, list[dict[str, object]]], tmp_path: Path, model_text: bytes | None, message: str
) -> None:
    path, _ = scene
    model = tmp_path / "m.tflite"
    if model_text is not None:
        model.write_bytes(model_text)
    result = sousveil("detect", str(path), "--model", str(model))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and result.stderr.startswith("sousveil: ")


def test_no_default_model_yet_says_what_to_do(
    scene: tuple[Path, list[dict[str, object]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = scene
    monkeypatch.setenv("SOUSVEIL_MODEL", str(tmp_path / "nowhere.tflite"))
    result = sousveil("detect", str(path))
    assert result.returncode == 2
    assert result.stderr == f"sousveil: {tmp_path / 'nowhere.tflite'}: model file not found\n"
    no_model = {**os.environ, "SOUSVEIL_MODEL": ""}
    from detector.model import default_model_path

    monkeypatch.setattr(Path, "exists", lambda self: False)  # neither the source tree's nor the installed one
    monkeypatch.setattr(os, "environ", no_model)
    with pytest.raises(DetectorError, match=r"no default model found .*pass --model PATH or set SOUSVEIL_MODEL"):
        default_model_path()


def test_a_wrong_sha256_is_one_line_and_exit_2(scene: tuple[Path, list[dict[str, object]]], tmp_path: Path) -> None:
    path, _ = scene
    model = tmp_path / "toy.tflite"
    shutil.copy(TOY, model)
    sidecar = Path(TOY).with_suffix(".toml").read_text()
    model.with_suffix(".toml").write_text(re.sub(r'sha256 = "[0-9a-f]+"', f'sha256 = "{"0" * 64}"', sidecar))
    result = sousveil("detect", str(path), "--model", str(model))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sousveil: ")
    assert "sha256" in result.stderr and "0" * 64 in result.stderr


def test_no_runtime_installed_is_one_line_and_exit_2(scene: tuple[Path, list[dict[str, object]]]) -> None:
    path, _ = scene
    code = (
        "import sys\n"
        "for name in ('ai_edge_litert', 'ai_edge_litert.interpreter',"
        " 'tflite_runtime', 'tflite_runtime.interpreter'):\n"
        "    sys.modules[name] = None\n"
        "from firmware.cli import main\n"
        f"raise SystemExit(main(['detect', {str(path)!r}, '--model', {TOY!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sousveil: no TFLite runtime is installed: `pip install ai-edge-litert`")


def test_loading_a_model_prints_nothing_but_errors(scene: tuple[Path, list[dict[str, object]]]) -> None:
    """LiteRT's native 'INFO: Created TensorFlow Lite XNNPACK delegate' line goes to the debug log."""
    path, _ = scene
    quiet = sousveil("detect", str(path), "--model", TOY, "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""
    debug = sousveil("--debug", "detect", str(path), "--model", TOY, "--json")
    assert "runtime: INFO: Created TensorFlow Lite XNNPACK delegate" in debug.stderr


def test_an_unwritable_draw_target_is_one_line_and_the_rest_still_done(
    scene: tuple[Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    path, truth = scene
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = sousveil("detect", str(path), "--model", TOY, "--json", *SURE, "--draw", str(blocker / "x.png"))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == len(truth)  # detections printed before the drawing failed
    assert f"--draw: cannot write {blocker / 'x.png'}" in result.stderr
    assert "Traceback" not in result.stderr
    several = sousveil("detect", str(path), str(path), "--model", TOY, "--draw", str(blocker))
    assert several.returncode == 2
    assert several.stderr == f"sousveil: --draw {blocker}: with several images, give a folder, not a file\n"


def test_an_image_too_large_to_decode_safely_is_refused(
    scene: tuple[Path, list[dict[str, object]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.images import ImageError, load_rgb

    path, _ = scene
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1280 * 720 // 3)  # the scene is over twice the limit
    with pytest.raises(ImageError, match="image too large to read safely"):
        load_rgb(path)


def test_bench_prints_the_figures(tmp_path: Path) -> None:
    result = sousveil("bench", "detector", "--model", TOY, "--frames", "2", "--threads", "1")
    assert result.returncode == 0, result.stderr
    for field in (
        "interpreter per tile",
        "pre-processing per frame",
        "post-processing per frame",
        "frames per second",
        "peak RSS",
        "baseline",
    ):
        assert field in result.stdout


def test_bench_invoke_times_several_models_in_one_run() -> None:
    result = sousveil(
        "bench", "invoke", str(MODELS / "toy_centernet.tflite"), str(MODELS / "toy_yolo.tflite"), "--runs", "3"
    )
    assert result.returncode == 0, result.stderr
    assert "toy_centernet.tflite" in result.stdout and "toy_yolo.tflite" in result.stdout
    assert "192x192x3 int8" in result.stdout and "192x192x3 uint8" in result.stdout
