"""Where sightings go: the map broker over MQTT, or a local JSON-lines file (the default with no broker).

Every sink has the same four methods (``Sink``), so the pipeline does not care which one it has
(firmware/replay_cli.py ``open_sink`` picks one from the config)::

    sink = FileSink(Path("rides/sightings.jsonl"))
    sink.submit(sighting)
    sink.close()
    export_geojson(Path("rides/sightings.jsonl"), Path("rides/sightings.geojson"))
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from firmware.files import append_line, write_all, write_atomic
from firmware.outbox import OutboxFull
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


def rewrite_lines(path: Path, lines: list[bytes]) -> None:
    """Replace ``path`` atomically with ``lines`` (removed when there are none)."""
    if not lines:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, b"".join(line + b"\n" for line in lines))


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
        write_all(self._fd, to_json(sighting) + b"\n", self.path)  # a full disk raises, no torn line unseen
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
    """Sightings to the map broker through the durable outbox (see firmware/mqtt.py).

    A sighting the outbox refuses (full, with ``when_full = "refuse"``, or its disk full) is
    not lost and does not stop the ride: it goes to the ``overflow`` file (JSON lines, fsynced)
    and is counted in ``overflowed``; the next sink opened on the same outbox moves the
    overflow back into the outbox while it has rows to spare (``requeued``; never so far that
    a ``drop_oldest`` outbox would drop a queued sighting for it). When even the
    overflow file cannot be written (the disk is full), the sighting stays in memory and each
    later submit and flush tries again; ``unsaved`` is what is still only in memory.
    """

    def __init__(self, publisher: Any, overflow: Path | None = None) -> None:  # publisher: MqttPublisher
        self.publisher = publisher
        self.overflow = overflow
        self.overflowed = 0
        self.requeued = 0
        self._unsaved: list[Sighting] = []
        if overflow is not None:
            self.requeued = self._requeue()

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    def submit(self, sighting: Sighting) -> bool:
        self._retry_unsaved()
        return self._store(sighting)

    def _store(self, sighting: Sighting) -> bool:
        try:
            return bool(self.publisher.submit(sighting))
        except OutboxFull as err:
            if self.overflow is None:
                raise
            try:
                append_line(self.overflow, to_json(sighting))
            except OSError as write_err:
                self._unsaved.append(sighting)
                log.error(
                    "sighting %s: the outbox refused it (%s) and %s cannot be written (%s); kept in memory,"
                    " retried with every sighting",
                    sighting.id,
                    err,
                    self.overflow,
                    write_err,
                )
                return True
            self.overflowed += 1
            log.warning("sighting %s: the outbox refused it (%s); written to %s", sighting.id, err, self.overflow)
            return True

    def _retry_unsaved(self) -> None:
        waiting, self._unsaved = self._unsaved, []
        for s in waiting:
            self._store(s)

    def _requeue(self) -> int:
        """Move what an earlier run spilled into the overflow file back into the outbox, as far as it fits."""
        assert self.overflow is not None
        try:
            lines = self.overflow.read_bytes().splitlines()
        except FileNotFoundError:
            return 0
        except OSError as err:
            log.error("cannot read the outbox overflow %s: %s", self.overflow, err)
            return 0
        moved = 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                sighting = from_json(line)
            except ValueError as err:
                log.error("%s line %d: not a sighting (%s); left in the file", self.overflow, i + 1, err)
                continue
            if not self._has_room():
                break
            try:
                self.publisher.submit(sighting)
            except OutboxFull:
                break
            lines[i] = b""
            moved += 1
        if moved:
            rest = [line for line in lines if line.strip()]
            try:
                rewrite_lines(self.overflow, rest)
            except OSError as err:  # the moved ones stay in the file too: sent twice, same ids
                log.error("cannot rewrite %s: %s; its sightings may be sent twice (same ids)", self.overflow, err)
            log.info("moved %d sightings from %s back into the outbox", moved, self.overflow)
        return moved

    def _has_room(self) -> bool:
        """Room for one more row without the outbox refusing or (``drop_oldest``) dropping one."""
        outbox = self.publisher.outbox
        return bool(outbox.stats().depth < outbox.max_rows)

    def flush(self, timeout: float) -> bool:
        self._retry_unsaved()
        return bool(self.publisher.flush(timeout)) and not self._unsaved and not self.overflowed

    def close(self) -> None:
        self._retry_unsaved()
        if self._unsaved:
            log.error(
                "%d sightings could be stored neither in the outbox nor in %s (disk full?): they are lost",
                len(self._unsaved),
                self.overflow,
            )
        self.publisher.close()
        self.publisher.outbox.close()

    def describe(self) -> str:
        s = self.publisher.settings
        tls = "TLS" if s.uses_tls else "plain"
        return f"mqtt://{s.host}:{s.port} ({tls}, QoS 1, outbox {self.publisher.outbox.path})"


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


def write_geojson(sightings: Iterable[Sighting], out_path: Path) -> int:
    """Write ``sightings`` as a GeoJSON FeatureCollection of points (atomically); returns how many.

    Each point is the camera estimate when there is one, else the rider's position
    (``properties.located`` says which). A repeated id is kept once.
    """
    features: list[dict[str, Any]] = []
    seen: set[str] = set()
    for s in sightings:
        if s.id not in seen:
            seen.add(s.id)
            features.append(_feature(s))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return len(features)


def read_jsonl(jsonl_path: Path) -> Iterator[Sighting]:
    """The sightings of a JSON-lines file; a line that is not a sighting (a torn last line after
    a power cut) is skipped with a warning."""
    with open(jsonl_path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield from_json(line.rstrip(b"\n"))
            except ValueError as exc:
                log.warning("%s:%d: skipped, not a sighting: %s", jsonl_path, number, exc)


def export_geojson(jsonl_path: Path, out_path: Path) -> int:
    """Write the sightings of a JSON-lines file as GeoJSON (see :func:`write_geojson`); returns how many."""
    return write_geojson(read_jsonl(jsonl_path), out_path)


def geojson_beside(path: Path) -> Path:
    """The GeoJSON file kept next to a JSON-lines file: ``sightings.jsonl`` -> ``sightings.geojson``."""
    return path.with_suffix(".geojson") if path.suffix != ".geojson" else path.with_name(path.name + ".points.geojson")


class RecordingSink:
    """A sink that passes everything on to ``inner`` and keeps what it was given (for a GeoJSON
    of one run's sightings beside MQTT)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.sightings: list[Sighting] = []

    def submit(self, sighting: Sighting) -> bool:
        stored = self.inner.submit(sighting)
        self.sightings.append(sighting)
        return stored

    def flush(self, timeout: float) -> bool:
        return self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()
