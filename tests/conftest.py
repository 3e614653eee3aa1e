from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
MODELS = TESTS / "models"
FIXTURES = TESTS / "fixtures"
GOLDEN = TESTS / "golden"
SHARED = ROOT.parent / "shared"

sys.path.insert(0, str(MODELS))  # toy_targets: the renderer of the toy test models' targets


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    """A private copy of the toy CenterNet model and its sidecar (tests may damage it)."""
    for suffix in (".tflite", ".toml"):
        shutil.copy(MODELS / f"toy_centernet{suffix}", tmp_path / f"toy_centernet{suffix}")
    return tmp_path / "toy_centernet.tflite"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test writes to the user's state dir (device id, outbox, sightings)."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SOUSVEIL_STATE_DIR", str(state))
    return state
