"""The durable outbox, against real SQLite files on disk (no mocks)."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware.outbox import Entry, Outbox, OutboxError, OutboxFull

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "sousveil/v1/sightings/u33d"


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


# -- basics -------------------------------------------------------------------------------------


def test_put_pending_ack(db: Path) -> None:
    clock = FakeClock()
    with Outbox(db, clock=clock) as box:
        assert box.put("s1", TOPIC, b'{"id": "s1"}') is True
        assert box.pending() == [Entry("s1", TOPIC, b'{"id": "s1"}', 1, False, clock.t, 0)]
        assert box.ack("s1") is True
        assert box.pending() == []
        assert box.ack("s1") is False  # idempotent
        assert box.stats().depth == 0


def test_reput_same_id_is_a_noop(db: Path) -> None:
    with Outbox(db) as box:
        assert box.put("s1", TOPIC, b"first")
        assert box.put("s1", "other/topic", b"second") is False
        assert [(e.id, e.topic, e.payload) for e in box.pending()] == [("s1", TOPIC, b"first")]
        assert box.stats().depth == 1


def test_order_preserved_and_limit(db: Path) -> None:
    with Outbox(db) as box:
        names = [f"s{i}" for i in (5, 3, 9, 1, 7)]
        for name in names:
            box.put(name, TOPIC, name.encode(), qos=0, retain=True)
        box.ack("s9")
        box.put("s2", TOPIC, b"")  # empty payload is allowed
        assert ids(box.pending()) == ["s5", "s3", "s1", "s7", "s2"]
        assert ids(box.pending(2)) == ["s5", "s3"]
        assert box.pending()[0].qos == 0 and box.pending()[0].retain is True


def test_survives_reopen(db: Path) -> None:
    with Outbox(db) as box:
        box.put("a", TOPIC, b"\x00\xff binary")
        box.put("b", TOPIC, b"2")
    with Outbox(db) as box:
        assert [(e.id, e.payload) for e in box.pending()] == [("a", b"\x00\xff binary"), ("b", b"2")]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_closed_outbox_says_so(db: Path) -> None:
    box = Outbox(db)
    box.close()
    box.close()  # idempotent
    with pytest.raises(OutboxError, match="closed"):
        box.put("a", TOPIC, b"")


# -- in flight, attempts, clock -----------------------------------------------------------------


def test_inflight_requeue_and_attempts(db: Path) -> None:
    with Outbox(db) as box:
        for name in ("a", "b", "c"):
            box.put(name, TOPIC, b"x")
        assert box.mark_inflight("a", 1) and box.mark_inflight("b", 2)
        assert box.attempt("c")  # paho refused it: counted, still pending
        assert [(e.id, e.attempts) for e in box.pending()] == [("c", 1)]
        assert box.stats().inflight == 2
        assert box.ack_mid(2) == "b"
        assert box.ack_mid(2) is None  # a late or repeated on_publish is harmless
        # reconnect: paho ids restart, so every unacked message goes back to the queue
        assert box.requeue_inflight() == 1
        assert [(e.id, e.attempts) for e in box.pending()] == [("a", 1), ("c", 1)]
        box.mark_inflight("a", 1)
        assert box.mark_inflight("gone", 3) is False
    with Outbox(db) as box:  # in-flight state survives a restart; requeue at connect releases it
        assert ids(box.pending()) == ["c"]
        box.requeue_inflight()
        assert [(e.id, e.attempts) for e in box.pending()] == [("a", 2), ("c", 1)]


def test_stats_oldest_age_with_injected_clock(db: Path) -> None:
    clock = FakeClock(1000.0)
    with Outbox(db, clock=clock) as box:
        assert box.stats().oldest_age_s is None
        box.put("a", TOPIC, b"12345")
        clock.t = 1010.0
        box.put("b", TOPIC, b"1")
        clock.t = 1100.5
        stats = box.stats()
        assert stats.oldest_age_s == pytest.approx(100.5)
        assert stats.depth == 2
        assert stats.bytes == (5 + len(TOPIC) + 1) + (1 + len(TOPIC) + 1)
        box.ack("a")
        assert box.stats().oldest_age_s == pytest.approx(90.5)


# -- size policy --------------------------------------------------------------------------------


def test_refuse_raises_with_counts_and_keeps_old_rows(db: Path) -> None:
    with Outbox(db, max_rows=3) as box:
        for name in ("a", "b", "c"):
            box.put(name, TOPIC, b"x")
        with pytest.raises(OutboxFull, match=r"3/3 rows") as info:
            box.put("d", TOPIC, b"x")
        assert info.value.depth == 3 and str(db) in str(info.value)
        assert box.put("a", TOPIC, b"x") is False  # a duplicate is still a no-op, not an error
        assert ids(box.pending()) == ["a", "b", "c"]
        box.ack("a")
        assert box.put("d", TOPIC, b"x")


def test_refuse_by_bytes(db: Path) -> None:
    with Outbox(db, max_bytes=100) as box:
        box.put("a", "t", b"x" * 60)
        with pytest.raises(OutboxFull, match=r"62/100 bytes"):
            box.put("b", "t", b"x" * 60)
        assert ids(box.pending()) == ["a"]


def test_drop_oldest_keeps_newest_and_counts_persistently(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(db, max_rows=3, when_full="drop_oldest") as box:
        with caplog.at_level(logging.WARNING, logger="firmware.outbox"):
            for i in range(5):
                assert box.put(f"s{i}", TOPIC, b"x")
        assert ids(box.pending()) == ["s2", "s3", "s4"]
        assert box.stats().dropped_total == 2
        assert "dropped the 1 oldest" in caplog.text  # never silent
    row = 1 + len(TOPIC) + 2  # payload + topic + id bytes
    with Outbox(db, max_bytes=2 * row + 24, when_full="drop_oldest") as box:  # reopened, now bound by bytes
        assert box.stats().dropped_total == 2  # persisted
        box.put("big", "t", b"x" * 20)  # 24 bytes: only s2 has to go
        assert ids(box.pending()) == ["s3", "s4", "big"]
        assert box.stats().bytes == box.max_bytes
        assert box.stats().dropped_total == 3


def test_message_larger_than_the_whole_outbox_is_refused(db: Path) -> None:
    with Outbox(db, max_bytes=50, when_full="drop_oldest") as box:
        box.put("a", "t", b"x")
        with pytest.raises(ValueError, match="max_bytes"):
            box.put("b", "t", b"x" * 100)
        assert ids(box.pending()) == ["a"]  # nothing dropped for a message that could never fit


# -- a genuinely full database ------------------------------------------------------------------


def test_sqlite_full_becomes_outboxfull_and_recovers(db: Path) -> None:
    with Outbox(db) as box:
        conn = box._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 4}")  # a real SQLITE_FULL, as on a full SD card
        stored = 0
        with pytest.raises(OutboxFull, match="database or disk is full") as info:
            for i in range(1000):
                box.put(f"s{i}", TOPIC, os.urandom(3000))
                stored += 1
        assert str(db) in str(info.value)
        assert 0 < stored < 1000
        assert box.stats().depth == stored  # the failed put left nothing behind
        assert ids(box.pending()) == [f"s{i}" for i in range(stored)]
        assert box.pending(1)[0].payload  # earlier rows intact
        box.ack("s0")
        box.ack("s1")
        assert box.put("after", TOPIC, os.urandom(3000))  # usable again once acks free space
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg_id", "topic", "payload", "problem"),
    [
        ("", TOPIC, b"x", "message id"),
        ("x" * 129, TOPIC, b"x", "message id"),
        (None, TOPIC, b"x", "message id"),
        ("a", "", b"x", "topic must be a non-empty"),
        ("a", "sousveil/+/x", b"x", "wildcard"),
        ("a", "sousveil/#", b"x", "wildcard"),
        ("a", "sous\x00veil", b"x", "NUL"),
        ("a", "t" * 65_536, b"x", "65535"),
        ("a", "é" * 40_000, b"x", "UTF-8"),  # 40k characters, 80k bytes
        ("a", "bad\udcff", b"x", "UTF-8"),
        ("a", TOPIC, "text", "payload must be bytes"),
        ("a", TOPIC, bytearray(b"x"), "payload must be bytes"),
        ("a", TOPIC, None, "payload must be bytes"),
        ("a", TOPIC, b"x" * 1025, "payload is 1025 bytes"),
    ],
)
def test_bad_input_is_a_clear_valueerror_and_loses_nothing(
    db: Path, msg_id: object, topic: object, payload: object, problem: str
) -> None:
    with Outbox(db, max_payload_bytes=1024) as box:
        box.put("kept", TOPIC, b"x")
        with pytest.raises(ValueError, match=problem):
            box.put(msg_id, topic, payload)  # type: ignore[arg-type]
        assert ids(box.pending()) == ["kept"]


@pytest.mark.parametrize(("qos", "retain"), [(3, False), (True, False), (1, 1)])
def test_bad_qos_or_retain(db: Path, qos: object, retain: object) -> None:
    with Outbox(db) as box, pytest.raises(ValueError, match=r"qos|retain"):
        box.put("a", TOPIC, b"x", qos=qos, retain=retain)  # type: ignore[arg-type]


def test_bad_settings(db: Path) -> None:
    with pytest.raises(ValueError, match="when_full"):
        Outbox(db, when_full="drop_newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rows"):
        Outbox(db, max_rows=0)


def test_newer_schema_is_a_clear_error(db: Path) -> None:
    Outbox(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(OutboxError, match=r"schema version 99.*newer"):
        Outbox(db)


def test_not_a_database_is_a_clear_error(db: Path) -> None:
    db.write_bytes(b"this is not sqlite, it is a ride log" * 100)
    with pytest.raises(OutboxError, match=re.escape(str(db))):
        Outbox(db)


# -- threads: the writer and paho's network thread ----------------------------------------------


def test_writer_and_network_thread_together(db: Path) -> None:
    n = 300
    with Outbox(db) as box:
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(n):
                    box.put(f"s{i}", TOPIC, b"x" * 100)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def network() -> None:  # publishes whatever is pending and acks it, as on_publish would
            acked = 0
            deadline = time.monotonic() + 30
            try:
                while acked < n and time.monotonic() < deadline:
                    for entry in box.pending(50):
                        box.mark_inflight(entry.id, acked % 65535 + 1)
                        assert box.ack_mid(acked % 65535 + 1) == entry.id
                        acked += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer), threading.Thread(target=network)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert box.stats().depth == 0


# -- kill -9 ------------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from firmware.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
for i in range(10_000_000):
    msg_id = f"{sys.argv[2]}-{i}"
    box.put(msg_id, "sousveil/test", bytes(i % 251 for _ in range(1500)))
    sys.stdout.write(msg_id + "\\n")
    sys.stdout.flush()
"""


def test_sigkill_at_a_random_moment_loses_nothing_that_put_returned(db: Path) -> None:
    rng = random.Random(20261126)
    promised: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), f"r{round_}"], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        if round_ > 0:  # round 0 is killed while it may still be creating the file
            first = child.stdout.readline()
            assert first.endswith("\n"), "child never stored a message"
            promised.add(first.strip())
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        promised.update(line for line in out.split("\n")[:-1])  # a torn last line was never promised
    assert len(promised) > 10
    with Outbox(db) as box:
        stored = set(ids(box.pending(10_000_000)))
        assert promised <= stored, f"lost {sorted(promised - stored)[:5]}"
        assert box.stats().depth == len(stored)  # the trigger-kept counters agree with the rows
        assert box._conn is not None
        assert box._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
