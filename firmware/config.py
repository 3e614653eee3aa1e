"""The service's one config file (TOML), parsed strictly into frozen dataclasses.

Every table and key is known; a wrong type, a value out of range or an unknown key is a
:class:`ConfigFileError` with one line naming the file and the key path, e.g.
``sousveil.toml: mqtt.port: must be within 1..65535, got 70000``. An empty file (or none)
is a working config: replay of a recorded ride into a JSON-lines file under the state dir.
Relative paths are taken from the config file's folder. See docs/config.md::

    config = load_config(Path("/etc/sousveil/sousveil.toml"))
    config.mqtt  # None: sightings go to config.output.file
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from detector.config import DetectorConfig, parse_detector_config
from detector.errors import ConfigError
from firmware.camera_pi import FOCUS_MODES, CameraError, Focus, PiCameraSettings
from firmware.geometry import CameraModel
from firmware.gpio import GpioSettings
from firmware.mqtt import DEFAULT_PREFIX, MqttConfigError, MqttSettings
from firmware.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, WhenFull
from firmware.position.gpsd import DEFAULT_HOST as GPSD_HOST
from firmware.position.gpsd import DEFAULT_PORT as GPSD_PORT
from firmware.sighting import DEVICE_ID
from firmware.tracker import TrackerConfig

CameraSource = Literal["picamera2", "video", "images"]
GpsSource = Literal["gpsd", "gpx", "nmea"]
ZoneAction = Literal["drop", "delay"]

CAMERA_SOURCES: tuple[CameraSource, ...] = ("picamera2", "video", "images")
GPS_SOURCES: tuple[GpsSource, ...] = ("gpsd", "gpx", "nmea")
ZONE_ACTIONS: tuple[ZoneAction, ...] = ("drop", "delay")
WHEN_FULL: tuple[WhenFull, ...] = ("refuse", "drop_oldest")
COARSE_TIME_MIN = (0, 1, 5, 15, 60)
MAX_ZONES = 64


class ConfigFileError(ValueError):
    """The config file cannot work: one line, ``<file>: <key path>: <why>``."""

    def __init__(self, source: str, key: str, why: str) -> None:
        super().__init__(f"{source}: {key}: {why}" if key else f"{source}: {why}")
        self.source = source
        self.key = key
        self.why = why


def default_state_dir() -> Path:
    """Where the device keeps its id, outbox and sightings: ``$SOUSVEIL_STATE_DIR``, else
    ``$XDG_STATE_HOME/sousveil``, else ``~/.local/state/sousveil``."""
    explicit = os.environ.get("SOUSVEIL_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "sousveil"


# ---- the sections ----


@dataclass(frozen=True)
class DeviceSettings:
    """``id_file`` keeps the pseudonymous device id; a new one is drawn every ``rotate_days`` (0: never).

    ``id`` (16 lowercase hex digits) fixes the id instead, for a broker whose account is bound to it
    (``sousveil broker add-device``); then ``id_file`` is not used and ``rotate_days`` must be 0.
    """

    id_file: Path
    rotate_days: int = 0
    id: str | None = None


_PI_CAMERA = PiCameraSettings()  # the Pi camera's defaults are [camera]'s


@dataclass(frozen=True)
class CameraSettings:
    """Where frames come from and the camera's geometry. ``path`` is the video file or image
    folder to replay (None: named on the command line); picamera2 needs none."""

    source: CameraSource = "video"
    path: Path | None = None
    width: int = _PI_CAMERA.width
    height: int = _PI_CAMERA.height
    fps: float = _PI_CAMERA.fps
    hfov_deg: float = 66.0
    yaw_deg: float = 0.0
    max_exposure_us: int = _PI_CAMERA.max_exposure_us
    focus: Focus = _PI_CAMERA.focus
    lens_position_dioptre: float = _PI_CAMERA.lens_position_dioptre

    def camera_model(self) -> CameraModel:
        return CameraModel(hfov_deg=self.hfov_deg, yaw_deg=self.yaw_deg, width_px=self.width)

    def picamera2(self) -> PiCameraSettings:
        """How the Pi camera is driven; raises ``CameraError`` for settings it cannot take."""
        return PiCameraSettings(
            width=self.width,
            height=self.height,
            fps=self.fps,
            max_exposure_us=self.max_exposure_us,
            focus=self.focus,
            lens_position_dioptre=self.lens_position_dioptre,
        )


@dataclass(frozen=True)
class GpioConfig:
    """``[gpio]``: the rider's LED, buzzer and button (BCM pins); off unless ``enabled``.
    ``buzzer_pin`` None (``-1`` in the file) means no buzzer is fitted."""

    enabled: bool = False
    led_pin: int = 17
    buzzer_pin: int | None = 27
    button_pin: int = 22
    long_press_s: float = 3.0

    def settings(self) -> GpioSettings:
        return GpioSettings(
            led_pin=self.led_pin, buzzer_pin=self.buzzer_pin, button_pin=self.button_pin, long_press_s=self.long_press_s
        )


@dataclass(frozen=True)
class GpsSettings:
    """Where positions come from: gpsd at ``host``:``port``, or a GPX/NMEA file at ``path``
    (None: named on the command line)."""

    source: GpsSource = "gpx"
    host: str = GPSD_HOST
    port: int = GPSD_PORT
    path: Path | None = None
    max_gap_s: float = 2.0


@dataclass(frozen=True)
class OutboxSettings:
    """The durable MQTT queue (firmware/outbox.py) and its size policy."""

    path: Path
    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = DEFAULT_MAX_BYTES
    when_full: WhenFull = "refuse"


@dataclass(frozen=True)
class OutputSettings:
    """The JSON-lines file the file sink appends to (used when there is no ``[mqtt]``)."""

    file: Path


@dataclass(frozen=True)
class PrivacyZone:
    """A circle around a place (home, work): sightings inside are dropped or delayed ``delay_h`` hours."""

    lat_deg: float
    lon_deg: float
    radius_m: float
    action: ZoneAction = "drop"
    delay_h: float = 0.0


@dataclass(frozen=True)
class PrivacySettings:
    """Zones, time coarsening (minutes, 0: exact) and whether crops may be published."""

    zones: tuple[PrivacyZone, ...] = ()
    coarse_time_min: int = 0
    publish_crops: bool = False
    hold_file: Path | None = None
    """Where sightings in delay zones wait (SQLite); None: in memory only (tests, tools)."""


@dataclass(frozen=True)
class Config:
    """The whole config; ``mqtt`` None means sightings go to the file sink (``output.file``)."""

    path: Path | None
    device: DeviceSettings
    camera: CameraSettings
    detector: DetectorConfig
    tracker: TrackerConfig
    gps: GpsSettings
    mqtt: MqttSettings | None
    outbox: OutboxSettings
    output: OutputSettings
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    gpio: GpioConfig = field(default_factory=GpioConfig)


# ---- strict readers ----


class _Reader:
    """Reads one table: every read names its key; ``done`` refuses keys nobody read."""

    def __init__(self, source: str, where: str, data: Any, base_dir: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigFileError(source, where, f"expected a table, got {_kind(data)}")
        self.source, self.where, self.data, self.base_dir = source, where, data, base_dir
        self.known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def error(self, name: str, why: str) -> ConfigFileError:
        return ConfigFileError(self.source, self.key(name), why)

    def raw(self, name: str) -> Any:
        self.known.add(name)
        return self.data.get(name)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_kind(value)} {value!r}")
        if not lo <= value <= hi:
            raise self.error(name, f"must be within {lo}..{hi}, got {value}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
        value = self.raw(name)
        if value is None:
            return default
        return _number(self, name, value, lo, hi, lo_open=lo_open)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_kind(value)} {value!r}")
        return value

    def string(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(name, f"expected a non-empty string, got {_kind(value)} {value!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return cast(str, value)

    def path(self, name: str, default: Path | None) -> Path | None:
        text = self.string(name, None)
        if text is None:
            return default
        if "\0" in text:
            raise self.error(name, "expected a path, got a string with a NUL byte")
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def done(self) -> None:
        extra = sorted(set(self.data) - self.known)
        if extra:
            known = ", ".join(sorted(self.known))
            raise ConfigFileError(
                self.source, self.key(extra[0]), f"unknown key (known keys of [{self.where}]: {known})"
            )


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def _number(r: _Reader, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise r.error(name, f"expected a number, got {_kind(value)} {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        span = f"({lo:g}, {hi:g}]" if lo_open else f"{lo:g}..{hi:g}"
        raise r.error(name, f"must be within {span}, got {value:g}")
    return float(value)


TABLES = ("device", "camera", "detector", "tracker", "gps", "mqtt", "outbox", "output", "privacy", "gpio")


def _device(r: _Reader, state: Path) -> DeviceSettings:
    fixed = r.string("id", None)
    if fixed is not None and not DEVICE_ID.fullmatch(fixed):
        raise r.error("id", f"expected 16 lowercase hex digits (from 'sousveil broker add-device'), got {fixed!r}")
    out = DeviceSettings(
        id_file=cast(Path, r.path("id_file", state / "device-id")),
        rotate_days=r.integer("rotate_days", 0, 0, 3650),
        id=fixed,
    )
    if fixed is not None and out.rotate_days > 0:
        raise ConfigFileError(
            r.source,
            "device.id/rotate_days",
            "a fixed id cannot rotate; set rotate_days = 0 (on an accounts broker rotate by re-enrolling the device)",
        )
    r.done()
    return out


def _camera(r: _Reader) -> CameraSettings:
    defaults = CameraSettings()
    source = cast(CameraSource, r.choice("source", defaults.source, CAMERA_SOURCES))
    path = r.path("path", defaults.path)
    if source == "picamera2" and path is not None:
        raise r.error("path", "the picamera2 source takes no path (it is for 'video' and 'images')")
    out = CameraSettings(
        source=source,
        path=path,
        width=r.integer("width", defaults.width, 16, 8192),
        height=r.integer("height", defaults.height, 16, 8192),
        fps=r.number("fps", defaults.fps, 0.0, 120.0, lo_open=True),
        hfov_deg=r.number("hfov_deg", defaults.hfov_deg, 1.0, 178.0),
        yaw_deg=r.number("yaw_deg", defaults.yaw_deg, -180.0, 360.0),
        max_exposure_us=r.integer("max_exposure_us", defaults.max_exposure_us, 1, 1_000_000),
        focus=cast(Focus, r.choice("focus", defaults.focus, FOCUS_MODES)),
        lens_position_dioptre=r.number("lens_position_dioptre", defaults.lens_position_dioptre, 0.0, 32.0),
    )
    try:
        out.picamera2()  # the camera's own checks (the shutter cap fits in one frame), for every source
    except CameraError as err:  # "<key>: <why>"
        key, _, why = str(err).partition(": ")
        if key in r.known and why:
            raise r.error(key, why) from None
        raise ConfigFileError(r.source, r.where, str(err)) from None
    r.done()
    return out


def _gpio(r: _Reader) -> GpioConfig:
    defaults = GpioConfig()
    buzzer = r.integer("buzzer_pin", -1 if defaults.buzzer_pin is None else defaults.buzzer_pin, -1, 27)
    out = GpioConfig(
        enabled=r.boolean("enabled", defaults.enabled),
        led_pin=r.integer("led_pin", defaults.led_pin, 0, 27),
        buzzer_pin=None if buzzer == -1 else buzzer,
        button_pin=r.integer("button_pin", defaults.button_pin, 0, 27),
        long_press_s=r.number("long_press_s", defaults.long_press_s, 0.0, 60.0, lo_open=True),
    )
    try:
        out.settings()
    except ValueError as err:
        raise r.error("button_pin", str(err)) from None
    r.done()
    return out


def _tracker(r: _Reader) -> TrackerConfig:
    defaults = TrackerConfig()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrackerConfig):
        value = r.raw(f.name)
        if value is None:
            continue
        kind = str(f.type)
        if kind == "int":
            values[f.name] = r.integer(f.name, 0, 1, 1_000_000)
        elif kind == "float":
            values[f.name] = _number(r, f.name, value, 0.0, 1e6)
        else:  # foe_norm: two fractions
            if not isinstance(value, list) or len(value) != 2:
                raise r.error(f.name, f"expected [x, y] as fractions of the frame, got {value!r}")
            values[f.name] = tuple(_number(r, f.name, v, 0.0, 1.0) for v in value)
    r.done()
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as err:  # TrackerConfig's own checks: "<name> must be ..."
        name, _, why = str(err).partition(" ")
        raise r.error(name, why) from None


def _gps(r: _Reader) -> GpsSettings:
    source = cast(GpsSource, r.choice("source", "gpx", GPS_SOURCES))
    host = cast(str, r.string("host", GPSD_HOST))
    port = r.integer("port", GPSD_PORT, 1, 65535)
    path = r.path("path", None)
    if source == "gpsd" and path is not None:
        raise r.error("path", "the gpsd source takes host and port, not a path")
    out = GpsSettings(
        source=source, host=host, port=port, path=path, max_gap_s=r.number("max_gap_s", 2.0, 0.0, 600.0, lo_open=True)
    )
    r.done()
    return out


def _mqtt(r: _Reader) -> MqttSettings:
    if "password" in r.data:
        raise r.error("password", "a password does not belong in the config file; use password_file or password_env")
    host = r.string("host", None)
    if host is None:
        raise r.error("host", "required: the broker's host name (leave out [mqtt] to write sightings to a file)")
    kwargs: dict[str, Any] = {
        "host": host,
        "port": r.integer("port", 1883, 1, 65535),
        "username": r.string("username", None),
        "password_file": r.path("password_file", None),
        "password_env": r.string("password_env", None),
        "tls": r.boolean("tls", False),
        "ca_file": r.path("ca_file", None),
        "cert_file": r.path("cert_file", None),
        "key_file": r.path("key_file", None),
        "tls_insecure": r.boolean("tls_insecure", False),
        "topic_prefix": r.string("topic_prefix", DEFAULT_PREFIX),
        "keepalive_s": r.integer("keepalive_s", 30, 1, 65535),
    }
    r.done()
    try:
        return MqttSettings(**kwargs)
    except MqttConfigError as err:  # "mqtt.<key>: <why>"
        key, _, why = str(err).partition(": ")
        raise ConfigFileError(r.source, key, why) from None


def _outbox(r: _Reader, state: Path) -> OutboxSettings:
    out = OutboxSettings(
        path=cast(Path, r.path("path", state / "outbox.db")),
        max_rows=r.integer("max_rows", DEFAULT_MAX_ROWS, 1, 100_000_000),
        max_bytes=r.integer("max_bytes", DEFAULT_MAX_BYTES, 4096, 1 << 40),
        when_full=cast(WhenFull, r.choice("when_full", "refuse", WHEN_FULL)),
    )
    r.done()
    return out


def _output(r: _Reader, state: Path) -> OutputSettings:
    out = OutputSettings(file=cast(Path, r.path("file", state / "sightings.jsonl")))
    r.done()
    return out


def _zone(r: _Reader) -> PrivacyZone:
    action = cast(ZoneAction, r.choice("action", "drop", ZONE_ACTIONS))
    for name in ("lat_deg", "lon_deg", "radius_m"):
        if r.data.get(name) is None:
            raise r.error(name, "required")
    delay_h = r.number("delay_h", 0.0, 0.0, 24.0 * 365, lo_open=True) if "delay_h" in r.data else 0.0
    if action == "delay" and delay_h == 0.0:
        raise r.error("delay_h", "required with action = 'delay' (hours to hold sightings)")
    if action == "drop" and "delay_h" in r.data:
        raise r.error("delay_h", "only for action = 'delay' (a 'drop' zone publishes nothing)")
    zone = PrivacyZone(
        lat_deg=r.number("lat_deg", 0.0, -90.0, 90.0),
        lon_deg=r.number("lon_deg", 0.0, -180.0, 180.0),
        radius_m=r.number("radius_m", 0.0, 1.0, 100_000.0),
        action=action,
        delay_h=delay_h,
    )
    r.done()
    return zone


def _privacy(r: _Reader, state: Path) -> PrivacySettings:
    raw = r.raw("zones")
    zones: list[PrivacyZone] = []
    if raw is not None:
        if not isinstance(raw, list):
            raise r.error("zones", f"expected an array of tables ([[privacy.zones]]), got {_kind(raw)}")
        if len(raw) > MAX_ZONES:
            raise r.error("zones", f"at most {MAX_ZONES} zones, got {len(raw)}")
        zones = [_zone(_Reader(r.source, f"{r.where}.zones[{i}]", z, r.base_dir)) for i, z in enumerate(raw)]
    coarse = r.raw("coarse_time_min")
    if coarse is None:
        coarse = 0
    elif isinstance(coarse, bool) or coarse not in COARSE_TIME_MIN:
        raise r.error("coarse_time_min", f"must be one of {', '.join(map(str, COARSE_TIME_MIN))}, got {coarse!r}")
    out = PrivacySettings(
        zones=tuple(zones),
        coarse_time_min=int(coarse),
        publish_crops=r.boolean("publish_crops", False),
        hold_file=r.path("hold_file", state / "privacy-hold.db"),
    )
    r.done()
    return out


# ---- entry points ----


def parse_config(data: dict[str, Any], source: str | Path, *, state_dir: Path | None = None) -> Config:
    """Parse a TOML document (already read). ``source`` names it in errors; relative paths are
    taken from its folder when it is a path (else from the working directory)."""
    path = Path(source) if isinstance(source, Path) else None
    name = path.name if path is not None else str(source)
    base_dir = path.resolve().parent if path is not None else Path.cwd()
    state = state_dir if state_dir is not None else default_state_dir()
    extra = sorted(set(data) - set(TABLES))
    if extra:
        raise ConfigFileError(name, extra[0], f"unknown table (known tables: {', '.join(TABLES)})")

    def reader(table: str) -> _Reader:
        return _Reader(name, table, data.get(table, {}), base_dir)

    try:
        detector = parse_detector_config(data.get("detector", {}), where="detector", base_dir=base_dir)
    except ConfigError as err:  # "detector.<key>: <why>"
        key, _, why = str(err).partition(": ")
        raise ConfigFileError(name, key, why) from None
    return Config(
        path=path,
        device=_device(reader("device"), state),
        camera=_camera(reader("camera")),
        detector=detector,
        tracker=_tracker(reader("tracker")),
        gps=_gps(reader("gps")),
        mqtt=_mqtt(reader("mqtt")) if "mqtt" in data else None,
        outbox=_outbox(reader("outbox"), state),
        output=_output(reader("output"), state),
        privacy=_privacy(reader("privacy"), state),
        gpio=_gpio(reader("gpio")),
    )


def load_config(path: Path | None, *, state_dir: Path | None = None) -> Config:
    """Read and parse the config file; None means no file (all defaults)."""
    if path is None:
        return parse_config({}, "defaults", state_dir=state_dir)
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigFileError(str(path), "", f"cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(path.name, "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigFileError(
            path.name, "", f"not UTF-8 text (byte {err.start}: {err.reason}); save the file as UTF-8"
        ) from None
    return parse_config(data, path, state_dir=state_dir)
