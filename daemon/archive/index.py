"""The archive's index (Art. 9): every recording by device, officer, category,
recording date and storage date, and the custodian's annotations (case name,
party, reclassification, legal holds) as separate records beside it.

:class:`Index` is the interface; :class:`SqliteIndex` (stdlib ``sqlite3``,
FTS5 over annotation text) is the embedded default. A PostgreSQL index would
implement the same methods (``tsvector`` for the text search). The index is
derived data: recordings are re-read from the ledgers, annotations are also in
the audit log, so nothing is lost if it is rebuilt.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LATE_NS = 24 * 3600 * 10**9  # Art. 10: hand in within 24 hours
ANNOTATION_KINDS = ("case", "party", "category", "paper_files_until", "note", "hold", "release")


@dataclass
class RecordingRow:
    id: str  # "<device>/<seq of record_start>"
    device: str
    recording: int
    officer: str
    device_category: str  # as the device recorded it
    category: str  # effective: the custodian's reclassification, else the device's
    start_utc_ns: int
    stop_utc_ns: int | None
    stored_utc_ns: int
    segments: int
    seconds: float
    files: list[str] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)  # seqs of the recording's entries
    deleted: bool = False

    @property
    def late(self) -> bool:
        return self.stored_utc_ns - self.start_utc_ns > LATE_NS


@dataclass
class Annotation:
    recording_id: str
    kind: str
    value: str
    who: str
    utc_ns: int
    id: int | None = None


@dataclass
class Query:
    text: str | None = None  # full text over all annotations
    case: str | None = None
    party: str | None = None
    officer: str | None = None
    device: str | None = None
    category: str | None = None
    recorded_from_ns: int | None = None
    recorded_to_ns: int | None = None
    stored_from_ns: int | None = None
    stored_to_ns: int | None = None
    not_classified: bool = False  # no case annotation yet
    late: bool = False  # handed in more than 24 h after it started
    limit: int = 100

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False) and k != "limit"}


class Index(Protocol):
    def put_recording(self, row: RecordingRow) -> None: ...
    def put_many(self, rows: list[RecordingRow]) -> None: ...
    def get(self, recording_id: str) -> RecordingRow | None: ...
    def annotate(self, annotation: Annotation) -> int: ...
    def annotate_many(self, annotations: list[Annotation]) -> list[int]: ...
    def annotations(self, recording_id: str) -> list[Annotation]: ...
    def search(self, query: Query) -> list[RecordingRow]: ...
    def mark_deleted(self, recording_id: str) -> None: ...
    def close(self) -> None: ...


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS recordings (
    rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL,
    recording INTEGER NOT NULL, officer TEXT NOT NULL, device_category TEXT NOT NULL,
    category TEXT NOT NULL, start_ns INTEGER NOT NULL, stop_ns INTEGER,
    stored_ns INTEGER NOT NULL, segments INTEGER NOT NULL, seconds REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, classified INTEGER NOT NULL DEFAULT 0,
    late INTEGER GENERATED ALWAYS AS (stored_ns - start_ns > {LATE_NS}) VIRTUAL);
CREATE INDEX IF NOT EXISTS rec_device ON recordings(device, start_ns);
CREATE INDEX IF NOT EXISTS rec_officer ON recordings(officer, start_ns);
CREATE INDEX IF NOT EXISTS rec_category ON recordings(category, start_ns);
CREATE INDEX IF NOT EXISTS rec_start ON recordings(start_ns);
CREATE INDEX IF NOT EXISTS rec_stored ON recordings(stored_ns);
CREATE INDEX IF NOT EXISTS rec_classified ON recordings(classified, start_ns);
CREATE INDEX IF NOT EXISTS rec_late ON recordings(late, start_ns);
-- The bulky lists apart, so the searched table stays narrow.
CREATE TABLE IF NOT EXISTS recording_parts (
    rid INTEGER PRIMARY KEY, files TEXT NOT NULL, entries TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY, recording_id TEXT NOT NULL, kind TEXT NOT NULL,
    value TEXT NOT NULL, who TEXT NOT NULL, utc_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ann_recording ON annotations(recording_id, id);
-- One text document per recording (rowid = its rid), rebuilt from its annotations.
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(
    case_text, party_text, other_text, detail=column);
"""

_FTS_COLUMN = {"case": "case_text", "party": "party_text"}


def _terms(text: str) -> str:
    """User text as FTS5 terms that must all occur, in any order: the words (as the
    unicode61 tokenizer cuts them) each quoted, so no query syntax gets through."""
    words = re.findall(r"\w+", text) or ['""']
    return "(" + " ".join(f'"{w}"' for w in words) + ")"


class SqliteIndex:
    """The embedded index in one SQLite file (WAL, so readers never wait on a writer)."""

    def __init__(self, path: Path | str):
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def put_recording(self, row: RecordingRow) -> None:
        """Insert or refresh a recording as read from its ledger; keeps its annotations
        (and the reclassification they carry) and its deleted mark."""
        self.put_many([row])

    def put_many(self, rows: list[RecordingRow]) -> None:
        with self.db:  # one transaction
            for row in rows:
                self.db.execute(
                    "INSERT INTO recordings (id, device, recording, officer, device_category, "
                    "category, start_ns, stop_ns, stored_ns, segments, seconds) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "officer=excluded.officer, device_category=excluded.device_category, "
                    "stop_ns=excluded.stop_ns, stored_ns=MIN(stored_ns, excluded.stored_ns), "
                    "segments=excluded.segments, seconds=excluded.seconds",
                    (row.id, row.device, row.recording, row.officer, row.device_category,
                     row.category, row.start_utc_ns, row.stop_utc_ns, row.stored_utc_ns,
                     row.segments, row.seconds))
                self.db.execute(
                    "INSERT OR REPLACE INTO recording_parts (rid, files, entries) "
                    "SELECT rid, ?, ? FROM recordings WHERE id = ?",
                    (json.dumps(row.files), json.dumps(row.entries), row.id))

    def get(self, recording_id: str) -> RecordingRow | None:
        cur = self.db.execute(f"SELECT {_COLUMNS} FROM recordings r JOIN recording_parts p "
                              "ON p.rid = r.rid WHERE r.id = ?", (recording_id,))
        found = cur.fetchone()
        return _row(found) if found else None

    def annotate(self, a: Annotation) -> int:
        return self.annotate_many([a])[0]

    def annotate_many(self, annotations: list[Annotation]) -> list[int]:
        for a in annotations:
            if a.kind not in ANNOTATION_KINDS:
                raise ValueError(f"unknown annotation kind {a.kind!r}")
        ids = []
        with self.db:
            for a in annotations:
                cur = self.db.execute(
                    "INSERT INTO annotations (recording_id, kind, value, who, utc_ns) "
                    "VALUES (?,?,?,?,?)", (a.recording_id, a.kind, a.value, a.who, a.utc_ns))
                ids.append(int(cur.lastrowid))
                if a.kind == "case":
                    self.db.execute("UPDATE recordings SET classified = 1 WHERE id = ?",
                                    (a.recording_id,))
                elif a.kind == "category":
                    self.db.execute("UPDATE recordings SET category = ? WHERE id = ?",
                                    (a.value, a.recording_id))
            for rec in {a.recording_id for a in annotations}:
                self._refresh_text(rec)
        return ids

    def _refresh_text(self, recording_id: str) -> None:
        found = self.db.execute("SELECT rid FROM recordings WHERE id = ?",
                                (recording_id,)).fetchone()
        if found is None:
            return
        texts: dict[str, list[str]] = {"case": [], "party": [], "other": []}
        for kind, value in self.db.execute("SELECT kind, value FROM annotations WHERE "
                                           "recording_id = ? ORDER BY id", (recording_id,)):
            texts[kind if kind in ("case", "party") else "other"].append(value)
        self.db.execute("DELETE FROM search_text WHERE rowid = ?", found)
        self.db.execute("INSERT INTO search_text (rowid, case_text, party_text, other_text) "
                        "VALUES (?,?,?,?)", (found[0], *("\n".join(v) for v in texts.values())))

    def annotations(self, recording_id: str) -> list[Annotation]:
        cur = self.db.execute("SELECT recording_id, kind, value, who, utc_ns, id FROM "
                              "annotations WHERE recording_id = ? ORDER BY id", (recording_id,))
        return [Annotation(*r) for r in cur.fetchall()]

    def _count(self, match: str) -> int:
        return self.db.execute("SELECT count(*) FROM search_text WHERE search_text MATCH ?",
                               (match,)).fetchone()[0]

    def mark_deleted(self, recording_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE recordings SET deleted = 1 WHERE id = ?", (recording_id,))

    def search(self, q: Query) -> list[RecordingRow]:
        where: list[str] = []
        args: list[object] = []

        matches: list[str] = []

        def text_match(text: str, kind: str | None) -> None:
            column = _FTS_COLUMN.get(kind or "")
            matches.append(f"{column} : {_terms(text)}" if column else _terms(text))
            where.append("rid IN (SELECT rowid FROM search_text WHERE search_text MATCH ?)")
            args.append(matches[-1])

        if q.text:
            text_match(q.text, None)
        if q.case:
            text_match(q.case, "case")
        if q.party:
            text_match(q.party, "party")
        for column, value in (("officer", q.officer), ("device", q.device),
                              ("category", q.category)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        for column, op, value in (("start_ns", ">=", q.recorded_from_ns),
                                  ("start_ns", "<", q.recorded_to_ns),
                                  ("stored_ns", ">=", q.stored_from_ns),
                                  ("stored_ns", "<", q.stored_to_ns)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if q.not_classified:
            where.append("classified = 0")
        if q.late:
            where.append("late = 1")
        # The page of matches first (narrow table), then their lists. Words common to
        # many recordings: walk the recordings newest first and probe the text index,
        # rather than sort all the matches (counting them is cheap; ADR 0033).
        page = "SELECT rid FROM recordings"
        if matches and not (q.officer or q.device or q.category or q.not_classified
                            or q.late) and all(self._count(m) > _BROAD for m in matches):
            page += " INDEXED BY rec_start"
        if where:
            page += " WHERE " + " AND ".join(where)
        page += " ORDER BY start_ns DESC LIMIT ?"
        args.append(q.limit)
        sql = (f"SELECT {_COLUMNS} FROM recordings r JOIN recording_parts p ON p.rid = r.rid "
               f"WHERE r.rid IN ({page}) ORDER BY r.start_ns DESC")
        return [_row(r) for r in self.db.execute(sql, args).fetchall()]


_BROAD = 2000  # text matches above which the newest-first walk is the faster plan


_COLUMNS = ("r.id, r.device, r.recording, r.officer, r.device_category, r.category, "
            "r.start_ns, r.stop_ns, r.stored_ns, r.segments, r.seconds, p.files, p.entries, "
            "r.deleted")


def _row(r: tuple) -> RecordingRow:
    return RecordingRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                        json.loads(r[11]), json.loads(r[12]), bool(r[13]))
