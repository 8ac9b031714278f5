"""What the device knows from its own ledger: the state the recorder resumes from.

At boot the recorder reads its ledger once into a :class:`LedgerState` (who is
assigned, which recording was left open by a cut, which interruptions still
lack a voice note, what is archived against a receipt, …); afterwards it
applies each entry it appends, so the state never needs a second read. The
ledger stays the only truth: delete this object and it is rebuilt the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.entries import (
    Assigned,
    Entry,
    Interruption,
    OffloadReceiptEntry,
    Overdue,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    VoiceNote,
)
from protocol.envelope import (
    SignedEntry,
    decode_json,
    envelope_from_dict,
    parse_line,
    split_lines,
)
from protocol.errors import ProtocolError
from protocol.receipt import OffloadReceipt
from protocol.store_reader import LEDGER_NAME


def read_receipt_unverified(envelope: object) -> OffloadReceipt | None:
    """A receipt's content, without checking its signature (done before appending)."""
    try:
        payload = envelope_from_dict(envelope, "receipt").payload
        return OffloadReceipt.from_dict(decode_json(payload, "receipt"), "receipt")
    except ProtocolError:
        return None


@dataclass
class RecordingState:
    seq: int
    start_utc_ns: int
    span: int = 0
    segments: int = 0  # so the next segment's index
    last_capture_utc_ns: int | None = None
    stopped: bool = False
    media: dict[str, str] = field(default_factory=dict)  # file -> sha256 (stored)


@dataclass
class LedgerState:
    officer: str = ""
    last_boot_id: str | None = None
    digests: dict[int, str] = field(default_factory=dict)  # seq -> payload SHA-256
    recordings: dict[int, RecordingState] = field(default_factory=dict)
    interruptions: dict[int, Interruption] = field(default_factory=dict)
    resumed: set[int] = field(default_factory=set)
    explained: set[int] = field(default_factory=set)  # a voice note with speech exists
    sealed: dict[str, str] = field(default_factory=dict)  # every media file -> sha256
    archived: dict[str, str] = field(default_factory=dict)  # file -> sha256, by receipts
    overdue_declared: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, store: Path) -> LedgerState:
        state = cls()
        path = store / LEDGER_NAME
        if path.exists():
            for line in split_lines(path.read_bytes()):
                try:
                    state.apply(parse_line(line))
                except ProtocolError:
                    continue  # the verifier reports it; the device carries on
        return state

    def apply(self, signed: SignedEntry) -> None:
        entry: Entry = signed.entry
        self.digests[entry.seq] = signed.digest
        self.last_boot_id = entry.time.boot_id
        self.sealed.update((m.file, m.sha256) for m in entry.media())
        body = entry.body
        match body:
            case Assigned():
                self.officer = body.officer
            case RecordStart():
                self.recordings[entry.seq] = RecordingState(entry.seq, entry.time.utc_ns)
            case Segment():
                rec = self.recordings.get(body.recording)
                if rec is not None:
                    rec.span = max(rec.span, body.span)
                    rec.segments = max(rec.segments, body.index + 1)
                    rec.last_capture_utc_ns = body.last_capture_utc_ns
                    rec.media[body.media.file] = body.media.sha256
            case RecordStop():
                if body.recording in self.recordings:
                    self.recordings[body.recording].stopped = True
            case Interruption():
                self.interruptions[entry.seq] = body
            case Resume():
                self.resumed.add(body.interruption)
                rec = self.recordings.get(body.recording)
                if rec is not None:
                    rec.span += 1
            case VoiceNote() if body.explains:
                self.explained.add(body.interruption)
            case OffloadReceiptEntry():
                # The device checked the dock's signature before it appended this.
                receipt = read_receipt_unverified(body.receipt)
                if receipt is not None:
                    self.archived.update((m.file, m.sha256) for m in receipt.media)
            case Overdue():
                self.overdue_declared.add(body.recording)

    # --- questions the recorder asks ----------------------------------------------------

    @property
    def open_recording(self) -> RecordingState | None:
        """The newest recording without a record_stop (left open by a cut), if any."""
        open_ = [r for r in self.recordings.values() if not r.stopped]
        return max(open_, key=lambda r: r.seq) if open_ else None

    def unresumed(self, recording: int) -> int | None:
        """The latest interruption of ``recording`` that no resume follows."""
        cuts = [s for s, i in self.interruptions.items()
                if i.recording == recording and s not in self.resumed]
        return max(cuts) if cuts else None

    @property
    def unexplained(self) -> list[int]:
        """Interruptions still waiting for a voice note with speech, oldest first."""
        return sorted(s for s in self.interruptions if s not in self.explained)

    def unarchived_recordings(self) -> list[RecordingState]:
        """Recordings with media not yet covered by a dock receipt, oldest first."""
        return sorted((r for r in self.recordings.values()
                       if any(self.archived.get(f) != h for f, h in r.media.items())),
                      key=lambda r: r.start_utc_ns)
