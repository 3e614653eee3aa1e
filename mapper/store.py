"""Where the map lives: sightings as received, and the camera entities fused from them.

:class:`Store` is the one interface the rest of the mapper uses; :class:`SqliteStore` is the
embedded default (one file, WAL, an R*Tree over entity positions). A PostGIS backend would
implement the same methods (a ``geography(Point)`` column with a GiST index in place of the
R*Tree; see docs/map.md).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from firmware.position.interpolate import EARTH_RADIUS_M, distance_m
from firmware.sighting import Sighting, format_utc, parse_utc
from mapper.entity import Entity, EntityRay

if TYPE_CHECKING:
    from mapper.validate import Checked

EARTH_M_PER_DEG = math.radians(1.0) * EARTH_RADIUS_M  # metres per degree of latitude


class StoreError(RuntimeError):
    """The store cannot be opened or written (path, permissions, a full disk, not our database)."""


@dataclass(frozen=True, slots=True)
class RayRow:
    """One ray as fusion needs it: rider position, its accuracy, bearing and its sigma."""

    lat_deg: float
    lon_deg: float
    acc_m: float
    bearing_deg: float
    sigma_deg: float


@dataclass(frozen=True, slots=True)
class SightingRow:
    """A stored sighting, in the columns fusion reads, its numbers as the message had them (the
    message as received is kept as ``body``)."""

    id: str
    device: str
    first_seen_utc: datetime
    last_seen_utc: datetime
    label: str
    score: float
    frames: int
    observer: tuple[float, float, float]  # lat, lon, acc_m
    estimate: tuple[float, float, float] | None  # lat, lon, sigma_m
    direction_deg: float | None
    rays: tuple[RayRow, ...]
    entity_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fused:
    """What one fusion step decided, written in one transaction by :meth:`Store.save_fusion`.

    ``entities`` are new or changed entities; ``assign`` maps sighting id -> entity id;
    ``outliers`` per entity the (sighting id, ray index) pairs left out of its fit;
    ``merged`` maps an entity id that was absorbed -> the id that absorbed it.
    """

    entities: Sequence[Entity]
    assign: Mapping[str, str]
    outliers: Mapping[str, Sequence[tuple[str, int]]]
    merged: Mapping[str, str]


class Store(Protocol):
    """The storage interface of the mapper (SQLite here; PostGIS can follow)."""

    def add_checked(
        self,
        messages: Sequence[Checked],
        received_utc: datetime | None = None,
        refused: Mapping[str, int] | None = None,
    ) -> list[bool]:
        """Store each message mapper.validate.check_message accepted, unless its sighting id is
        known; True where it was new. With ``refused`` (reason -> messages of this batch the
        checks refused), those and this batch's duplicates are added to the rejection counts.
        One transaction."""
        ...

    def pending(self, limit: int = 10_000) -> list[SightingRow]:
        """Sightings not yet fused into an entity, oldest first."""
        ...

    def entities_near(self, lat_deg: float, lon_deg: float, radius_m: float) -> list[Entity]:
        """Entities whose position lies within ``radius_m`` of the point (R*Tree, then exact distance)."""
        ...

    def sightings_of(self, entity_ids: Iterable[str]) -> dict[str, list[SightingRow]]:
        """The sightings assigned to each entity."""
        ...

    def save_fusion(self, fused: Fused) -> None:
        """Write one fusion step atomically."""
        ...

    def entities(
        self, bbox: tuple[float, float, float, float] | None = None, min_confidence: float = 0.0
    ) -> list[Entity]:
        """Entities, optionally within ``bbox`` = (west, south, east, north) degrees."""
        ...

    def entity(self, entity_id: str) -> Entity | None:
        """One entity by id; an id absorbed by a merge resolves to the entity that absorbed it."""
        ...

    def rays_of(self, entity_id: str) -> list[EntityRay]:
        """The bearing rays that went into an entity, outliers flagged."""
        ...

    def add_rejections(self, counts: Mapping[str, int]) -> None:
        """Add to the persistent count of rejected messages per reason."""
        ...

    def stats(self) -> dict[str, int]:
        """Counts: sightings, pending, entities, and rejected messages per reason (``rejected:<reason>``)."""
        ...

    def close(self) -> None: ...


SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sightings (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    first_utc TEXT NOT NULL,
    last_utc TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    frames INTEGER NOT NULL,
    obs TEXT NOT NULL,
    est TEXT,
    direction REAL,
    rays TEXT NOT NULL,
    body TEXT NOT NULL,
    received_utc TEXT NOT NULL,
    entity_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sightings_pending ON sightings (first_utc, id) WHERE entity_id IS NULL;
CREATE INDEX IF NOT EXISTS sightings_entity ON sightings (entity_id) WHERE entity_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS entities (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    sigma_m REAL NOT NULL,
    label TEXT NOT NULL,
    votes TEXT NOT NULL,
    confidence REAL NOT NULL,
    passes INTEGER NOT NULL,
    devices INTEGER NOT NULL,
    first_utc TEXT NOT NULL,
    last_utc TEXT NOT NULL,
    method TEXT NOT NULL,
    direction REAL,
    extra_tags TEXT NOT NULL,
    outliers TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS entities_rtree USING rtree(rid, min_lat, max_lat, min_lon, max_lon);
CREATE TABLE IF NOT EXISTS aliases (old_id TEXT PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (reason TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
"""

STORE_FORMAT = "sousveil.mapstore/1"


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, safe to share between threads (one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA_SQL)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
            elif row[0] != STORE_FORMAT:
                raise StoreError(f"{self.path}: store format {row[0]!r}, this mapper reads {STORE_FORMAT!r}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open the map store {self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot create the map store {self.path}: {e.strerror or e}") from None
        self._lock = threading.Lock()

    # -- writing ----------------------------------------------------------------------------------

    def _write(self, what: str, fn: object, *args: object) -> object:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(*args)  # type: ignore[operator]
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.OperationalError as e:
                raise StoreError(f"cannot write {what} to the map store {self.path}: {e}") from None

    def add_sightings(self, sightings: Sequence[Sighting], received_utc: datetime | None = None) -> list[bool]:
        """``add_checked`` for Sighting objects (files, tests, benchmarks): each as its wire form."""
        from mapper.validate import Checked

        return self.add_checked([Checked.of(s) for s in sightings], received_utc)

    def add_checked(
        self,
        messages: Sequence[Checked],
        received_utc: datetime | None = None,
        refused: Mapping[str, int] | None = None,
    ) -> list[bool]:
        received = format_utc(received_utc or datetime.now(UTC))

        def pos(p: Mapping[str, float], third: str) -> str:
            return f"[{p['lat_deg']!r},{p['lon_deg']!r},{p[third]!r}]"

        def run() -> list[bool]:
            out = []
            for c in messages:
                o = c.obj
                est = o["estimate"]
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO sightings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                    (
                        o["id"],
                        o["device"],
                        format_utc(c.first_seen_utc),
                        format_utc(c.last_seen_utc),
                        o["label"],
                        o["score"],
                        o["frames"],
                        pos(o["observer"], "acc_m"),
                        None if est is None else pos(est, "sigma_m"),
                        o["direction_deg"],
                        "["
                        + ",".join(
                            f"[{r['lat_deg']!r},{r['lon_deg']!r},{r['acc_m']!r},{r['bearing_deg']!r},{r['sigma_deg']!r}]"
                            for r in o["rays"]
                        )
                        + "]",
                        c.body.decode("utf-8"),
                        received,
                    ),
                )
                out.append(cur.rowcount == 1)
            if refused is not None:
                counts = {**refused, "duplicate": out.count(False)}
                self._count_rejections({k: n for k, n in counts.items() if n})
            return out

        return self._write("sightings", run)  # type: ignore[return-value]

    def save_fusion(self, fused: Fused) -> None:
        def run() -> None:
            for old, new in fused.merged.items():
                self._delete_entity(old)
                self._db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (old, new))
                self._db.execute("UPDATE aliases SET id = ? WHERE id = ?", (new, old))
                self._db.execute("UPDATE sightings SET entity_id = ? WHERE entity_id = ?", (new, old))
            for e in fused.entities:
                self._put_entity(e, fused.outliers.get(e.id, ()))
            self._db.executemany(
                "UPDATE sightings SET entity_id = ? WHERE id = ?", [(eid, sid) for sid, eid in fused.assign.items()]
            )

        self._write("a fusion step", run)

    def _delete_entity(self, entity_id: str) -> None:
        row = self._db.execute("SELECT rid FROM entities WHERE id = ?", (entity_id,)).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM entities WHERE rid = ?", row)
            self._db.execute("DELETE FROM entities_rtree WHERE rid = ?", row)

    def _put_entity(self, e: Entity, outliers: Sequence[tuple[str, int]]) -> None:
        values = (
            e.lat_deg,
            e.lon_deg,
            e.sigma_m,
            e.label,
            json.dumps(dict(e.votes), sort_keys=True),
            e.confidence,
            e.passes,
            e.devices,
            format_utc(e.first_seen_utc),
            format_utc(e.last_seen_utc),
            e.method,
            e.direction_deg,
            json.dumps(dict(e.extra_tags), sort_keys=True),
            json.dumps([list(o) for o in outliers]),
        )
        row = self._db.execute("SELECT rid FROM entities WHERE id = ?", (e.id,)).fetchone()
        if row is None:
            cur = self._db.execute(
                "INSERT INTO entities (lat, lon, sigma_m, label, votes, confidence, passes, devices, first_utc,"
                " last_utc, method, direction, extra_tags, outliers, id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, e.id),
            )
            rid = cur.lastrowid
            self._db.execute(
                "INSERT INTO entities_rtree VALUES (?,?,?,?,?)", (rid, e.lat_deg, e.lat_deg, e.lon_deg, e.lon_deg)
            )
        else:
            rid = row[0]
            self._db.execute(
                "UPDATE entities SET lat=?, lon=?, sigma_m=?, label=?, votes=?, confidence=?, passes=?, devices=?,"
                " first_utc=?, last_utc=?, method=?, direction=?, extra_tags=?, outliers=? WHERE rid = ?",
                (*values, rid),
            )
            self._db.execute(
                "UPDATE entities_rtree SET min_lat=?, max_lat=?, min_lon=?, max_lon=? WHERE rid = ?",
                (e.lat_deg, e.lat_deg, e.lon_deg, e.lon_deg, rid),
            )

    def add_rejections(self, counts: Mapping[str, int]) -> None:
        if counts:
            self._write("rejection counts", self._count_rejections, counts)

    def _count_rejections(self, counts: Mapping[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO rejections VALUES (?, ?) ON CONFLICT(reason) DO UPDATE SET n = n + excluded.n",
            list(counts.items()),
        )

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def pending(self, limit: int = 10_000) -> list[SightingRow]:
        rows = self._read(
            "SELECT id, device, first_utc, last_utc, label, score, frames, obs, est, direction, rays, entity_id"
            " FROM sightings WHERE entity_id IS NULL ORDER BY first_utc, id LIMIT ?",
            (limit,),
        )
        return [_sighting_row(r) for r in rows]

    def sightings_of(self, entity_ids: Iterable[str]) -> dict[str, list[SightingRow]]:
        ids = list(dict.fromkeys(entity_ids))
        out: dict[str, list[SightingRow]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            rows = self._read(
                "SELECT id, device, first_utc, last_utc, label, score, frames, obs, est, direction, rays, entity_id"
                f" FROM sightings WHERE entity_id IN ({','.join('?' * len(part))}) ORDER BY first_utc, id",
                part,
            )
            for r in rows:
                s = _sighting_row(r)
                out[str(s.entity_id)].append(s)
        return out

    def entities_near(self, lat_deg: float, lon_deg: float, radius_m: float) -> list[Entity]:
        dlat = radius_m / EARTH_M_PER_DEG
        dlon = radius_m / (EARTH_M_PER_DEG * max(math.cos(math.radians(lat_deg)), 1e-6))
        rows = self._read(
            f"SELECT {_ENTITY_COLS} FROM entities e JOIN entities_rtree r ON r.rid = e.rid"
            " WHERE r.min_lat <= ? AND r.max_lat >= ? AND r.min_lon <= ? AND r.max_lon >= ?",
            (lat_deg + dlat, lat_deg - dlat, lon_deg + dlon, lon_deg - dlon),
        )
        out = []
        for r in rows:
            e = _entity(r)
            if distance_m(lat_deg, lon_deg, e.lat_deg, e.lon_deg) <= radius_m:
                out.append(e)
        return out

    def entities(
        self, bbox: tuple[float, float, float, float] | None = None, min_confidence: float = 0.0
    ) -> list[Entity]:
        if bbox is None:
            rows = self._read(
                f"SELECT {_ENTITY_COLS} FROM entities e WHERE confidence >= ? ORDER BY e.rid", (min_confidence,)
            )
        else:
            west, south, east, north = bbox
            rows = self._read(
                f"SELECT {_ENTITY_COLS} FROM entities e JOIN entities_rtree r ON r.rid = e.rid"
                " WHERE r.min_lat <= ? AND r.max_lat >= ? AND r.min_lon <= ? AND r.max_lon >= ?"
                " AND e.confidence >= ? ORDER BY e.rid",
                (north, south, east, west, min_confidence),
            )
        return [_entity(r) for r in rows]

    def entity(self, entity_id: str) -> Entity | None:
        alias = self._read("SELECT id FROM aliases WHERE old_id = ?", (entity_id,))
        if alias:
            entity_id = str(alias[0][0])
        rows = self._read(f"SELECT {_ENTITY_COLS} FROM entities e WHERE e.id = ?", (entity_id,))
        return _entity(rows[0]) if rows else None

    def rays_of(self, entity_id: str) -> list[EntityRay]:
        e = self.entity(entity_id)
        if e is None:
            return []
        rows = self._read("SELECT outliers FROM entities WHERE id = ?", (e.id,))
        outliers = {(str(a), int(b)) for a, b in json.loads(str(rows[0][0]))}
        out = []
        for s in self.sightings_of([e.id])[e.id]:
            for i, r in enumerate(s.rays):
                out.append(EntityRay(s.id, r.lat_deg, r.lon_deg, r.bearing_deg, r.sigma_deg, (s.id, i) in outliers))
        return out

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, sql in (
            ("sightings", "SELECT count(*) FROM sightings"),
            ("pending", "SELECT count(*) FROM sightings WHERE entity_id IS NULL"),
            ("entities", "SELECT count(*) FROM entities"),
        ):
            out[key] = int(self._read(sql)[0][0])  # type: ignore[call-overload]
        for reason, n in self._read("SELECT reason, n FROM rejections ORDER BY reason"):
            out[f"rejected:{reason}"] = int(n)  # type: ignore[call-overload]
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


_ENTITY_COLS = (
    "e.id, e.lat, e.lon, e.sigma_m, e.label, e.votes, e.confidence, e.passes, e.devices,"
    " e.first_utc, e.last_utc, e.method, e.direction, e.extra_tags"
)


def _entity(r: Sequence[object]) -> Entity:
    return Entity(
        id=str(r[0]),
        lat_deg=float(r[1]),  # type: ignore[arg-type]
        lon_deg=float(r[2]),  # type: ignore[arg-type]
        sigma_m=float(r[3]),  # type: ignore[arg-type]
        label=str(r[4]),
        votes=json.loads(str(r[5])),
        confidence=float(r[6]),  # type: ignore[arg-type]
        passes=int(r[7]),  # type: ignore[call-overload]
        devices=int(r[8]),  # type: ignore[call-overload]
        first_seen_utc=parse_utc(str(r[9])),
        last_seen_utc=parse_utc(str(r[10])),
        method=str(r[11]),  # type: ignore[arg-type]
        direction_deg=None if r[12] is None else float(r[12]),  # type: ignore[arg-type]
        extra_tags=json.loads(str(r[13])),
    )


def _sighting_row(r: Sequence[object]) -> SightingRow:
    obs = json.loads(str(r[7]))
    est = None if r[8] is None else json.loads(str(r[8]))
    return SightingRow(
        id=str(r[0]),
        device=str(r[1]),
        first_seen_utc=parse_utc(str(r[2])),
        last_seen_utc=parse_utc(str(r[3])),
        label=str(r[4]),
        score=float(r[5]),  # type: ignore[arg-type]
        frames=int(r[6]),  # type: ignore[call-overload]
        observer=(obs[0], obs[1], obs[2]),
        estimate=None if est is None else (est[0], est[1], est[2]),
        direction_deg=None if r[9] is None else float(r[9]),  # type: ignore[arg-type]
        rays=tuple(RayRow(*ray) for ray in json.loads(str(r[10]))),
        entity_id=None if r[11] is None else str(r[11]),
    )
