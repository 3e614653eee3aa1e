"""``sousveil check --device``: the live checks, one line each, ``ok: ...`` or ``FAIL: ...``.

Each ``check_*`` function returns ``(ok, line)``; none raises for a failure it can name, and
none ever prints a password. ``run_device_checks`` prints the lines and returns how many failed.

Run it with the service stopped (the camera takes one user at a time). The service's MQTT
password is a systemd credential: ``/run/credentials/sousveil.service/mqtt-password`` exists
only while the service runs, so ``resolve_password_file`` falls back to the credential of the
unit ``check`` runs in (``$CREDENTIALS_DIRECTORY``, e.g. under ``systemd-run -p
LoadCredential=...``) and then to the credential's source, ``/etc/sousveil/mqtt-password``
(root only: ``sudo``). See docs/service.md.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector import DetectorError, Model, load_detector, load_model
from firmware.config import Config
from firmware.frames import FrameSourceError
from firmware.mqtt import MqttConfigError, MqttSettings
from firmware.position.fix import Fix, FixMode
from firmware.position.gpsd import GpsdClient

DEFAULT_GPS_WAIT_S = 5.0
DEFAULT_BROKER_TIMEOUT_S = 5.0
CREDENTIALS_ROOT = Path("/run/credentials")
"""systemd's per-unit credential folders: /run/credentials/<unit>/<id> (what %d expands to)."""
CREDENTIAL_SOURCE_DIR = Path("/etc/sousveil")
"""Where deploy/sousveil.service loads its credentials from:
``LoadCredential=mqtt-password:/etc/sousveil/mqtt-password``."""

Result = tuple[bool, str]


def _credential_id(path: Path) -> str | None:
    """``<id>`` when ``path`` is /run/credentials/<unit>/<id>, else None."""
    try:
        rel = path.relative_to(CREDENTIALS_ROOT)
    except ValueError:
        return None
    return rel.parts[1] if len(rel.parts) == 2 else None


def resolve_password_file(s: MqttSettings, environ: Mapping[str, str] | None = None) -> tuple[MqttSettings, str]:
    """``s`` with a ``password_file`` that can be read, and a note saying which file that is.

    The configured file is tried first. When it is a systemd credential path of the service
    (/run/credentials/<unit>/<id>) that cannot be read (the service is not running, or check
    runs in another unit), ``$CREDENTIALS_DIRECTORY/<id>`` and then the credential's source
    ``CREDENTIAL_SOURCE_DIR/<id>`` are tried. Raises MqttConfigError naming every file tried and
    why it could not be used. Without a ``password_file`` (or username) ``s`` comes back as it is.
    """
    if s.password_file is None or not s.username:
        return s, ""
    tried: list[str] = []

    def usable(path: Path, what: str) -> bool:
        try:
            dataclasses.replace(s, password_file=path).read_password()
        except MqttConfigError as err:
            reason = str(err).removeprefix("mqtt.password_file: ")
            tried.append(f"{what}: {reason}")
            return False
        return True

    configured = s.password_file
    if usable(configured, "password_file"):
        return s, f"password from {configured}"
    cred_id = _credential_id(configured)
    if cred_id is None:
        raise MqttConfigError(f"mqtt.password_file: {tried[0].removeprefix('password_file: ')}")
    tried[0] += " (a systemd credential: it exists only while that unit runs)"
    env = os.environ if environ is None else environ
    candidates: list[tuple[Path, str]] = []
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append((Path(env["CREDENTIALS_DIRECTORY"]) / cred_id, "this unit's credential"))
    candidates.append((CREDENTIAL_SOURCE_DIR / cred_id, "the credential's source"))
    for path, what in candidates:
        if path != configured and usable(path, what):
            note = f"password from {path} ({what}; {configured} is not there)"
            return dataclasses.replace(s, password_file=path), note
    raise MqttConfigError(
        "mqtt.password_file: no readable password: "
        + "; ".join(tried)
        + ". Stop the service and run check as root (sudo), or under systemd-run with"
        f" -p LoadCredential={cred_id}:{CREDENTIAL_SOURCE_DIR / cred_id} (docs/service.md)"
    )


def _ok(what: str) -> Result:
    return True, f"ok: {what}"


def _fail(what: str) -> Result:
    return False, f"FAIL: {what}"


def check_model(config: Config, model: Model | None = None) -> Result:
    """Run the model (``model``, else loaded from the config) once through the Detector on a
    blank frame of the camera's size."""
    try:
        if model is None:
            model = load_model(config.detector)
        detector = load_detector(config.detector, model)
        frame = np.zeros((config.camera.height, config.camera.width, 3), dtype=np.uint8)
        start = time.perf_counter()
        detector.detect(frame)
        ms = (time.perf_counter() - start) * 1000.0
    except (DetectorError, ValueError, OSError) as err:
        return _fail(f"model: {err}")
    return _ok(
        f"model {model.spec.name} {model.spec.version} ({model.runtime}) ran once on a blank"
        f" {config.camera.width}x{config.camera.height} frame in {ms:.1f} ms"
    )


def check_camera(config: Config, picamera2_module: Any = None) -> Result:
    """Open the frame source, take one frame, close it. ``picamera2_module`` stands for picamera2 (tests)."""
    from firmware.replay_cli import ReplayError
    from firmware.run_cli import open_frames

    cam = config.camera
    where = cam.source if cam.path is None else f"{cam.source} {cam.path}"
    try:
        with open_frames(config, datetime.now(UTC), picamera2_module) as source:
            frame = next(iter(source), None)
    except (FrameSourceError, ReplayError, OSError, ValueError, RuntimeError) as err:
        return _fail(f"camera ({where}): {err}")
    if frame is None:
        return _fail(f"camera ({where}): gave no frame")
    width, height = frame.size
    return _ok(f"camera ({where}): one {width}x{height} frame")


def _describe_fix(fix: Fix) -> str:
    acc = "unknown accuracy" if fix.acc_m is None else f"accuracy {fix.acc_m:.1f} m"
    return f"{fix.mode.name.replace('FIX_', '')} fix, {acc}"


def check_gps(config: Config, wait_s: float = DEFAULT_GPS_WAIT_S) -> Result:
    """gpsd: a TPV with mode >= 2 within ``wait_s``; a GPX/NMEA file: parses with >= 1 fix."""
    gps = config.gps
    if gps.source != "gpsd":
        from firmware.replay_cli import ReplayError, load_fixes

        if gps.path is None:
            return _fail(f"gps: gps.path is required with source = {gps.source!r}")
        try:
            fixes = load_fixes(gps.path)
        except ReplayError as err:
            return _fail(f"gps ({gps.source}): {err}")
        return _ok(f"gps ({gps.source} {gps.path}): {len(fixes)} fixes, first {_describe_fix(fixes[0])}")

    client = GpsdClient(gps.host, gps.port, backoff_s=0.2, max_backoff_s=1.0, read_timeout_s=0.2)
    got: list[Fix] = []
    done = threading.Event()

    def read() -> None:
        try:
            for fix in client.fixes():
                if fix.mode >= FixMode.FIX_2D:
                    got.append(fix)
                    break
        finally:
            done.set()

    thread = threading.Thread(target=read, name="check-gpsd", daemon=True)
    thread.start()
    done.wait(wait_s)
    state = client.state()  # before stopping: stopping closes the connection
    client.stop()
    thread.join(2.0)
    where = f"gps (gpsd {gps.host}:{gps.port})"
    if got:
        return _ok(f"{where}: {_describe_fix(got[0])}")
    if state.connected:
        sats = "" if state.satellites_used is None else f", {state.satellites_used} satellites used"
        return _fail(f"{where}: no fix yet after {wait_s:g} s (mode {state.mode.name}{sats})")
    return _fail(f"{where}: cannot reach gpsd: {state.last_error}")


def check_broker(config: Config, timeout_s: float = DEFAULT_BROKER_TIMEOUT_S) -> Result | None:
    """Connect to the ``[mqtt]`` broker with the configured credentials and TLS, then disconnect.

    None when there is no ``[mqtt]``. A separate client id (``<client_id>-check``) so a running
    service's session is not taken over.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from firmware.mqtt import configure_auth

    s = config.mqtt
    if s is None:
        return None
    where = f"broker {s.host}:{s.port}"
    try:
        s, password_note = resolve_password_file(s)
    except MqttConfigError as err:
        return _fail(f"{where}: {err}")
    client_id = f"{s.client_id}-check" if s.client_id else ""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    outcome: list[str | None] = []  # None: accepted; a string: why not
    done = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome.append(f"the broker refused the connection: {reason}" if reason.is_failure else None)
        done.set()

    def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        outcome.append(f"cannot connect: {exc}" if exc is not None else "cannot connect")
        done.set()

    try:
        configure_auth(client, s)
    except (MqttConfigError, ValueError, OSError) as err:  # ssl.SSLError is an OSError
        return _fail(f"{where}: {err}")
    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.reconnect_delay_set(60, 60)  # one try within the timeout
    started = time.monotonic()
    try:
        client.connect_async(s.host, s.port, keepalive=max(5, int(timeout_s) + 1))
        client.loop_start()
        done.wait(timeout_s)
    finally:
        if outcome and outcome[0] is None:
            client.disconnect()
        client.loop_stop()
    ms = (time.monotonic() - started) * 1000.0
    if not outcome:
        return _fail(f"{where}: no answer within {timeout_s:g} s")
    if outcome[0] is not None:
        return _fail(f"{where}: {outcome[0]}")
    who = f" as {s.username}" if s.username else ""
    tls = ", TLS" if s.uses_tls else ""
    note = f" ({password_note})" if password_note else ""
    return _ok(f"{where}: connected{who}{tls} in {ms:.0f} ms and disconnected{note}")


def run_device_checks(
    config: Config,
    *,
    gps_wait_s: float = DEFAULT_GPS_WAIT_S,
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
    picamera2_module: Any = None,
    model: Model | None = None,
) -> int:
    """Print one line per live check; the number that failed. ``model``: one already loaded."""
    failed = 0
    checks: list[Callable[[], Result | None]] = [
        lambda: check_model(config, model),
        lambda: check_camera(config, picamera2_module),
        lambda: check_gps(config, gps_wait_s),
        lambda: check_broker(config, broker_timeout_s),
    ]
    for check in checks:
        result = check()
        if result is None:
            continue
        ok, line = result
        print(line, flush=True)
        failed += not ok
    return failed
