"""The service's TOML config (firmware/config.py) and `sousveil check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS, ROOT

from firmware.cli import main
from firmware.config import ConfigFileError, load_config, parse_config
from firmware.tracker import TrackerConfig

EXAMPLE = ROOT / "deploy" / "sousveil.example.toml"


def write(tmp_path: Path, text: str, name: str = "sousveil.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_parses_to_the_defaults(tmp_path: Path) -> None:
    example = load_config(EXAMPLE, state_dir=tmp_path)
    empty = load_config(write(tmp_path, ""), state_dir=tmp_path)
    assert example.mqtt is None and example.tracker == TrackerConfig()
    for section in ("device", "camera", "tracker", "gps", "outbox", "output", "privacy"):
        assert getattr(example, section) == getattr(empty, section), section
    assert example.detector.tiling == empty.detector.tiling


def test_empty_and_no_file_replay_into_a_file_under_the_state_dir(tmp_path: Path) -> None:
    for config in (load_config(write(tmp_path, ""), state_dir=tmp_path), load_config(None, state_dir=tmp_path)):
        assert config.camera.source == "video" and config.gps.source == "gpx"
        assert config.mqtt is None
        assert config.output.file == tmp_path / "sightings.jsonl"
        assert config.device.id_file == tmp_path / "device-id"
        assert config.outbox.path == tmp_path / "outbox.db"
        assert config.privacy.zones == () and config.privacy.coarse_time_min == 0
        assert not config.privacy.publish_crops


def test_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUSVEIL_STATE_DIR", str(tmp_path / "state"))
    assert load_config(None).output.file == tmp_path / "state" / "sightings.jsonl"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    write(
        folder,
        """
[device]
id_file = "state/id"
[camera]
path = "rides/one.mp4"
[detector]
model = "m/cams.tflite"
[gps]
path = "/abs/ride.gpx"
[mqtt]
host = "broker"
username = "bike"
password_file = "mqtt.pass"
ca_file = "ca.pem"
[outbox]
path = "q/outbox.db"
[output]
file = "out.jsonl"
""",
    )
    monkeypatch.chdir(tmp_path)
    c = load_config(Path("etc/sousveil.toml"), state_dir=tmp_path)
    assert c.device.id_file == folder / "state" / "id"
    assert c.camera.path == folder / "rides" / "one.mp4"
    assert c.detector.model == folder / "m" / "cams.tflite"
    assert c.gps.path == Path("/abs/ride.gpx")
    assert c.mqtt is not None
    assert c.mqtt.password_file == folder / "mqtt.pass" and c.mqtt.ca_file == folder / "ca.pem"
    assert c.mqtt.uses_tls and c.mqtt.port == 1883
    assert c.outbox.path == folder / "q" / "outbox.db"
    assert c.output.file == folder / "out.jsonl"


def test_full_config_values(tmp_path: Path) -> None:
    c = parse_config(
        {
            "device": {"rotate_days": 30},
            "camera": {"source": "picamera2", "width": 1280, "height": 720, "fps": 15, "hfov_deg": 102, "yaw_deg": 90},
            "tracker": {"min_hits": 2, "foe_norm": [0.5, 0.4], "alpha": 0.9},
            "gps": {"source": "gpsd", "host": "gps.local", "port": 2948, "max_gap_s": 3},
            "outbox": {"max_rows": 10, "max_bytes": 100_000, "when_full": "drop_oldest"},
            "privacy": {
                "coarse_time_min": 15,
                "publish_crops": True,
                "zones": [
                    {"lat_deg": 55.7, "lon_deg": 13.19, "radius_m": 300},
                    {"lat_deg": 55.71, "lon_deg": 13.2, "radius_m": 200, "action": "delay", "delay_h": 24},
                ],
            },
        },
        tmp_path / "x.toml",
        state_dir=tmp_path,
    )
    assert c.device.rotate_days == 30
    assert c.camera.camera_model().width_px == 1280 and c.camera.fps == 15.0
    assert c.tracker.min_hits == 2 and c.tracker.foe_norm == (0.5, 0.4)
    assert c.gps.host == "gps.local" and c.gps.max_gap_s == 3.0
    assert c.outbox.when_full == "drop_oldest"
    assert [z.action for z in c.privacy.zones] == ["drop", "delay"]
    assert c.privacy.zones[1].delay_h == 24.0 and c.privacy.coarse_time_min == 15


MISTAKES = [
    ("[cameras]\n", "cameras", "unknown table"),
    ("[camera]\nsorce = 'video'\n", "camera.sorce", "unknown key"),
    ("[camera]\nwidth = '1920'\n", "camera.width", "expected an integer"),
    ("[camera]\nwidth = 1920.5\n", "camera.width", "expected an integer"),
    ("[camera]\nsource = 'webcam'\n", "camera.source", "must be one of"),
    ("[camera]\nhfov_deg = 200\n", "camera.hfov_deg", "must be within"),
    ("[camera]\nfps = 0\n", "camera.fps", "must be within"),
    ("[device]\nrotate_days = -1\n", "device.rotate_days", "must be within"),
    ("[device]\nid_file = 3\n", "device.id_file", "expected a non-empty string"),
    ("[detector]\nmerge_iou = 2\n", "detector.merge_iou", "must be within"),
    ("[detector.tiling]\nbogus = 1\n", "detector.tiling", "unknown key"),
    ("[tracker]\nmin_hits = 0\n", "tracker.min_hits", "must be within"),
    ("[tracker]\nmin_hits = 9\n", "tracker.confirm_window", "must be >= min_hits"),
    ("[tracker]\nfoe_norm = [0.5]\n", "tracker.foe_norm", "expected [x, y]"),
    ("[gps]\nsource = 'glonass'\n", "gps.source", "must be one of"),
    ("[gps]\nport = 70000\n", "gps.port", "must be within 1..65535, got 70000"),
    ("[mqtt]\nhost = 'b'\nport = 70000\n", "mqtt.port", "must be within 1..65535, got 70000"),
    ("[mqtt]\nport = 1883\n", "mqtt.host", "required"),
    (
        "[mqtt]\nhost = 'b'\nusername = 'u'\npassword = 'hunter2'\n",
        "mqtt.password",
        "use password_file or password_env",
    ),
    ("[mqtt]\nhost = 'b'\npassword_env = 'P'\n", "mqtt.username", "no username"),
    ("[mqtt]\nhost = 'b'\ncert_file = 'c.pem'\n", "mqtt.cert_file/key_file", "needs both"),
    ("[mqtt]\nhost = 'b'\ntls = 'yes'\n", "mqtt.tls", "expected true or false"),
    ("[outbox]\nwhen_full = 'block'\n", "outbox.when_full", "must be one of"),
    ("[outbox]\nmax_rows = 0\n", "outbox.max_rows", "must be within"),
    ("[output]\nfile = ''\n", "output.file", "expected a non-empty string"),
    ("[privacy]\ncoarse_time_min = 10\n", "privacy.coarse_time_min", "must be one of 0, 1, 5, 15, 60"),
    ("[privacy]\npublish_crops = 1\n", "privacy.publish_crops", "expected true or false"),
    ("[privacy]\nzones = {lat_deg = 1}\n", "privacy.zones", "expected an array"),
    ("[[privacy.zones]]\nlat_deg = 95\nlon_deg = 0\nradius_m = 10\n", "privacy.zones[0].lat_deg", "must be within"),
    ("[[privacy.zones]]\nlat_deg = 1\nlon_deg = 0\n", "privacy.zones[0].radius_m", "required"),
    (
        "[[privacy.zones]]\nlat_deg = 1\nlon_deg = 0\nradius_m = 10\naction = 'hide'\n",
        "privacy.zones[0].action",
        "one of",
    ),
    (
        "[[privacy.zones]]\nlat_deg = 1\nlon_deg = 0\nradius_m = 10\naction = 'delay'\n",
        "privacy.zones[0].delay_h",
        "required",
    ),
    ("[[privacy.zones]]\nlat_deg = 1\nlon_deg = 0\nradius_m = 10\ndelay_h = 2\n", "privacy.zones[0].delay_h", "only"),
    (
        "[[privacy.zones]]\nlat_deg = 1\nlon_deg = 0\nradius_m = 10\ncolour = 'red'\n",
        "privacy.zones[0].colour",
        "unknown",
    ),
    ("camera = 3\n", "camera", "expected a table"),
    ("[camera\n", "", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "why"), MISTAKES, ids=[m[1] or "toml" for m in MISTAKES])
def test_each_mistake_is_one_error_naming_the_key(tmp_path: Path, text: str, key: str, why: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        load_config(path, state_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"sousveil.toml: {key}: " if key else "sousveil.toml: "), message
    assert why in message
    assert info.value.key == key
    assert "hunter2" not in message


def test_port_error_reads_as_documented(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"^sousveil\.toml: mqtt\.port: must be within 1\.\.65535, got 70000$"):
        load_config(write(tmp_path, "[mqtt]\nhost = 'b'\nport = 70000\n"))


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


# ---- sousveil check ----


def good_config(tmp_path: Path, mqtt: bool = False) -> Path:
    (tmp_path / "mqtt.pass").write_text("s3cret\n")
    text = f"""
[device]
id_file = "state/device-id"
[detector]
model = "{MODELS / "toy_centernet.tflite"}"
[output]
file = "out/sightings.jsonl"
[outbox]
path = "state/outbox.db"
"""
    if mqtt:
        text += "[mqtt]\nhost = 'localhost'\nusername = 'bike'\npassword_file = 'mqtt.pass'\n"
    return write(tmp_path, text)


def test_check_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(good_config(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["config", "model", "camera", "gps", "device", "output"]
    assert all(" ok" in line for line in lines), lines
    assert not (tmp_path / "out").exists()  # checking creates nothing


def test_check_good_mqtt_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(good_config(tmp_path, mqtt=True))]) == 0
    out = capsys.readouterr().out
    assert "outbox ok" in out and "mqtt ok (localhost:1883, password readable)" in out
    assert "s3cret" not in out


def test_check_reports_unreadable_password_and_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = good_config(tmp_path, mqtt=True)
    (tmp_path / "mqtt.pass").unlink()
    path.write_text(path.read_text().replace("toy_centernet.tflite", "missing.tflite"))
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert "config ok" in out
    assert "model: " in out and "missing.tflite" in out
    assert "mqtt: mqtt.password_file: cannot read" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_reports_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = good_config(tmp_path)
    (tmp_path / "out").mkdir(mode=0o500)
    try:
        assert main(["check", str(path)]) == 2
    finally:
        (tmp_path / "out").chmod(0o700)
    assert "output: cannot write in" in capsys.readouterr().out


def test_check_output_under_a_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = good_config(tmp_path)
    (tmp_path / "out").write_text("a file, not a folder")
    assert main(["check", str(path)]) == 2
    assert "is not a folder" in capsys.readouterr().out


def test_check_reports_a_missing_video_or_track(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = good_config(tmp_path)
    path.write_text(path.read_text() + "[camera]\npath = 'ride.mp4'\n[gps]\npath = 'ride.gpx'\n")
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"camera: video {tmp_path / 'ride.mp4'} not found" in out
    assert f"gps: gpx track {tmp_path / 'ride.gpx'} not found" in out
    (tmp_path / "ride.mp4").write_bytes(b"")
    (tmp_path / "ride.gpx").write_text("")
    assert main(["check", str(path)]) == 0


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[device]\n# Zürich\n".encode("latin-1"))
    assert main(["check", str(path)]) == 2
    assert (
        capsys.readouterr().out == "config: latin1.toml: not UTF-8 text (byte 12: invalid start byte);"
        " save the file as UTF-8\n"
    )
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config(path)


def test_check_broken_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[mqtt]\nhost = 'b'\nport = 70000\n")
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().out.strip() == "config: sousveil.toml: mqtt.port: must be within 1..65535, got 70000"


def test_check_as_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "firmware", "check", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    good = run(good_config(tmp_path))
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("config ok")
    bad = run(write(tmp_path, "[privacy]\ncoarse_time_min = 7\n", "bad.toml"))
    assert bad.returncode == 2
    assert "bad.toml: privacy.coarse_time_min: must be one of" in bad.stdout


def test_check_finds_the_service_credential_at_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off the service the credential path does not exist; the plain check reads its source."""
    from firmware import check

    source = tmp_path / "etc-sousveil"
    source.mkdir()
    (source / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setattr(check, "CREDENTIAL_SOURCE_DIR", source)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = good_config(tmp_path, mqtt=True)
    credential = "/run/credentials/sousveil.service/mqtt-password"
    path.write_text(path.read_text().replace("password_file = 'mqtt.pass'", f"password_file = '{credential}'"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"mqtt ok (localhost:1883, password readable; password from {source / 'mqtt-password'}" in out
    assert "s3cret" not in out
    (source / "mqtt-password").unlink()
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"mqtt: mqtt.password_file: no readable password: password_file: cannot read {credential}" in out
    assert f"the credential's source: cannot read {source / 'mqtt-password'}" in out
