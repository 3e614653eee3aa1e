"""Durable outbox for sightings: a row is on disk before any publish and leaves only on the broker's ack.

paho-mqtt keeps QoS 1 messages in memory only and its message ids restart per connection, so the
bike keeps its own queue in SQLite, keyed by the sighting id. The MQTT client drives it::

    with Outbox(Path("/var/lib/sousveil/outbox.db")) as box:
        box.put("s-0001", "sousveil/v1/sightings/u33d", b"{...}")  # committed (fsynced) on return
        for entry in box.pending(20):  # oldest first, not yet in flight
            info = client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain)
            box.mark_inflight(entry.id, info.mid)
        # paho network thread, on_publish(mid): box.ack_mid(mid)
        # on (re)connect: box.requeue_inflight()

See docs/outbox.md for the guarantees and the size policy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeVar

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_ID_CHARS = 128
MAX_TOPIC_BYTES = 65_535  # MQTT: a UTF-8 string is prefixed by a two-byte length
DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024  # a sighting is a few KiB; an optional crop stays well below this
BUSY_TIMEOUT_S = 5.0
_SQLITE_FULL = 13  # primary result code of "database or disk is full"

WhenFull = Literal["refuse", "drop_oldest"]
_T = TypeVar("_T")

_SCHEMA = (
    """CREATE TABLE outbox (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order; AUTOINCREMENT never reuses a value
        id        TEXT    NOT NULL UNIQUE,            -- our sighting id: the idempotency key
        topic     TEXT    NOT NULL,
        payload   BLOB    NOT NULL,
        qos       INTEGER NOT NULL,
        retain    INTEGER NOT NULL,
        created_s REAL    NOT NULL,
        attempts  INTEGER NOT NULL DEFAULT 0,
        mid       INTEGER,                            -- paho message id while in flight on this connection
        size      INTEGER NOT NULL                    -- bytes counted against max_bytes
    )""",
    "CREATE INDEX outbox_mid ON outbox (mid) WHERE mid IS NOT NULL",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('depth', 0), ('bytes', 0), ('dropped_total', 0)",
    # depth and bytes are kept by triggers in the same transaction as the change: no full scan per put
    """CREATE TRIGGER outbox_insert AFTER INSERT ON outbox BEGIN
        UPDATE counters SET value = value + 1 WHERE name = 'depth';
        UPDATE counters SET value = value + NEW.size WHERE name = 'bytes';
    END""",
    """CREATE TRIGGER outbox_delete AFTER DELETE ON outbox BEGIN
        UPDATE counters SET value = value - 1 WHERE name = 'depth';
        UPDATE counters SET value = value - OLD.size WHERE name = 'bytes';
    END""",
)


class OutboxError(Exception):
    """The outbox cannot be opened or used (the message names the file)."""


class OutboxFull(OutboxError):  # noqa: N818 - the name the firmware and docs use
    """A message was not stored: the size policy refused it, or the disk (or SQLite's page limit) is full."""

    def __init__(self, message: str, *, path: Path, depth: int, bytes_: int) -> None:
        super().__init__(message)
        self.path = path
        self.depth = depth
        self.bytes = bytes_


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message; ``created_s`` is seconds since the epoch (the outbox's clock)."""

    id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_s: float
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # rows stored, in flight included
    inflight: int  # rows published on this connection and not yet acknowledged
    bytes: int  # payload + topic + id bytes of the stored rows
    oldest_age_s: float | None  # age of the oldest row; None when empty
    dropped_total: int  # rows ever deleted by when_full="drop_oldest" (persistent)


def validate_message(msg_id: str, topic: str, payload: bytes, qos: int, retain: bool, max_payload_bytes: int) -> bytes:
    """Check one message; return the topic as UTF-8. Raises ValueError naming the problem."""
    if not isinstance(msg_id, str) or not msg_id:
        raise ValueError(f"message id must be a non-empty string, got {msg_id!r}")
    if len(msg_id) > MAX_ID_CHARS or "\x00" in msg_id:
        raise ValueError(f"message id must be at most {MAX_ID_CHARS} characters without NUL, got {msg_id[:40]!r}...")
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    if "+" in topic or "#" in topic:
        raise ValueError(f"topic {topic[:80]!r} contains a wildcard (+ or #); a publish topic cannot")
    if "\x00" in topic:
        raise ValueError(f"topic {topic[:80]!r} contains NUL (U+0000), which MQTT forbids")
    try:
        topic_utf8 = topic.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"topic {topic[:80]!r} is not valid UTF-8: {exc.reason}") from None
    if len(topic_utf8) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is {len(topic_utf8)} bytes in UTF-8; MQTT allows at most {MAX_TOPIC_BYTES}")
    if not isinstance(payload, bytes):
        raise ValueError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_payload_bytes:
        raise ValueError(f"payload is {len(payload)} bytes; the outbox allows at most {max_payload_bytes}")
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
    if not isinstance(retain, bool):
        raise ValueError(f"retain must be a bool, got {retain!r}")
    return topic_utf8


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_FULL
    return "database or disk is full" in str(exc)


class Outbox:
    """A durable, size-bounded FIFO of MQTT messages in one SQLite file.

    Thread safety: one connection (``check_same_thread=False``) guarded by one lock, so the
    writer thread (put) and paho's network thread (ack in on_publish) never use it at once.
    A single connection keeps the counters exact and the code small; every call is short.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        when_full: WhenFull = "refuse",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if when_full not in ("refuse", "drop_oldest"):
            raise ValueError(f"when_full must be 'refuse' or 'drop_oldest', got {when_full!r}")
        if max_rows < 1 or max_bytes < 1 or max_payload_bytes < 0:
            raise ValueError(
                f"max_rows and max_bytes must be >= 1 and max_payload_bytes >= 0,"
                f" got {max_rows}, {max_bytes} and {max_payload_bytes}"
            )
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.when_full: WhenFull = when_full
        self.max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a put is exactly one transaction.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # WAL: a commit appends to the log, readers never block the writer, and a torn write is
            # discarded on recovery. synchronous=FULL: fsync the WAL on every commit. On a bike power
            # goes without warning (battery, loose cable); NORMAL would be safe from corruption but could
            # lose the last commits, and put() promises that a returned sighting is on disk.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise OutboxError(
                        f"outbox {self.path} has schema version {version}, newer than this sousveil understands"
                        f" ({SCHEMA_VERSION}); upgrade sousveil or move the file aside (its messages are kept there)"
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if _is_full(exc):
                raise OutboxFull(
                    f"cannot create outbox {self.path}: database or disk is full", path=self.path, depth=0, bytes_=0
                ) from exc
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    # -- plumbing ---------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._conn

    def _counts(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        rows = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return int(rows["depth"]), int(rows["bytes"]), int(rows["dropped_total"])

    def _write(self, what: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one IMMEDIATE transaction under the lock; all or nothing."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:  # SQLite may already have rolled back after SQLITE_FULL
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    if _is_full(exc):
                        try:
                            depth, size, _ = self._counts(conn)
                        except sqlite3.Error:
                            depth, size = -1, -1
                        raise OutboxFull(
                            f"outbox {self.path}: database or disk is full; {what} not done"
                            f" ({depth} rows, {size} bytes stored, nothing half-written)",
                            path=self.path,
                            depth=depth,
                            bytes_=size,
                        ) from exc
                    raise OutboxError(f"outbox {self.path}: {what} failed: {exc}") from exc
                raise

    # -- the API ----------------------------------------------------------------------------------

    def put(self, msg_id: str, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Store a message durably (committed and fsynced) before returning.

        Returns True if stored, False if a message with this id is already pending (nothing changes).
        Raises ValueError for a bad message, OutboxFull when the size policy or the disk refuses it.

        >>> box.put("s-0001", "sousveil/v1/sightings/u33d", b'{"id": "s-0001"}')
        True
        """
        topic_utf8 = validate_message(msg_id, topic, payload, qos, retain, self.max_payload_bytes)
        size = len(payload) + len(topic_utf8) + len(msg_id.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise ValueError(f"message {msg_id!r} is {size} bytes, more than the outbox's max_bytes {self.max_bytes}")
        created_s = float(self._clock())

        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM outbox WHERE id = ?", (msg_id,)).fetchone() is not None:
                return False
            depth, stored, _ = self._counts(conn)
            if depth + 1 > self.max_rows or stored + size > self.max_bytes:
                if self.when_full == "refuse":
                    raise OutboxFull(
                        f"outbox {self.path} is full: {depth}/{self.max_rows} rows, {stored}/{self.max_bytes} bytes;"
                        f" message {msg_id!r} ({size} bytes) not stored (when_full='refuse')",
                        path=self.path,
                        depth=depth,
                        bytes_=stored,
                    )
                self._drop_oldest(conn, depth, stored, size, msg_id)
            conn.execute(
                "INSERT INTO outbox (id, topic, payload, qos, retain, created_s, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg_id, topic, payload, qos, int(retain), created_s, size),
            )
            return True

        return self._write(f"put of message {msg_id!r}", work)

    def _drop_oldest(self, conn: sqlite3.Connection, depth: int, stored: int, size: int, msg_id: str) -> None:
        dropped: list[int] = []
        for seq, row_size in conn.execute("SELECT seq, size FROM outbox ORDER BY seq"):
            if depth + 1 <= self.max_rows and stored + size <= self.max_bytes:
                break
            dropped.append(seq)
            depth -= 1
            stored -= row_size
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in dropped])
        conn.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped_total'", (len(dropped),))
        log.warning(
            "outbox %s full (max %d rows, %d bytes): dropped the %d oldest unsent messages to store %r",
            self.path,
            self.max_rows,
            self.max_bytes,
            len(dropped),
            msg_id,
        )

    def pending(self, limit: int = 100) -> list[Entry]:
        """Up to ``limit`` messages not in flight, oldest first (insertion order)."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT id, topic, payload, qos, retain, created_s, attempts FROM outbox"
                " WHERE mid IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
            return [Entry(r[0], r[1], bytes(r[2]), int(r[3]), bool(r[4]), float(r[5]), int(r[6])) for r in rows]

    def mark_inflight(self, msg_id: str, mid: int) -> bool:
        """Record that ``msg_id`` was handed to paho as message ``mid``; counts one attempt."""
        return self._update(
            f"mark_inflight of {msg_id!r}",
            "UPDATE outbox SET mid = ?, attempts = attempts + 1 WHERE id = ?",
            (mid, msg_id),
        )

    def attempt(self, msg_id: str) -> bool:
        """Count a publish attempt that got no message id (paho refused it); the row stays pending."""
        return self._update(
            f"attempt of {msg_id!r}", "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (msg_id,)
        )

    def ack(self, msg_id: str) -> bool:
        """The broker has the message: delete it. Idempotent; False if it was not there."""
        return self._update(f"ack of {msg_id!r}", "DELETE FROM outbox WHERE id = ?", (msg_id,))

    def ack_mid(self, mid: int) -> str | None:
        """Ack the message in flight as paho ``mid`` (for on_publish); returns its id, or None if unknown."""

        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT id FROM outbox WHERE mid = ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            return str(row[0])

        return self._write(f"ack of mid {mid}", work)

    def requeue_inflight(self) -> int:
        """Forget every paho message id (call on each (re)connect: ids restart per connection); returns how many."""
        return self._write(
            "requeue", lambda conn: conn.execute("UPDATE outbox SET mid = NULL WHERE mid IS NOT NULL").rowcount
        )

    def _update(self, what: str, sql: str, params: tuple[object, ...]) -> bool:
        return self._write(what, lambda conn: conn.execute(sql, params).rowcount > 0)

    def stats(self) -> OutboxStats:
        with self._lock:
            conn = self._connection()
            depth, size, dropped = self._counts(conn)
            inflight = int(conn.execute("SELECT COUNT(*) FROM outbox WHERE mid IS NOT NULL").fetchone()[0])
            oldest = conn.execute("SELECT created_s FROM outbox ORDER BY seq LIMIT 1").fetchone()
        age = None if oldest is None else max(0.0, float(self._clock()) - float(oldest[0]))
        return OutboxStats(depth=depth, inflight=inflight, bytes=size, oldest_age_s=age, dropped_total=dropped)

    def close(self) -> None:
        """Close the file (idempotent). Nothing is lost: every put was committed on return."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
