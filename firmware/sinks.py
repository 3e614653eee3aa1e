"""Where sightings go: the map broker over MQTT, or a local JSON-lines file (the default with no broker).

Every sink has the same four methods (``Sink``), so the pipeline does not care which one it has::

    sink = default_sink(mqtt=None, outbox_path=None, file_path=Path("rides/sightings.jsonl"),
                        device_id="3f9a1c0e5b7d2468")
    sink.submit(sighting)
    sink.close()
    export_geojson(Path("rides/sightings.jsonl"), Path("rides/sightings.geojson"))
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from firmware.outbox import Outbox
from firmware.sighting import Sighting, format_utc, from_json, to_json

log = logging.getLogger(__name__)


class Sink(Protocol):
    def submit(self, sighting: Sighting) -> bool:
        """Keep the sighting (durable on return); False when it was already kept."""
        ...

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything submitted is delivered; True when it is."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """One line for logs and ``sousveil check``: where sightings go (no secrets)."""
        ...


class FileSink:
    """Appends one sighting per line (the ``to_json`` bytes) to a JSON-lines file, fsynced per line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: each line is one write() at the end, even if another process appends too
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def submit(self, sighting: Sighting) -> bool:
        if self._fd is None:
            raise ValueError(f"file sink {self.path} is closed")
        line = to_json(sighting) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk; say so rather than leave half a line unnoticed
            raise OSError(f"{self.path}: wrote {written} of {len(line)} bytes (disk full?)")
        os.fsync(self._fd)
        return True

    def flush(self, timeout: float) -> bool:
        return True  # every submit is already on disk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def describe(self) -> str:
        return f"file {self.path} (JSON lines)"

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MqttSink:
    """Sightings to the map broker through the durable outbox (see firmware/mqtt.py)."""

    def __init__(self, publisher: Any) -> None:  # MqttPublisher; Any keeps paho out of this module's import
        self.publisher = publisher

    def submit(self, sighting: Sighting) -> bool:
        return bool(self.publisher.submit(sighting))

    def flush(self, timeout: float) -> bool:
        return bool(self.publisher.flush(timeout))

    def close(self) -> None:
        self.publisher.close()
        self.publisher.outbox.close()

    def describe(self) -> str:
        s = self.publisher.settings
        tls = "TLS" if s.uses_tls else "plain"
        return f"mqtt://{s.host}:{s.port} ({tls}, QoS 1, outbox {self.publisher.outbox.path})"


def default_sink(
    *,
    mqtt: Any | None,
    outbox_path: Path | None,
    file_path: Path,
    device_id: str,
    clock: Callable[[], float] = time.time,
) -> Sink:
    """MQTT when a broker is configured (``mqtt`` is an MqttSettings), else the file sink (the embedded default).

    The MQTT sink needs ``outbox_path``; its publisher is started here.
    """
    if mqtt is None:
        sink: Sink = FileSink(file_path)
    else:
        from firmware.mqtt import MqttPublisher  # paho only when a broker is configured

        if outbox_path is None:
            raise ValueError("an MQTT sink needs an outbox path (the durable queue)")
        outbox = Outbox(outbox_path)
        publisher = MqttPublisher(mqtt, outbox, device_id, clock)
        publisher.start()
        sink = MqttSink(publisher)
    log.info("sightings go to %s", sink.describe())
    return sink


def _feature(s: Sighting) -> dict[str, Any]:
    where = s.estimate if s.estimate is not None else s.observer
    props: dict[str, Any] = {
        "id": s.id,
        "device": s.device,
        "label": s.label,
        "score": s.score,
        "frames": s.frames,
        "first_seen_utc": format_utc(s.first_seen_utc),
        "last_seen_utc": format_utc(s.last_seen_utc),
        "located": "estimate" if s.estimate is not None else "observer",
        "sigma_m": s.estimate.sigma_m if s.estimate is not None else s.observer.acc_m,
        "direction_deg": s.direction_deg,
        "model": f"{s.model.name} {s.model.version}",
        **{f"osm:{k}": v for k, v in s.tags.items()},
    }
    return {
        "type": "Feature",
        "id": s.id,
        "geometry": {"type": "Point", "coordinates": [where.lon_deg, where.lat_deg]},  # GeoJSON: [lon, lat]
        "properties": props,
    }


def export_geojson(jsonl_path: Path, out_path: Path) -> int:
    """Write the sightings of a JSON-lines file as a GeoJSON FeatureCollection of points; returns how many.

    Each point is the camera estimate when there is one, else the rider's position
    (``properties.located`` says which). A repeated id is kept once; a line that is not a
    sighting (a torn last line after a power cut) is skipped with a warning.
    """
    features: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(jsonl_path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                s = from_json(line.rstrip(b"\n"))
            except ValueError as exc:
                log.warning("%s:%d: skipped, not a sighting: %s", jsonl_path, number, exc)
                continue
            if s.id in seen:
                continue
            seen.add(s.id)
            features.append(_feature(s))
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return len(features)
