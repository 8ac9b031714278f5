"""The archive façade: what the custodian's CLI and web view call.

Every method that reads or changes anything names ``who`` and is written to
the audit log before it returns (a search, a view, an export included).
Originals are never touched: annotations and holds are records beside them; a
deletion removes only media files past their retention, against a signed
tombstone written first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.archive.audit import AuditLog, AuditRecord
from daemon.archive.index import Annotation, Index, Query, RecordingRow, SqliteIndex
from daemon.archive.retention import RetentionPolicy
from daemon.archive.store import EvidenceStore, FilesystemStore
from daemon.archive.tlog import CHECKPOINTS_DIR, DeviceLog
from hardware.host.durable import write_new
from protocol.archive_log import open_device_checkpoint
from protocol.audit_anchor import anchor_line, audit_anchor, check_audit_anchors
from protocol.checkpoint import CheckpointError
from protocol.entries import (
    Interruption,
    Marker,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    VoiceNote,
)
from protocol.envelope import SignedEntry, parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.receipt import ArchivedMedia, open_receipt
from protocol.store_reader import TRUST_NAME, read_trust
from protocol.tombstone import Tombstone, sign_tombstone
from protocol.trust import TrustFile
from protocol.verify import Finding

AUDIT_NAME = "audit.jsonl"
INDEX_NAME = "index.sqlite"
CONFIG_NAME = "archive.toml"
TOMBSTONES_DIR = "tombstones"


class ArchiveError(Exception):
    """An archive action refused or impossible; the message says why."""


class DeletionRefused(ArchiveError):
    pass


def recording_id(device: str, recording: int) -> str:
    return f"{device}/{recording}"


def parse_recording_id(text: str) -> tuple[str, int]:
    device, sep, seq = text.rpartition("/")
    if not sep or not device or not seq.isdigit():
        raise ArchiveError(f"{text!r} is not a recording id (DEVICE/SEQ, e.g. DEV-0001/2)")
    return device, int(seq)


def signed_entries(ledger: bytes) -> list[SignedEntry]:
    out = []
    for line in split_lines(ledger):
        try:
            out.append(parse_line(line))
        except ProtocolError:
            continue  # verification reports it; the index lists what can be read
    return out


def recordings_of(device: str, entries: list[SignedEntry]) -> list[RecordingRow]:
    """The recordings in a ledger and the seqs of the entries that belong to each."""
    rows: dict[int, RecordingRow] = {}
    interruptions: dict[int, int] = {}  # interruption seq -> recording
    for signed in entries:
        e, body = signed.entry, signed.entry.body
        rec: int | None = None
        if isinstance(body, RecordStart):
            rows[e.seq] = RecordingRow(recording_id(device, e.seq), device, e.seq, body.officer,
                                       body.category, body.category, e.time.utc_ns, None, 0, 0,
                                       0.0)
            rec = e.seq
        elif isinstance(body, Segment):
            rec = body.recording
            if rec in rows:
                rows[rec].segments += 1
                rows[rec].seconds += (body.last_capture_utc_ns - body.first_capture_utc_ns
                                      + body.frame_period_ns) / 1e9
        elif isinstance(body, Interruption):
            rec = body.recording
            if rec is not None:
                interruptions[e.seq] = rec
        elif isinstance(body, VoiceNote):
            rec = interruptions.get(body.interruption)
        elif isinstance(body, Marker | Resume):
            rec = body.recording
        elif isinstance(body, RecordStop):
            rec = body.recording
            if rec in rows:
                rows[rec].stop_utc_ns = e.time.utc_ns
        if rec is not None and rec in rows:
            rows[rec].entries.append(e.seq)
            rows[rec].files += [m.file for m in e.media()]
    return list(rows.values())


@dataclass
class RecordingView:
    row: RecordingRow
    annotations: list[Annotation]
    entries: list[SignedEntry]
    on_hold: bool
    retention_until_ns: int | None
    audit: list[AuditRecord] = field(default_factory=list)

    def latest(self, kind: str) -> str | None:
        values = [a.value for a in self.annotations if a.kind == kind]
        return values[-1] if values else None


class Archive:
    """An archive folder with its store, index, audit log and device logs.

    >>> import tempfile
    >>> Archive.open(Path(tempfile.mkdtemp()))
    Traceback (most recent call last):
    ...
    daemon.archive.archive.ArchiveError: ...: no trust.json: not an archive
    """

    def __init__(self, root: Path, trust: TrustFile, store: EvidenceStore, index: Index,
                 policy: RetentionPolicy, clock: Callable[[], int] = time.time_ns):
        self.root, self.trust, self.store, self.index = Path(root), trust, store, index
        self.policy, self.clock = policy, clock
        self.audit = AuditLog(self.root / AUDIT_NAME, clock)

    @classmethod
    def open(cls, root: Path, clock: Callable[[], int] = time.time_ns) -> Archive:
        root = Path(root)
        if not (root / TRUST_NAME).is_file():
            raise ArchiveError(f"{root}: no {TRUST_NAME}: not an archive")
        return cls(root, read_trust(root / TRUST_NAME), FilesystemStore(root),
                   SqliteIndex(root / INDEX_NAME), RetentionPolicy.load(root / CONFIG_NAME),
                   clock)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- taking in ------------------------------------------------------------

    def ingest(self, device: str, who: str, archive_key: SigningKey | None = None) -> list[str]:
        """Index the recordings of a device's archived ledger (and sign a checkpoint
        of its log, anchoring the audit log's head, when given a signing key: the
        dock's at docking, or the archive's). Returns their ids."""
        entries = signed_entries(self.store.ledger(device))
        stored = self._storage_times(device)
        now = self.clock()
        rows = recordings_of(device, entries)
        for row in rows:
            last = max(row.entries)
            covering = [t for last_seq, t in stored if last_seq >= last]
            row.stored_utc_ns = min(covering) if covering else now
            self.index.put_recording(row)
        details: dict = {"recordings": len(rows), "entries": len(entries)}
        if archive_key is not None:
            # The audit log's head goes into the signed checkpoint (ADR 0041).
            note = self.log(device).sign(archive_key, (anchor_line(*self.audit.head()),))
            details["checkpoint_size"] = int(note.split(b"\n")[1])
        self.audit.append(who, "write", device, **details)
        return [r.id for r in rows]

    def _storage_times(self, device: str) -> list[tuple[int, int]]:
        """(last seq, archived time) of each valid dock receipt for the device."""
        out = []
        for envelope in self.store.receipts(device):
            try:
                r = open_receipt(envelope, self.trust)
            except ProtocolError:
                continue
            if r.device == device:
                out.append((r.last_seq, r.archived_utc_ns))
        return out

    def log(self, device: str) -> DeviceLog:
        return DeviceLog(self.root, self.trust, self.store, device)

    def audit_anchors(self) -> tuple[int, list[Finding]]:
        """How many signed checkpoints anchor the audit log's head, and an
        ``audit_rewritten`` finding for each the audit log contradicts (ADR 0041)."""
        anchors = []
        for folder in sorted((self.root / CHECKPOINTS_DIR).glob("*")):
            for path in self.log(folder.name).checkpoint_files():
                try:
                    cp = open_device_checkpoint(path.read_bytes(), self.trust,
                                                folder.name).checkpoint
                except CheckpointError:
                    continue  # custody verify reports it as bad_checkpoint
                anchor = audit_anchor(cp.extensions)
                if anchor is not None:
                    anchors.append((f"{folder.name}/{path.name}", *anchor))
        audit = self.audit.path.read_bytes() if self.audit.path.is_file() else b""
        return len(anchors), check_audit_anchors(audit, anchors)

    # --- the custodian's actions ------------------------------------------------

    def search(self, query: Query, who: str) -> list[RecordingRow]:
        rows = self.index.search(query)
        self.audit.append(who, "search", None, query=query.describe(), results=len(rows))
        return rows

    def _row(self, rec_id: str) -> RecordingRow:
        parse_recording_id(rec_id)
        row = self.index.get(rec_id)
        if row is None:
            raise ArchiveError(f"{rec_id}: no such recording in the index")
        return row

    def view(self, rec_id: str, who: str, audit: bool = True) -> RecordingView:
        row = self._row(rec_id)
        wanted = set(row.entries)
        entries = [s for s in signed_entries(self.store.ledger(row.device))
                   if s.entry.seq in wanted]
        annotations = self.index.annotations(rec_id)
        view = RecordingView(row, annotations, entries, _on_hold(annotations),
                             self._retention_until(row, annotations))
        if audit:
            self.audit.append(who, "view", rec_id)
        view.audit = self.audit.about(rec_id)
        return view

    def annotate(self, rec_id: str, kind: str, value: str, who: str) -> Annotation:
        """A case, party, category or note beside the recording (never in it)."""
        self._row(rec_id)
        if kind not in ("case", "party", "category", "note"):
            raise ArchiveError(f"annotation kind {kind!r}: case, party, category or note "
                               "(holds and paper-file dates have their own commands)")
        if not value.strip():
            raise ArchiveError("an annotation needs a value")
        return self._annotate(rec_id, kind, value.strip(), who, "annotate")

    def _annotate(self, rec_id: str, kind: str, value: str, who: str,
                  action: str) -> Annotation:
        a = Annotation(rec_id, kind, value, who, self.clock())
        try:
            a.id = self.index.annotate(a)
        except ValueError as e:
            raise ArchiveError(str(e)) from e
        self.audit.append(who, action, rec_id, kind=kind, value=value)
        return a

    def hold(self, rec_id: str, who: str, why: str) -> None:
        self._row(rec_id)
        self._annotate(rec_id, "hold", _why(why), who, "hold")

    def release(self, rec_id: str, who: str, why: str) -> None:
        if not _on_hold(self.index.annotations(rec_id)):
            raise ArchiveError(f"{rec_id} is not on hold")
        self._annotate(rec_id, "release", _why(why), who, "release")

    def set_paper_files_until(self, rec_id: str, until_ns: int, who: str) -> None:
        self._row(rec_id)
        self._annotate(rec_id, "paper_files_until", str(until_ns), who, "annotate")

    def _retention_until(self, row: RecordingRow, annotations: list[Annotation]) -> int | None:
        paper = [int(a.value) for a in annotations if a.kind == "paper_files_until"]
        return self.policy.until_ns(row.category, row.start_utc_ns, paper[-1] if paper else None)

    def delete(self, rec_id: str, who: str, why: str, archive_key: SigningKey) -> Tombstone:
        """Delete a recording's media at the end of its retention, leaving a signed tombstone.

        Refused (:class:`DeletionRefused`) before its time, under a legal hold, or twice.
        The refusal is audited too.
        """
        row = self._row(rec_id)
        annotations = self.index.annotations(rec_id)
        until = self._retention_until(row, annotations)
        now = self.clock()
        problem = None
        if row.deleted:
            problem = "already deleted"
        elif _on_hold(annotations):
            problem = "it is under a legal hold"
        elif until is None:
            problem = (f"its category {row.category!r} is kept as long as the paper files, "
                       "and no one recorded when they are disposed of")
        elif now < until:
            problem = f"its retention runs until {_date(until)}"
        if problem:
            self.audit.append(who, "delete", rec_id, refused=problem, reason=why)
            raise DeletionRefused(f"{rec_id}: deletion refused: {problem}")
        entries = {s.entry.seq: s for s in signed_entries(self.store.ledger(row.device))}
        media = [ArchivedMedia(file=m.file, sha256=m.sha256)
                 for seq in row.entries if seq in entries for m in entries[seq].entry.media()]
        tombstone = Tombstone(unit=self.trust.unit, device=row.device, recording=row.recording,
                              media=media, deleted_by=who, reason=_why(why),
                              deleted_utc_ns=now, retention_until_utc_ns=until,
                              category=row.category)
        envelope = sign_tombstone(tombstone, archive_key.signer())
        path = self.root / TOMBSTONES_DIR / row.device / f"{row.recording:08d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # The tombstone is durable (its name too) before any file goes.
        write_new(path, json.dumps(envelope, indent=2).encode() + b"\n")
        for m in media:
            self.store.delete_media(row.device, m.file)
        self.index.mark_deleted(rec_id)
        self.audit.append(who, "delete", rec_id, reason=tombstone.reason,
                          files=[m.file for m in media], tombstone=str(path.relative_to(
                              self.root)))
        return tombstone


def _why(why: str) -> str:
    if not why or not why.strip():
        raise ArchiveError("say why (a reason is part of the record)")
    return why.strip()


def _on_hold(annotations: list[Annotation]) -> bool:
    state = False
    for a in annotations:
        if a.kind == "hold":
            state = True
        elif a.kind == "release":
            state = False
    return state


def _date(ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ns / 1e9))
