"""The dock's outbox: every attestation and alert, on disk until the broker took it.

paho-mqtt keeps unsent and unacknowledged messages in memory only, so a dock
restart or a long broker outage would lose them. Every message goes here
first (committed, fsynced by SQLite's ``synchronous=FULL``) and is marked
delivered only when the broker's PUBACK carries a success reason code. Rows
are never deleted: what the dock told the unit, and when the broker took it,
stays on record.

    box = Outbox(path)
    box.put(topic, payload, key=attestation.id, retain=True)   # once per key
    for msg in box.pending(): ...
    box.delivered(msg.row, reason_code=0)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,          -- attestation or alert id: put twice, sent once
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    acked_ns INTEGER,                  -- NULL until the broker PUBACKed it with success
    reason_code INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(acked_ns) WHERE acked_ns IS NULL;
CREATE TABLE IF NOT EXISTS attested (
    device TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL          -- the last entry an attestation covered
);
"""


@dataclass(frozen=True)
class OutboxMessage:
    row: int
    key: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    attempts: int


class Outbox:
    """An SQLite outbox, safe to use from the publisher's threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, topic: str, payload: bytes, key: str, qos: int = 1,
            retain: bool = False) -> bool:
        """Keep a message until delivered. False if ``key`` is already here."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (key, topic, payload, qos, retain, created_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, topic, payload, qos, int(retain), time.time_ns()))
            return cur.rowcount == 1

    def pending(self, limit: int = 1000) -> list[OutboxMessage]:
        """Undelivered messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT row, key, topic, payload, qos, retain, attempts FROM outbox "
                "WHERE acked_ns IS NULL ORDER BY row LIMIT ?", (limit,)).fetchall()
        return [OutboxMessage(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5]), r[6])
                for r in rows]

    def latest(self) -> OutboxMessage | None:
        """The message put last, delivered or not."""
        with self._lock:
            r = self._db.execute("SELECT row, key, topic, payload, qos, retain, attempts "
                                 "FROM outbox ORDER BY row DESC LIMIT 1").fetchone()
        return None if r is None else OutboxMessage(r[0], r[1], r[2], bytes(r[3]), r[4],
                                                    bool(r[5]), r[6])

    def sent(self, row: int) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE row = ?", (row,))

    def delivered(self, row: int, reason_code: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET acked_ns = ?, reason_code = ?, last_error = NULL "
                "WHERE row = ? AND acked_ns IS NULL", (time.time_ns(), reason_code, row))

    def failed(self, row: int, error: str, reason_code: int | None = None) -> None:
        """A refusal or timeout: recorded, and the message stays pending."""
        with self._lock:
            self._db.execute("UPDATE outbox SET last_error = ?, reason_code = ? WHERE row = ?",
                             (error, reason_code, row))

    def count_pending(self) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE acked_ns IS NULL").fetchone()
        return int(n)

    def status(self, key: str) -> tuple[int | None, int | None, str | None] | None:
        """(acked_ns, reason_code, last_error) of the message ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT acked_ns, reason_code, last_error FROM outbox "
                                   "WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    # The range the last attestation of each device covered, so the next one
    # starts after it, across dock restarts.
    def last_attested(self, device: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT last_seq FROM attested WHERE device = ?",
                                   (device,)).fetchone()
        return None if row is None else int(row[0])

    def put_attestation(self, topic: str, payload: bytes, key: str, device: str,
                        last_seq: int) -> bool:
        """An attestation and its device's new range, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (key, topic, payload, qos, retain, created_ns)"
                    " VALUES (?, ?, ?, 1, 1, ?)", (key, topic, payload, time.time_ns()))
                self._db.execute(
                    "INSERT INTO attested (device, last_seq) VALUES (?, ?) ON CONFLICT(device) "
                    "DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                    (device, last_seq))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur.rowcount == 1
