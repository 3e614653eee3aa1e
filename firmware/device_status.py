"""The retained status message of ``sousveil run``: one JSON object every few seconds.

Pure functions: the readings come in as arguments and the two Raspberry Pi sysfs files
(CPU temperature, firmware throttling flags) are read from injectable paths, so the tests
use files in a temporary folder. A file that is missing or unreadable gives ``None`` (not a
Pi, or a kernel without that node). Published with ``MqttPublisher.publish_status`` when the
sink is MQTT (it adds ``device``, ``state`` and ``time_s``); see docs/service.md::

    status = device_status(fps=9.8, inference_ms=61.0, gps=None, outbox_depth=0, paused=False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware.position.gpsd import GpsdState

THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

# the bits of the firmware's get_throttled value (as `vcgencmd get_throttled` prints them)
THROTTLED_BITS: dict[int, str] = {
    0: "under_voltage",
    1: "arm_freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "arm_freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_temp_c(path: Path = THERMAL_PATH) -> float | None:
    """The CPU temperature in °C (the file holds millidegrees), None when not readable."""
    text = _read_text(path)
    if not text:
        return None
    try:
        return int(text) / 1000.0
    except ValueError:
        return None


def throttled(path: Path = THROTTLED_PATH) -> int | None:
    """The firmware's throttling bit field (the file holds hex), None when not readable."""
    text = _read_text(path)
    if not text:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def throttled_flags(value: int) -> list[str]:
    """The names of the bits set in a get_throttled value, lowest bit first."""
    return [name for bit, name in sorted(THROTTLED_BITS.items()) if value & (1 << bit)]


def device_status(
    *,
    fps: float | None,
    inference_ms: float | None,
    gps: GpsdState | None,
    outbox_depth: int | None,
    paused: bool,
    frames: int = 0,
    skipped: int = 0,
    published: int = 0,
    outbox_overflowed: int = 0,
    outbox_dropped: int = 0,
    camera_dropped: int | None = None,
    camera_clock_steps: int | None = None,
    thermal_path: Path = THERMAL_PATH,
    throttled_path: Path = THROTTLED_PATH,
) -> dict[str, Any]:
    """The status object (JSON-ready). ``gps`` None: positions come from a file, not gpsd.

    ``gps_acc_m`` is the last fix's horizontal accuracy (gpsd's ``eph``; it stays with the last
    fix when the fix is lost, so read it with ``gps_mode`` and ``gps_fix_age_s``);
    ``gps_sats_used`` the satellites used in the solution (gpsd's SKY), None until gpsd sends one.
    ``outbox_overflowed``: sightings this run that the full outbox refused (kept in its overflow
    file); ``outbox_dropped``: sightings this run's full outbox dropped (``when_full = "drop_oldest"``).
    ``camera_dropped``: frames the Pi camera dropped this run (the pipeline fell behind);
    ``camera_clock_steps``: wall-clock steps its frame times followed (chrony setting the clock);
    both None for a recorded source.
    """
    throttle = throttled(throttled_path)
    return {
        "fps": None if fps is None else round(fps, 2),
        "inference_ms": None if inference_ms is None else round(inference_ms, 1),
        "frames": frames,
        "skipped_paused": skipped,
        "published": published,
        "paused": paused,
        "gps_mode": None if gps is None else int(gps.mode),
        "gps_connected": None if gps is None else gps.connected,
        "gps_fix_age_s": None if gps is None or gps.last_fix_age_s is None else round(gps.last_fix_age_s, 1),
        "gps_acc_m": None if gps is None or gps.last_acc_m is None else round(gps.last_acc_m, 1),
        "gps_sats_used": None if gps is None else gps.satellites_used,
        "outbox_depth": outbox_depth,
        "outbox_overflowed": outbox_overflowed,
        "outbox_dropped": outbox_dropped,
        "camera_dropped": camera_dropped,
        "camera_clock_steps": camera_clock_steps,
        "cpu_temp_c": cpu_temp_c(thermal_path),
        "throttled": throttle,
        "throttled_flags": None if throttle is None else throttled_flags(throttle),
    }


def status_line(status: dict[str, Any]) -> str:
    """A short one-line form for systemd's STATUS= (``systemctl status``)."""
    parts = ["paused" if status.get("paused") else "running"]
    if status.get("fps") is not None:
        parts.append(f"{status['fps']:.1f} fps")
    if status.get("inference_ms") is not None:
        parts.append(f"{status['inference_ms']:.0f} ms/frame")
    parts.append(f"{status.get('published', 0)} sightings")
    if status.get("gps_mode") is not None:
        gps = f"gps mode {status['gps_mode']}"
        if status.get("gps_mode", 0) >= 2 and status.get("gps_acc_m") is not None:
            gps += f" ±{status['gps_acc_m']:.0f} m"
        if status.get("gps_sats_used") is not None:
            gps += f" {status['gps_sats_used']} sats"
        parts.append(gps)
    if status.get("outbox_depth"):
        parts.append(f"{status['outbox_depth']} queued")
    if status.get("outbox_overflowed"):
        parts.append(f"outbox full: {status['outbox_overflowed']} in its overflow file")
    if status.get("outbox_dropped"):
        parts.append(f"outbox full: {status['outbox_dropped']} dropped")
    if status.get("camera_dropped"):
        parts.append(f"camera dropped {status['camera_dropped']} frames")
    if status.get("cpu_temp_c") is not None:
        parts.append(f"{status['cpu_temp_c']:.0f}°C")
    return ", ".join(parts)
