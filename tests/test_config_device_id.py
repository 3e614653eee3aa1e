"""``[device] id``: a fixed device id bound to a broker account (firmware/config.py, replay_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.cli import main
from firmware.config import ConfigFileError, load_config
from firmware.replay_cli import resolve_device_id

DEVICE = "3f9a1c0e5b7d2468"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sousveil.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_fixed_id_is_used_instead_of_the_id_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'[device]\nid = "{DEVICE}"\n'), state_dir=tmp_path)
    assert config.device.id == DEVICE
    assert resolve_device_id(config) == DEVICE
    assert not config.device.id_file.exists()  # nothing drawn, nothing written


def test_without_id_the_id_file_is_used(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[device]\nrotate_days = 7\n"), state_dir=tmp_path)
    assert config.device.id is None
    first = resolve_device_id(config)
    assert config.device.id_file.exists() and resolve_device_id(config) == first


@pytest.mark.parametrize(
    "value",
    ['"3F9A1C0E5B7D2468"', '"3f9a1c0e5b7d246"', '"3f9a1c0e5b7d24680"', '"bike-3f9a"', '""', "3"],
)
def test_malformed_id_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigFileError) as err:
        load_config(write(tmp_path, f"[device]\nid = {value}\n"), state_dir=tmp_path)
    assert err.value.key == "device.id"


def test_fixed_id_with_rotation_is_refused_naming_both_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as err:
        load_config(write(tmp_path, f'[device]\nid = "{DEVICE}"\nrotate_days = 30\n'), state_dir=tmp_path)
    assert "device.id" in str(err.value) and "rotate_days" in str(err.value)
    assert "\n" not in str(err.value)


def test_fixed_id_with_rotate_days_zero_is_fine(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'[device]\nid = "{DEVICE}"\nrotate_days = 0\n'), state_dir=tmp_path)
    assert config.device.id == DEVICE and config.device.rotate_days == 0


def test_check_reports_the_fixed_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f'[device]\nid = "{DEVICE}"\n')
    main(["check", str(path)])
    assert f"device ok (fixed id {DEVICE})" in capsys.readouterr().out
