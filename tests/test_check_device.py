"""`sousveil check --device CONFIG`: the live checks (firmware/check.py), one line each."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import fake_picamera2
import pytest
from conftest import FIXTURES, MODELS

from firmware import check as check_module
from firmware.check import check_broker, check_gps
from firmware.cli import build_parser, cmd_check
from firmware.config import load_config
from tests.mqtt_broker import Broker, broker_factory_fixture  # noqa: F401 - fixtures

SECRET = "s3cr3t-Pa55-do-not-print"


def config_file(tmp_path: Path, extra: str = "") -> Path:
    text = f"""
[device]
id_file = "state/device-id"
[detector]
model = "{MODELS / "toy_centernet.tflite"}"
[camera]
source = "picamera2"
width = 640
height = 480
[gps]
source = "gpx"
path = "{FIXTURES / "tracks" / "tiny.gpx"}"
[output]
file = "out/sightings.jsonl"
[outbox]
path = "state/outbox.db"
{extra}
"""
    path = tmp_path / "sousveil.toml"
    path.write_text(text, encoding="utf-8")
    return path


def check(path: Path, *extra: str, picamera2_module: Any = None) -> int:
    args = build_parser().parse_args(["check", "--device", *extra, str(path)])
    args.picamera2_module = picamera2_module if picamera2_module is not None else fake_picamera2.module()
    return cmd_check(args)


def device_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("ok: ", "FAIL: "))]


def test_fake_camera_model_and_gpx_are_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(config_file(tmp_path)) == 0
    lines = device_lines(capsys.readouterr().out)
    assert len(lines) == 3, lines
    model, camera, gps = lines
    assert model.startswith("ok: model ") and "blank 640x480 frame" in model and " ms" in model
    assert camera == "ok: camera (picamera2): one 640x480 frame"
    assert gps.startswith("ok: gps (gpx ") and "fixes" in gps


def test_no_camera_fails_with_the_reason_and_keeps_going(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(config_file(tmp_path), picamera2_module=fake_picamera2.module(cameras=False)) == 2
    lines = device_lines(capsys.readouterr().out)
    assert lines[1].startswith("FAIL: camera (picamera2): ")
    assert lines[2].startswith("ok: gps")  # the checks after a failure still run


def test_video_file_missing_and_empty_gpx_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(tmp_path)
    (tmp_path / "empty.gpx").write_text('<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"></gpx>')
    text = path.read_text().replace('source = "picamera2"', 'source = "video"\npath = "nothere.mp4"')
    path.write_text(text.replace(str(FIXTURES / "tracks" / "tiny.gpx"), str(tmp_path / "empty.gpx")))
    assert check(path) == 2
    lines = device_lines(capsys.readouterr().out)
    assert lines[1].startswith("FAIL: camera (video ") and "not found" in lines[1]
    assert lines[2].startswith("FAIL: gps (gpx): ") and "no position fixes" in lines[2]


def _broker_config(tmp_path: Path, port: int, password: str) -> Path:
    (tmp_path / "mqtt.pass").write_text(password + "\n", encoding="utf-8")
    return config_file(
        tmp_path,
        f"[mqtt]\nhost = '127.0.0.1'\nport = {port}\nusername = 'bike'\npassword_file = 'mqtt.pass'\n",
    )


def test_broker_with_the_right_password_is_ok(
    broker_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker: Broker = broker_factory(users={"bike": SECRET})
    assert check(_broker_config(tmp_path, broker.port, SECRET)) == 0
    out = capsys.readouterr().out
    assert f"ok: broker 127.0.0.1:{broker.port}: connected as bike" in out
    assert SECRET not in out


def test_broker_with_a_wrong_password_fails_with_the_reason(
    broker_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker: Broker = broker_factory(users={"bike": SECRET})
    assert check(_broker_config(tmp_path, broker.port, "wrong-password-xyz")) == 2
    out = capsys.readouterr().out
    line = device_lines(out)[-1]
    assert line.startswith(f"FAIL: broker 127.0.0.1:{broker.port}: the broker refused the connection: "), line
    assert "password" in line.lower() or "authori" in line.lower()
    assert "wrong-password-xyz" not in out and SECRET not in out


def test_broker_down_fails_within_the_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert check(_broker_config(tmp_path, port, SECRET), "--broker-timeout", "2") == 2
    line = device_lines(capsys.readouterr().out)[-1]
    assert line.startswith(f"FAIL: broker 127.0.0.1:{port}: "), line


class _FakeGpsd:
    """A one-connection gpsd stand-in on loopback that sends ``lines`` after the WATCH."""

    def __init__(self, lines: list[str]) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.lines = lines
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.recv(1024)
            for line in self.lines:
                conn.sendall(line.encode() + b"\n")
            with contextlib.suppress(OSError):
                conn.recv(1024)  # hold until the client goes

    def close(self) -> None:
        self.server.close()


def _gpsd_config(tmp_path: Path, port: int) -> Any:
    path = config_file(tmp_path)
    text = path.read_text().replace(
        f'source = "gpx"\npath = "{FIXTURES / "tracks" / "tiny.gpx"}"', f'source = "gpsd"\nport = {port}'
    )
    path.write_text(text)
    return load_config(path, state_dir=tmp_path)


def test_gpsd_fix_and_no_fix(tmp_path: Path) -> None:
    tpv = '{"class":"TPV","mode":3,"time":"2025-06-01T08:30:00.000Z","lat":52.52,"lon":13.405,"eph":4.5}'
    good = _FakeGpsd([tpv])
    try:
        ok, line = check_gps(_gpsd_config(tmp_path, good.port), wait_s=3.0)
    finally:
        good.close()
    assert ok and line == f"ok: gps (gpsd 127.0.0.1:{good.port}): 3D fix, accuracy 4.5 m", line
    nofix = _FakeGpsd(['{"class":"TPV","mode":1}'])
    try:
        ok, line = check_gps(_gpsd_config(tmp_path, nofix.port), wait_s=0.5)
    finally:
        nofix.close()
    assert not ok and "no fix yet after 0.5 s (mode NO_FIX" in line, line


def test_gpsd_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, line = check_gps(_gpsd_config(tmp_path, port), wait_s=0.5)
    assert not ok and line.startswith(f"FAIL: gps (gpsd 127.0.0.1:{port}): cannot reach gpsd: "), line


# ---- the MQTT password outside the service: /run/credentials/sousveil.service/ exists only while it runs ----

CREDENTIAL = "/run/credentials/sousveil.service/mqtt-password"


def _credential_config(tmp_path: Path, port: int, password_file: str = CREDENTIAL) -> Any:
    path = config_file(
        tmp_path, f"[mqtt]\nhost = '127.0.0.1'\nport = {port}\nusername = 'bike'\npassword_file = '{password_file}'\n"
    )
    return load_config(path, state_dir=tmp_path)


@pytest.fixture
def etc_sousveil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stands for /etc/sousveil, the unit's LoadCredential= source folder."""
    etc = tmp_path / "etc-sousveil"
    etc.mkdir()
    monkeypatch.setattr(check_module, "CREDENTIAL_SOURCE_DIR", etc)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert not Path(CREDENTIAL).exists(), "the service runs here: these tests assume it does not"
    return etc


def test_check_falls_back_to_the_credentials_source(broker_factory: Any, tmp_path: Path, etc_sousveil: Path) -> None:
    broker: Broker = broker_factory(users={"bike": SECRET})
    (etc_sousveil / "mqtt-password").write_text(SECRET + "\n", encoding="utf-8")
    ok, line = check_broker(_credential_config(tmp_path, broker.port))
    assert ok, line
    assert line.startswith(f"ok: broker 127.0.0.1:{broker.port}: connected as bike")
    assert (
        f"password from {etc_sousveil / 'mqtt-password'} (the credential's source; {CREDENTIAL} is not there)" in line
    )
    assert SECRET not in line


def test_check_uses_its_own_units_credential_first(
    broker_factory: Any, tmp_path: Path, etc_sousveil: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd-run -p LoadCredential=mqtt-password:/etc/sousveil/mqtt-password ... sousveil check --device"""
    broker: Broker = broker_factory(users={"bike": SECRET})
    creds = tmp_path / "run-u42.service"
    creds.mkdir()
    (creds / "mqtt-password").write_text(SECRET, encoding="utf-8")
    (etc_sousveil / "mqtt-password").write_text("stale-password\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    ok, line = check_broker(_credential_config(tmp_path, broker.port))
    assert ok and f"password from {creds / 'mqtt-password'} (this unit's credential;" in line, line


def test_check_says_which_password_files_it_could_not_read(tmp_path: Path, etc_sousveil: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, line = check_broker(_credential_config(tmp_path, port))
    assert not ok
    assert line.startswith(f"FAIL: broker 127.0.0.1:{port}: mqtt.password_file: no readable password: ")
    assert f"password_file: cannot read {CREDENTIAL}: No such file or directory" in line
    assert "it exists only while that unit runs" in line
    assert f"the credential's source: cannot read {etc_sousveil / 'mqtt-password'}: No such file or directory" in line
    assert "run check as root (sudo)" in line and f"LoadCredential=mqtt-password:{etc_sousveil}/mqtt-password" in line
    # install.sh's placeholder (and the unit's SetCredential= fallback, one newline) read as empty
    (etc_sousveil / "mqtt-password").write_text("\n", encoding="utf-8")
    ok, line = check_broker(_credential_config(tmp_path, port))
    assert not ok and f"{etc_sousveil / 'mqtt-password'} is empty" in line, line


def test_a_missing_plain_password_file_is_named(tmp_path: Path, etc_sousveil: Path) -> None:
    (etc_sousveil / "mqtt.pass").write_text(SECRET, encoding="utf-8")  # no fallback for a non-credential path
    ok, line = check_broker(_credential_config(tmp_path, 1883, password_file=str(tmp_path / "nope.pass")))
    assert not ok
    missing = tmp_path / "nope.pass"
    assert line == f"FAIL: broker 127.0.0.1:1883: mqtt.password_file: cannot read {missing}: No such file or directory"
