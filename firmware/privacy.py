"""Privacy before publishing: a pseudonymous, rotating device id, privacy zones, coarse times.

Only sightings leave the device, never the rider's track: a sighting carries its own few
rays and nothing else, and this module only ever removes or blurs. Per sighting::

    result = apply_privacy(sighting, config.privacy, now)
    # None: inside a 'drop' zone; Delayed: hold until result.release_utc; else publish result

``PrivacyFilter`` does the same, counts what it dropped and holds delayed sightings until due,
in a SQLite file when given one (``[privacy] hold_file``), so a sighting held at the end of a
ride is published by a later run once its time has come, and none is lost to a power cut.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware.config import PrivacySettings, PrivacyZone
from firmware.files import write_atomic
from firmware.position.interpolate import distance_m
from firmware.sighting import DEVICE_ID, Sighting, coarsen_time, format_utc, from_json, parse_utc, to_json


def utc_now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


# ---- the device id ----


def new_device_id() -> str:
    """16 lowercase hex digits (64 random bits) from ``secrets``."""
    return secrets.token_hex(8)


def _read_id(path: Path) -> tuple[str, datetime] | None:
    """The stored id and when it was drawn; None when there is no usable file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        device, created = obj["id"], parse_utc(obj["created_utc"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged: draw a new one (an id is worth nothing but its pseudonymity)
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        return None
    return device, created


def device_id(id_file: Path, rotate_days: int = 0, clock: Callable[[], datetime] = utc_now) -> str:
    """The device's pseudonymous id, kept in ``id_file`` (0600); a new one is drawn when there
    is none, when the file is damaged, or when it is ``rotate_days`` old (0: never rotate)."""
    now = clock()
    stored = _read_id(id_file)
    if stored is not None:
        device, created = stored
        if rotate_days <= 0 or now - created < timedelta(days=rotate_days):
            if id_file.stat().st_mode & 0o077:
                os.chmod(id_file, 0o600)  # someone loosened it
            return device
    device = new_device_id()
    id_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(id_file, (json.dumps({"id": device, "created_utc": format_utc(now)}) + "\n").encode())
    return device


# ---- zones ----


def sighting_points(s: Sighting) -> list[tuple[float, float]]:
    """Every position a sighting publishes: the observer, the estimate and each ray's origin."""
    points = [(s.observer.lat_deg, s.observer.lon_deg)]
    if s.estimate is not None:
        points.append((s.estimate.lat_deg, s.estimate.lon_deg))
    points.extend((r.lat_deg, r.lon_deg) for r in s.rays)
    return points


def zones_hit(s: Sighting, zones: Iterable[PrivacyZone]) -> list[PrivacyZone]:
    """The zones that any published position of ``s`` lies in."""
    points = sighting_points(s)
    return [z for z in zones if any(distance_m(z.lat_deg, z.lon_deg, la, lo) <= z.radius_m for la, lo in points)]


# ---- per sighting ----


@dataclass(frozen=True)
class Delayed:
    """A sighting in a 'delay' zone: publish it at ``release_utc``, not before."""

    sighting: Sighting
    release_utc: datetime


def coarsen(s: Sighting, minutes: int) -> Sighting:
    """First/last seen and ray times rounded down to ``minutes`` (0: unchanged)."""
    if minutes <= 0:
        return s
    rays = tuple(replace(r, t_utc=coarsen_time(r.t_utc, minutes)) for r in s.rays)
    return replace(
        s,
        first_seen_utc=coarsen_time(s.first_seen_utc, minutes),
        last_seen_utc=coarsen_time(s.last_seen_utc, minutes),
        rays=rays,
    )


def apply_privacy(s: Sighting, settings: PrivacySettings, now: datetime) -> Sighting | Delayed | None:
    """What may be published of ``s`` at ``now``: None inside a 'drop' zone, ``Delayed`` inside
    a 'delay' zone (the longest delay of the zones hit), else ``s`` with coarse times and,
    unless ``publish_crops``, without its crop. A drop zone wins over a delay zone."""
    hit = zones_hit(s, settings.zones)
    if any(z.action == "drop" for z in hit):
        return None
    s = coarsen(s, settings.coarse_time_min)
    if not settings.publish_crops and s.crop is not None:
        s = replace(s, crop=None)
    delays = [z.delay_h for z in hit if z.action == "delay"]
    if delays:
        return Delayed(s, now + timedelta(hours=max(delays)))
    return s


class HoldError(Exception):
    """The privacy hold file cannot be opened or written (the message names it)."""


class HoldStore:
    """Delayed sightings on disk (SQLite, WAL, synchronous FULL): each is stored before
    ``PrivacyFilter.submit`` returns and deleted only once the sink has taken it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS held (id TEXT PRIMARY KEY, release_utc TEXT NOT NULL, body BLOB NOT NULL)"
            )
            os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as err:
            raise HoldError(f"privacy hold {self.path}: cannot open: {err}") from err

    def load(self) -> list[Delayed]:
        """Every held sighting; a row that no longer parses is named in the error, not skipped."""
        out: list[Delayed] = []
        try:
            rows = self._db.execute("SELECT id, release_utc, body FROM held ORDER BY release_utc").fetchall()
        except sqlite3.Error as err:
            raise HoldError(f"privacy hold {self.path}: cannot read: {err}") from err
        for sid, release, body in rows:
            try:
                out.append(Delayed(from_json(bytes(body)), parse_utc(release)))
            except ValueError as err:
                raise HoldError(f"privacy hold {self.path}: sighting {sid} is damaged: {err}") from err
        return out

    def add(self, d: Delayed) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO held (id, release_utc, body) VALUES (?, ?, ?)",
                (d.sighting.id, format_utc(d.release_utc), to_json(d.sighting)),
            )
        except sqlite3.Error as err:
            raise HoldError(f"privacy hold {self.path}: cannot store sighting {d.sighting.id}: {err}") from err

    def remove(self, sighting_id: str) -> None:
        try:
            self._db.execute("DELETE FROM held WHERE id = ?", (sighting_id,))
        except sqlite3.Error as err:
            raise HoldError(f"privacy hold {self.path}: cannot remove sighting {sighting_id}: {err}") from err

    def close(self) -> None:
        self._db.close()


class PrivacyFilter:
    """``apply_privacy`` with counters and a hold for delayed sightings.

    With ``hold`` (a :class:`HoldStore`) the hold is durable: what an earlier run held is
    loaded at start and released when due; ``due()`` hands sightings out and ``delivered(s)``,
    called once the sink has them, deletes them from the file (a crash in between publishes
    the sighting again under the same id, which subscribers de-duplicate). Without it the hold
    is in memory and what is still held at the end of the run is not published."""

    def __init__(
        self, settings: PrivacySettings, clock: Callable[[], datetime] = utc_now, hold: HoldStore | None = None
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.dropped = 0
        self.delayed = 0
        self.store = hold
        self._held: list[Delayed] = [] if hold is None else hold.load()

    def submit(self, s: Sighting) -> Sighting | None:
        """The sighting to publish now, or None (dropped, or held for later)."""
        result = apply_privacy(s, self.settings, self._clock())
        if result is None:
            self.dropped += 1
            return None
        if isinstance(result, Delayed):
            if self.store is not None:
                self.store.add(result)
            self.delayed += 1
            self._held.append(result)
            return None
        return result

    def due(self) -> list[Sighting]:
        """The held sightings whose release time has come, oldest release first; they leave the
        hold. One that now lies in a 'drop' zone (the zones changed since it was held) is
        dropped, not published."""
        now = self._clock()
        ready = sorted((d for d in self._held if d.release_utc <= now), key=lambda d: d.release_utc)
        self._held = [d for d in self._held if d.release_utc > now]
        out = []
        for d in ready:
            if any(z.action == "drop" for z in zones_hit(d.sighting, self.settings.zones)):
                self.dropped += 1
                self.delivered(d.sighting)  # gone from the hold file too
                continue
            out.append(d.sighting)
        return out

    def delivered(self, s: Sighting) -> None:
        """The sink has taken ``s`` (from ``due()``): forget it on disk too."""
        if self.store is not None:
            self.store.remove(s.id)

    @property
    def held(self) -> int:
        return len(self._held)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
