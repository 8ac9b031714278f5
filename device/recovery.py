"""Recovering the segments a power cut (or crash) left unsealed in ``pending/``.

At every fragment end the sealer marks the segment file, in plaintext
metadata (an extended attribute), with how many bytes the fragment ends at
(with their SHA-256) and what the segment holds up to there, and makes bytes
and mark durable with one fsync; the file's context is in its journal beside
it (``device/sealer.py``, "The journal"). The device cannot decrypt its own
footage; journal and marks are all it needs. At the next start, before
recording again, the recorder calls :func:`recover_pending`, which for each
``pending/<file>.cseg``:

1. finds the newest fragment mark whose bytes are all on the medium: its
   ``stored_size`` is within the file's whole chunks and the file's first
   ``stored_size`` bytes hash to its ``stored_sha256`` (a cut can leave a
   mark on the medium without all its bytes; then the other mark serves);
2. moves every byte beyond it (a chunk torn by the cut, a fragment never
   marked) into ``pending/<file>.tail-<ns>``: nothing is deleted;
3. truncates the file to that size (it then has no final chunk:
   ``decrypt_segment`` says ``complete=False``, which export accepts because
   the entry says ``recovered``), moves it into ``media/`` (never over an
   existing file) and fsyncs both folders;
4. returns a :class:`RecoveredSegment`: the ``segment`` body to append
   (``recovered: true``) and the best known time of the cut.

A file with no whole marked fragment (cut in its first second, or a bare
header) is moved aside whole to ``.tail-<ns>``, with its journal; the cut is
still reported (``segment`` is None) so the recorder can declare it. A file
whose journal says it was sealed whole (final chunk durable) but that never
reached ``media/`` is moved there whole, and its entry says ``recovered: false``.
A file whose recording the ledger shows going on after it (a later segment,
or its ``record_stop``) is one the medium refused while recording, declared
then (``device/recorder/seal.py``) and not recoverable at once: it is moved aside
whole and nothing is returned for it, since an entry now would come after
later ones.

A journal whose file has already left ``pending/`` means the cut came after
sealing (``close(keep_journal=True)``) or after an earlier recovery, but maybe
before the ``segment`` entry was appended: if no entry of the ledger seals the
file, its body is returned again; otherwise the journal is removed. So
recovery can itself be cut at any point and simply run again.

What the recorder then appends, per recording, in this order: each returned
``segment`` body, then one ``interruption`` (reason from :func:`cut_reason`,
``detected_by`` :data:`DETECTED_BY`, ``cut_utc_ns`` the latest of its
results'), then calls :func:`release_journal` for each result.

>>> import tempfile
>>> from protocol.keys import SigningKey
>>> key = JournalKey.derive(SigningKey.generate())
>>> recover_pending(Path(tempfile.mkdtemp()), journal_key=key)  # nothing pending: nothing to do
[]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.sealer import (
    JOURNAL_FORMAT,
    JOURNAL_SUFFIX,
    PENDING_DIR,
    clear_fragment_marks,
    encryption_of,
    journal_path,
    read_fragment_marks,
)
from hardware.host.durable import fsync_dir, write_new
from protocol.entries import Exemption, Interruption, MediaFile, RecordStop, Segment, VoiceNote
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.journal_auth import JournalKey
from protocol.segment_crypto import (
    HEADER_SIZE,
    MAGIC,
    MAX_CHUNK_PLAINTEXT,
    TAG_SIZE,
    read_layout,
)
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR

log = logging.getLogger(__name__)

DETECTED_BY = "boot_recovery"  # the interruption's detected_by for cuts found at start
SEGMENT_SUFFIX = ".cseg"
_NAME = re.compile(r"r(?P<recording>\d+)-(?P<index>\d+)\.cseg")
# What the journal's context must hold for recovery to write the segment entry.
_CONTEXT_KEYS = ("recording", "span", "index", "utc_offset_ns", "frame_period_ns", "audio_rate")
# A voice note's or an exemption memo's (written by the same muxer, sealed by the same
# sealer): its entry names the interruption or the reason, not a recording.
NOTE_KINDS = ("voice_note", "exemption")
_NOTE_KEYS = ("kind", "utc_offset_ns", "audio_rate")


def _required_keys(context: dict[str, Any]) -> tuple[str, ...]:
    return _NOTE_KEYS if context.get("kind") in NOTE_KINDS else _CONTEXT_KEYS


@dataclass(frozen=True)
class RecoveredSegment:
    """One cut found in ``pending/``: what to append for it.

    ``cut_utc_ns`` is the best known time capture stopped: the last moment the
    device is known to have been running, i.e. when it last wrote the
    journal (a fragment made durable, or the file opened), on the monotonic
    clock mapped to UTC with the recording's offset, like capture times. The
    cut came at or after it, and at most about one fragment plus the seal
    queue's delay later. It is never before ``last_capture_utc_ns``. Without a
    authenticated record saying when (no journal, or one that does not
    verify) it is None: the recorder then takes the ledger's last capture.
    """

    segment: Segment | None  # the body to append; None: nothing whole survived
    recording: int  # seq of the recording's record_start
    cut_utc_ns: int | None  # None: no authenticated record says when (the ledger must)
    file: str  # the file in media/ (segment) or the pending file's name (none)
    span: int | None = None
    index: int | None = None
    last_capture_utc_ns: int | None = None  # last frame or sample kept; None if none
    tail_file: str | None = None  # bytes beyond what was kept, in pending/
    journal: str | None = None  # the journal left in pending/ until release_journal()
    sealed_before_cut: bool = False  # sealed whole (final chunk); only its entry was missing


@dataclass(frozen=True)
class RecoveredNote:
    """A voice note (or an exemption's memo) a cut left in ``pending/``: its entry.

    The note is sealed to its last whole fragment, like a segment. Its
    ``speech_seconds`` is 0: the speech the device heard died with the cut, and
    the device cannot decrypt the file to hear it again, so a recovered note
    explains nothing and the prompt comes again at the next resume (ADR 0048).
    """

    body: VoiceNote | Exemption
    file: str  # in media/
    journal: str | None = None  # left in pending/ until release_journal()
    tail_file: str | None = None
    recording: int = -1  # sorts before every recording's segments: appended first
    index: int | None = None


@dataclass
class _Journal:
    """A journal as read back: its first line, its later lines, the file's fragment marks."""

    header: dict[str, Any]
    fragments: list[dict[str, Any]] = field(default_factory=list)  # the marks (add_marks)
    finished: dict[str, Any] | None = None  # the last "sealed" or "recovered" line
    last_written_monotonic_ns: int | None = None
    refused: int = 0  # lines and marks that did not verify: never trusted, only counted

    @property
    def context(self) -> dict[str, Any]:
        context = self.header.get("context")
        return context if isinstance(context, dict) else {}

    def note_written(self, record: dict[str, Any]) -> None:
        written = _int(record, "written_monotonic_ns") or _int(record, "opened_monotonic_ns")
        if written is not None:
            self.last_written_monotonic_ns = max(self.last_written_monotonic_ns or 0, written)

    def add_marks(self, segment_path: Path, name: str, key: JournalKey) -> None:
        """Take in the fragment marks of the segment file (in pending/ or media/).

        Only marks the device made for this very file (``name``, and the
        recording, span and index its authenticated header names) count.
        """
        names = {"file": name, **{k: self.context.get(k) for k in ("recording", "span", "index")}}
        for mark in read_fragment_marks(segment_path):
            if not (self.header and key.verify(mark)
                    and all(mark.get(k) == v for k, v in names.items())):
                log.error("%s: a fragment mark that is not the device's for this file; "
                          "not trusted", segment_path)
                self.refused += 1
                continue
            if _int(mark, "stored_size") is not None:
                self.note_written(mark)
                self.fragments.append(mark)


def _int(record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_journal(path: Path, key: JournalKey) -> _Journal:
    """Parse a journal file; a last line cut short (no ``\\n``) or unreadable is ignored.

    Only lines whose MAC ``key`` verifies, made for the file the journal is
    named after, are taken in; the others are counted in ``refused``. Its
    fragment records are the segment file's marks (:meth:`_Journal.add_marks`).
    """
    journal = _Journal(header={})
    if not path.exists():
        return journal
    file = path.name[: -len(JOURNAL_SUFFIX)]
    lines = path.read_bytes().split(b"\n")[:-1]  # the piece after the last \n is torn
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s: unreadable journal line skipped", path)
            continue
        if not isinstance(record, dict):
            continue
        if not key.verify(record) or record.get("file") != file:
            log.error("%s: a journal line that is not the device's for %s; not trusted",
                      path, file)
            journal.refused += 1
            continue
        journal.note_written(record)
        if record.get("journal") == JOURNAL_FORMAT:
            journal.header = record
        elif record.get("sealed") is True or record.get("recovered") is True:
            journal.finished = record
    return journal


def whole_chunks_size(data: bytes) -> int:
    """Bytes of a stored segment up to the end of its last complete chunk (0: no header).

    Like :func:`protocol.segment_crypto.read_layout`, but a length prefix that
    cannot be (garbage a cut left) ends the walk instead of raising.

    >>> from protocol.keys import ArchiveSecretKey
    >>> from protocol.segment_crypto import SegmentEncryptor
    >>> enc = SegmentEncryptor(ArchiveSecretKey.generate().public_raw)
    >>> data = enc.header + enc.seal_chunk(b"x" * 100)
    >>> whole_chunks_size(data + b"\\x00" * 7) == len(data)
    True
    """
    try:
        return read_layout(data).whole_size
    except ProtocolError:
        pass
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        return 0
    pos = HEADER_SIZE
    while pos + 4 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if not TAG_SIZE <= length <= MAX_CHUNK_PLAINTEXT + TAG_SIZE or pos + 4 + length > len(
                data):
            break
        pos += 4 + length
    return pos


def _last_whole_fragment(data: bytes, fragments: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest fragment record, with content, whose bytes are all in ``data`` unchanged."""
    whole = whole_chunks_size(data)
    digest, hashed, best = hashlib.sha256(), 0, None
    for record in sorted(fragments, key=lambda r: r["stored_size"]):
        size = record["stored_size"]
        if size > whole or size < hashed:
            break
        digest.update(data[hashed:size])
        hashed = size
        if digest.copy().hexdigest() != record.get("stored_sha256"):
            # Not what the mark names: bytes it was written for never all reached the
            # medium (or changed since). Nothing from here on is kept.
            log.warning("stored bytes before offset %d differ from fragment %s's mark", size,
                        record.get("fragment"))
            break
        if isinstance(record.get("content"), dict):
            best = record
    return best


def cut_reason(ledger_last_boot_id: str | None, current_boot_id: str) -> str:
    """``crash`` if the last entry was made in this very boot, else ``power_loss``.

    The kernel draws a new boot id at every start: the same one means the
    recorder process died but the machine did not.

    >>> cut_reason("3f2a", "3f2a"), cut_reason("3f2a", "91bc"), cut_reason(None, "91bc")
    ('crash', 'power_loss', 'power_loss')
    """
    return "crash" if ledger_last_boot_id == current_boot_id else "power_loss"


def interruption_for(cuts: list[RecoveredSegment], reason: str) -> Interruption:
    """The ``interruption`` entry body for one recording's cuts (its latest cut time).

    >>> cut = RecoveredSegment(None, recording=7, cut_utc_ns=5, file="r000007-00001.cseg")
    >>> interruption_for([cut], "power_loss").detected_by
    'boot_recovery'
    """
    if len({c.recording for c in cuts}) != 1:
        raise ValueError("one interruption per recording: give the cuts of one recording")
    known = [c.cut_utc_ns for c in cuts if c.cut_utc_ns is not None]
    if not known:
        raise ValueError("no cut time is known: take the ledger's last capture")
    return Interruption(reason=reason, detected_by=DETECTED_BY,
                        cut_utc_ns=max(known), recording=cuts[0].recording)


def release_journal(store: Path, recovered: RecoveredSegment | RecoveredNote) -> None:
    """The entries for ``recovered`` are appended: its journal and marks are no longer needed."""
    if isinstance(recovered, RecoveredNote) or recovered.segment is not None:
        clear_fragment_marks(Path(store) / MEDIA_DIR / recovered.file)
    if recovered.journal is not None:
        path = Path(store) / PENDING_DIR / recovered.journal
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)


@dataclass
class _LedgerFacts:
    """What recovery needs to know of the ledger."""

    files: set[str] = field(default_factory=set)  # every media file an entry seals
    ephemerals: set[str] = field(default_factory=set)  # their segment headers' ephemeral keys
    # Per recording: the highest segment index entered, or inf once stopped.
    reached: dict[int, float] = field(default_factory=dict)


def _read_ledger(ledger: Path) -> _LedgerFacts:
    facts = _LedgerFacts()
    if ledger.exists():
        for line in split_lines(ledger.read_bytes()):
            try:
                entry = parse_line(line).entry
            except ProtocolError:
                continue  # a line torn by the cut is no entry
            for media in entry.media():
                facts.files.add(media.file)
                if isinstance(media.encryption.get("ephemeral"), str):
                    facts.ephemerals.add(media.encryption["ephemeral"])
            body = entry.body
            if isinstance(body, Segment):
                facts.reached[body.recording] = max(facts.reached.get(body.recording, -1),
                                                    body.index)
            elif isinstance(body, RecordStop):
                facts.reached[body.recording] = math.inf
    return facts


def _append_line(path: Path, record: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        os.fdatasync(fd)
    finally:
        os.close(fd)


class _Recovery:
    """One pass over a store's pending/ folder."""

    def __init__(self, store: Path, ledger: Path, key: JournalKey):
        self.store, self.ledger, self.key = Path(store), ledger, key
        self.pending = self.store / PENDING_DIR
        self.media = self.store / MEDIA_DIR
        self._facts: _LedgerFacts | None = None

    @property
    def facts(self) -> _LedgerFacts:
        if self._facts is None:
            self._facts = _read_ledger(self.ledger)
        return self._facts

    def in_ledger(self, file: str) -> bool:
        return file in self.facts.files

    def already_sealed(self, name: str, data: bytes) -> str | None:
        """Why a pending file is a copy of sealed evidence (its name or header), or None."""
        if name in self.facts.files:
            return f"the ledger already seals a file named {name}"
        ephemeral = data[len(MAGIC):len(MAGIC) + 32].hex() if data.startswith(MAGIC) else None
        if ephemeral is None:
            return None
        if ephemeral in self.facts.ephemerals:
            return "its segment header (ephemeral key) is one the ledger already seals"
        for sealed in self.media.glob("*" + SEGMENT_SUFFIX) if self.media.is_dir() else ():
            with open(sealed, "rb") as f:
                if f.read(HEADER_SIZE)[len(MAGIC):len(MAGIC) + 32].hex() == ephemeral:
                    return f"its segment header (ephemeral key) is that of media/{sealed.name}"
        return None

    def went_on_after(self, context: dict[str, Any]) -> bool:
        """The ledger holds a later segment of this file's recording, or its record_stop."""
        recording, index = _int(context, "recording"), _int(context, "index")
        if recording is None or index is None:
            return False
        return self.facts.reached.get(recording, -1) > index

    def run(self) -> list[RecoveredSegment | RecoveredNote]:
        if not self.pending.is_dir():
            return []
        names = {p.name for p in self.pending.glob("*" + SEGMENT_SUFFIX)}
        names |= {p.name[: -len(JOURNAL_SUFFIX)]
                  for p in self.pending.glob("*" + SEGMENT_SUFFIX + JOURNAL_SUFFIX)}
        results = []
        for name in sorted(names):
            try:
                result = self.recover(name)
            except OSError:
                log.exception("%s: recovery failed; left as it is", name)
                continue
            if result is not None:
                results.append(result)
        return sorted(results, key=lambda r: (r.recording, r.index or 0, r.file))

    def recover(self, name: str) -> RecoveredSegment | RecoveredNote | None:
        path = self.pending / name
        journal_file = journal_path(path)
        journal = read_journal(journal_file, self.key)
        if path.exists():
            journal.add_marks(path, name, self.key)
            return self._recover_cut_file(name, path, journal_file, journal)
        return self._recover_moved_file(name, journal_file, journal)

    # --- a file still in pending/: cut while being written ------------------------------

    def _recover_cut_file(self, name: str, path: Path, journal_file: Path,
                          journal: _Journal) -> RecoveredSegment | RecoveredNote | None:
        context = self._context(name, journal)
        if self.went_on_after(context):
            # Refused by the medium while recording and declared then, but not
            # recoverable at once: sealed now, its entry would come after later ones.
            log.warning("%s: its recording went on after it; kept aside", name)
            self._set_aside(name, path, journal_file, journal, context)
            return None
        data = path.read_bytes()
        copied = self.already_sealed(name, data)
        if copied is not None:
            log.error("%s: refused, never sealed: %s; kept aside", name, copied)
            return self._set_aside(name, path, journal_file, journal, context)
        sealed = journal.finished if (journal.finished or {}).get("sealed") else None
        if sealed and (sealed.get("stored_size"), sealed.get("stored_sha256")) == (
                len(data), hashlib.sha256(data).hexdigest()):
            return self._move_sealed_file(name, path, journal_file, journal, context, sealed)
        kept = _last_whole_fragment(data, journal.fragments)
        required = _required_keys(context)
        if kept is None or not all(k in context for k in required):
            if kept is not None:
                log.error("%s: journal context lacks %s; kept aside unsealed", name,
                          [k for k in required if k not in context])
            return self._set_aside(name, path, journal_file, journal, context)
        size = kept["stored_size"]
        stamp = time.time_ns()
        # An earlier recovery of this file that was itself cut short: finish what it began.
        earlier = journal.finished if (journal.finished or {}).get("recovered") else None
        tail = earlier.get("tail_file") if earlier else None
        if len(data) > size:
            tail = f"{name}.tail-{stamp}"
            write_new(self.pending / tail, data[size:])
            with open(path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        media_file = self._free_media_name(name, stamp)
        if earlier and earlier.get("media_file"):
            linked = self.media / earlier["media_file"]
            if linked.exists() and os.path.samefile(linked, path):
                media_file = earlier["media_file"]  # linked already; only the unlink was missed
        finished = {"file": name, "recovered": True, "media_file": media_file, "tail_file": tail,
                    "fragment": kept.get("fragment"),
                    **{k: kept.get(k) for k in ("stored_size", "stored_sha256",
                                                "plaintext_size", "plaintext_sha256")}}
        # The intent first: a cut during the move leaves a journal that says where to look.
        if journal_file.exists():
            _append_line(journal_file, self.key.seal(finished))
        self.media.mkdir(exist_ok=True)
        if not (self.media / media_file).exists():
            os.link(path, self.media / media_file)  # fails rather than overwrite evidence
            fsync_dir(self.media)
        os.unlink(path)
        fsync_dir(self.pending)
        log.warning("%s: recovered %d bytes (%d fragments) as %s; %d bytes kept aside",
                    name, size, (kept.get("fragment") or 0) + 1, media_file, len(data) - size)
        return self._result(name, journal, context, finished, kept, recovered=True,
                            journal_file=journal_file)

    def _move_sealed_file(self, name: str, path: Path, journal_file: Path, journal: _Journal,
                          context: dict[str, Any],
                          sealed: dict[str, Any]) -> RecoveredSegment | RecoveredNote | None:
        """Sealed whole (final chunk and all) but never moved into media/: move it now."""
        kept = next((r for r in reversed(journal.fragments)
                     if isinstance(r.get("content"), dict)), None)
        if kept is None or not all(k in context for k in _required_keys(context)):
            log.error("%s: sealed, but its journal cannot say what it holds; left in pending/",
                      name)
            return None
        media_file = sealed.get("media_file") or name
        linked = self.media / media_file
        if not (linked.exists() and os.path.samefile(linked, path)):
            media_file = self._free_media_name(name, time.time_ns())
            if media_file != (sealed.get("media_file") or name):
                # Say where it goes before it goes, so a cut now cannot lose track of it.
                sealed = self.key.seal({**sealed, "media_file": media_file})
                _append_line(journal_file, sealed)
            self.media.mkdir(exist_ok=True)
            os.link(path, self.media / media_file)  # fails rather than overwrite evidence
            fsync_dir(self.media)
        os.unlink(path)
        fsync_dir(self.pending)
        log.warning("%s: sealed before the cut, moved into media/ as %s", name, media_file)
        return self._result(name, journal, context, {**sealed, "media_file": media_file}, kept,
                            recovered=False, journal_file=journal_file)

    def _set_aside(self, name: str, path: Path, journal_file: Path, journal: _Journal,
                   context: dict[str, Any]) -> RecoveredSegment | None:
        """Nothing whole to seal: keep the file (and its journal) aside, report the cut."""
        tail = f"{name}.tail-{time.time_ns()}"
        os.rename(path, self.pending / tail)
        if journal_file.exists():
            os.rename(journal_file, self.pending / (tail + JOURNAL_SUFFIX))
        fsync_dir(self.pending)
        log.warning("%s: no whole fragment to recover; kept aside as %s", name, tail)
        recording = _int(context, "recording")
        if recording is None:  # e.g. a voice note or memo cut while being written
            log.warning("%s: not a recording's segment (context %s); nothing to declare",
                        name, context)
            return None
        return RecoveredSegment(
            segment=None, recording=recording, cut_utc_ns=self._cut_utc_ns(journal, context),
            file=name, span=_int(context, "span"), index=_int(context, "index"), tail_file=tail)

    # --- a file that already left pending/ ------------------------------------------------

    def _recover_moved_file(self, name: str, journal_file: Path,
                            journal: _Journal) -> RecoveredSegment | RecoveredNote | None:
        finished = journal.finished
        media_file = (finished or {}).get("media_file") or name
        if self.in_ledger(media_file):  # the entry is the record now
            clear_fragment_marks(self.media / media_file)
            journal_file.unlink(missing_ok=True)
            fsync_dir(self.pending)
            return None
        media_path = self.media / media_file
        context = self._context(name, journal)
        if not media_path.exists() or not all(k in context for k in _required_keys(context)):
            log.error("%s: journal without its file or context; left as it is", name)
            return None
        journal.add_marks(media_path, name, self.key)
        data = media_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if finished is None or (finished.get("stored_size"), finished.get("stored_sha256")) != (
                len(data), digest):
            # Cut before the sealed line was written: what is it?
            finished = None
            for record in journal.fragments:
                if (record["stored_size"], record.get("stored_sha256")) == (len(data), digest):
                    finished = {**record, "recovered": True, "media_file": media_file}
        if finished is not None and finished.get("recovered"):
            kept = next((r for r in reversed(journal.fragments)
                         if r["stored_size"] == finished["stored_size"]), None)
            if kept is None or not isinstance(kept.get("content"), dict):
                log.error("%s: cannot tell what the recovered file holds", name)
                return None
            return self._result(name, journal, context, finished, kept, recovered=True,
                                journal_file=journal_file)
        # Sealed whole (it has its final chunk): the last fragment is all its media.
        kept = next((r for r in reversed(journal.fragments)
                     if isinstance(r.get("content"), dict)), None)
        if kept is None:
            log.error("%s: sealed, but its journal says nothing of its content", name)
            return None
        if finished is None:  # the sealed line never made it: sizes from the file itself
            finished = {"sealed": True, "stored_size": len(data), "stored_sha256": digest,
                        "plaintext_size": None, "plaintext_sha256": None}
        finished = {**finished, "media_file": media_file}
        return self._result(name, journal, context, finished, kept, recovered=False,
                            journal_file=journal_file)

    # --- helpers --------------------------------------------------------------------------

    def _context(self, name: str, journal: _Journal) -> dict[str, Any]:
        # Only an authenticated header is read (read_journal); the name says no more
        # than which recording to declare the cut for, never what to seal.
        context = dict(journal.context)
        match = _NAME.fullmatch(name)
        if match:  # r<recording>-<index>.cseg: the recorder's names say this much
            context.setdefault("recording", int(match["recording"]))
            context.setdefault("index", int(match["index"]))
        return context

    def _free_media_name(self, name: str, stamp: int) -> str:
        if not (self.media / name).exists():
            return name
        stem = name[: -len(SEGMENT_SUFFIX)] if name.endswith(SEGMENT_SUFFIX) else name
        log.error("media/%s exists already; the recovered file gets another name", name)
        return f"{stem}.recovered-{stamp}{SEGMENT_SUFFIX}"

    def _cut_utc_ns(self, journal: _Journal, context: dict[str, Any]) -> int | None:
        """When the device last wrote an authenticated record, in UTC; None if never.

        Not the files' mtime: whoever wrote the store while the device was off
        chose that.
        """
        offset = _int(context, "utc_offset_ns")
        if journal.header and offset is not None and journal.last_written_monotonic_ns:
            return journal.last_written_monotonic_ns + offset
        return None

    def _media(self, journal: _Journal, finished: dict[str, Any]) -> MediaFile:
        media_file = finished["media_file"]
        header = (self.media / media_file).read_bytes()[:HEADER_SIZE]
        return MediaFile(
            file=media_file, container="mp4", codecs=dict(journal.header.get("codecs") or {}),
            size=finished["stored_size"], sha256=finished["stored_sha256"],
            plaintext_size=finished.get("plaintext_size"),
            plaintext_sha256=finished.get("plaintext_sha256"),
            encryption=encryption_of(header))

    def _note_result(self, journal: _Journal, context: dict[str, Any],
                     finished: dict[str, Any], kept: dict[str, Any],
                     journal_file: Path) -> RecoveredNote | None:
        media = self._media(journal, finished)
        body: VoiceNote | Exemption
        if context["kind"] == "exemption":
            if not isinstance(context.get("exemption"), str):
                log.error("%s: an exemption memo whose journal names no reason", media.file)
                return None
            body = Exemption(reason=context["exemption"], voice_memo=media)
        else:
            content, interruption = kept["content"], _int(context, "interruption")
            first_us = content.get("first_sample_us")
            if interruption is None or first_us is None:
                log.error("%s: a voice note whose journal names no interruption", media.file)
                return None
            body = VoiceNote(
                interruption=interruption, media=media,
                first_capture_utc_ns=first_us * 1000 + context["utc_offset_ns"],
                audio_samples=content.get("audio_samples") or 0,
                audio_rate=context["audio_rate"], speech_seconds=0.0)
        log.warning("%s: a %s cut short, recovered", media.file, context["kind"])
        return RecoveredNote(body=body, file=media.file, tail_file=finished.get("tail_file"),
                             journal=journal_file.name if journal_file.exists() else None)

    def _result(self, name: str, journal: _Journal, context: dict[str, Any],
                finished: dict[str, Any], kept: dict[str, Any], *, recovered: bool,
                journal_file: Path) -> RecoveredSegment | RecoveredNote | None:
        if context.get("kind") in NOTE_KINDS:
            return self._note_result(journal, context, finished, kept, journal_file)
        content, offset = kept["content"], context["utc_offset_ns"]
        media_file = finished["media_file"]
        # As the recorder does for a sealed segment: from its origin — its first frame,
        # or the audio before it that the segment holds (the first segment of a span:
        # audio from before the camera's first keyframe, as after a camera fault) —
        # to its last frame; in a segment without video, its first and last sample.
        # The first frame alone would put that audio's time between two segments,
        # where no interruption declares it (ADR 0054).
        first_us = min((v for v in (content.get("first_frame_us"),
                                    content.get("first_sample_us")) if v is not None),
                       default=None)
        last_us = _first_not_none(content.get("last_frame_us"), content.get("last_sample_us"),
                                  first_us)
        last_capture_us = max((v for v in (content.get("last_frame_us"),
                                           content.get("last_sample_us")) if v is not None),
                              default=None)
        media = self._media(journal, finished)
        segment = Segment(
            recording=context["recording"], span=context["span"], index=context["index"],
            media=media,
            first_capture_utc_ns=(first_us or 0) * 1000 + offset,
            last_capture_utc_ns=(last_us or 0) * 1000 + offset,
            frame_period_ns=context["frame_period_ns"], frames=content.get("frames") or 0,
            audio_samples=content.get("audio_samples") or 0, audio_rate=context["audio_rate"],
            recovered=recovered)
        last_capture_utc_ns = None if last_capture_us is None else last_capture_us * 1000 + offset
        cut = self._cut_utc_ns(journal, context)
        if last_capture_utc_ns is not None:
            cut = max(cut or last_capture_utc_ns, last_capture_utc_ns)
        return RecoveredSegment(
            segment=segment, recording=context["recording"], cut_utc_ns=cut, file=media_file,
            span=context["span"], index=context["index"],
            last_capture_utc_ns=last_capture_utc_ns, tail_file=finished.get("tail_file"),
            journal=journal_file.name if journal_file.exists() else None,
            sealed_before_cut=not recovered)


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def recover_pending(store: Path, ledger: Path | None = None, *,
                    journal_key: JournalKey) -> list[RecoveredSegment | RecoveredNote]:
    """Seal what a cut left in ``store/pending/`` and say what to append for it.

    Call it at start, before recording. ``ledger`` (default ``store/ledger.jsonl``)
    is only read, to see which files already have their ``segment`` entry.
    ``journal_key`` is the device's (:class:`~protocol.journal_auth.JournalKey`):
    only what it authenticates is sealed; everything else is kept aside.
    Results come sorted by recording and index. Never deletes media bytes.
    """
    store = Path(store)
    return _Recovery(store, ledger or store / LEDGER_NAME, journal_key).run()


def recover_file(store: Path, file: str, ledger: Path | None = None, *,
                 journal_key: JournalKey) -> RecoveredSegment | RecoveredNote | None:
    """The same for one file of ``pending/``, while the device runs.

    For a file the medium refused to go on writing (the recorder's seal
    thread calls this once the file's sealer is closed): its durable
    fragments are sealed ``recovered``, the rest is kept aside. None if the
    file was never created.
    """
    store = Path(store)
    pending = store / PENDING_DIR / file
    if not pending.exists() and not journal_path(pending).exists():
        return None
    return _Recovery(store, ledger or store / LEDGER_NAME, journal_key).recover(file)
