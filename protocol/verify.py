"""Verification: is a device's recording complete and unaltered, and where not?

One implementation, used by the device (before freeing space), the dock (on
offload) and ``custody verify``. Pure: the caller passes the ledger bytes, the
size and SHA-256 of each media file it has, the trust file and a policy.

    report = verify(ledger, media, trust, VerificationPolicy())
    report.verdict          # "intact", "intact_unexplained_gaps" or "broken"
    verify_or_raise(...)    # the same, raising ContinuityError unless intact

What is checked, and what cannot be (a ledger's cut-off tail without any later
receipt), is listed in docs/format.md, "What verification proves".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from securesystemslib.exceptions import VerificationError

from protocol.entries import (
    GENESIS_PREV,
    MIN_SPEECH_SECONDS,
    Assigned,
    ConsoleAction,
    Exemption,
    Interruption,
    KeyRotated,
    LedgerGap,
    Marker,
    MediaFile,
    OffloadReceiptEntry,
    Overdue,
    Provisioned,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    TimeSync,
    UnknownBody,
    VoiceNote,
)
from protocol.envelope import SignedEntry, parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.keys import fingerprint
from protocol.receipt import OffloadReceipt, open_receipt
from protocol.trust import TrustFile

INTACT = "intact"
INTACT_UNEXPLAINED_GAPS = "intact_unexplained_gaps"
BROKEN = "broken"

# Finding severities: "error" makes the verdict broken; "unexplained" makes it
# intact_unexplained_gaps; "warning" and "info" are reported only.
ERROR, UNEXPLAINED, WARNING, INFO = "error", "unexplained", "warning", "info"


@dataclass(frozen=True)
class MediaDigest:
    """What the caller measured of one stored media file."""

    size: int
    sha256: str


@dataclass(frozen=True)
class VerificationPolicy:
    """What counts as continuous, and what else the verifier may rely on.

    ``receipts`` are dock-signed receipts (envelope JSON) kept outside the
    ledger, e.g. by the archive: with them a cut-off ledger tail is detected.
    """

    max_gap_frame_periods: float = 1.5  # of the earlier segment's frame (or sample) period
    receipts: Sequence[Any] = ()


@dataclass
class Finding:
    seq: int | None
    kind: str
    message: str
    severity: str = ERROR


@dataclass
class Gap:
    recording: int
    after_seq: int  # the segment before the gap
    before_seq: int  # the segment after it
    start_utc_ns: int
    seconds: float
    declared: bool
    reason: str | None = None
    interruption: int | None = None
    voice_note: int | None = None
    explained: bool = False


@dataclass
class InterruptionReport:
    seq: int
    reason: str
    cut_utc_ns: int
    recording: int | None
    resumed_by: int | None = None
    voice_note: int | None = None
    explained: bool = False
    detected_by: str = ""  # what noticed it, as the device said


@dataclass
class RecordingReport:
    recording: int  # seq of its record_start
    officer: str
    category: str
    start_utc_ns: int
    stop_utc_ns: int | None = None
    duration_s: float = 0.0  # captured time, gaps excluded
    segments: int = 0
    spans: int = 1
    stop_trigger: str | None = None
    _last: Segment | None = field(default=None, repr=False)
    _last_seq: int = field(default=-1, repr=False)
    _pending: list[int] = field(default_factory=list, repr=False)  # interruptions since


@dataclass
class ContinuityReport:
    verdict: str
    device: str | None
    unit: str
    entries: int
    head: str | None  # SHA-256 of the last entry's payload
    recordings: list[RecordingReport] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    interruptions: list[InterruptionReport] = field(default_factory=list)
    exemptions: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def to_dict(self) -> dict[str, Any]:
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if not k.startswith("_")}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        return clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


class ContinuityError(Exception):
    """Raised by :func:`verify_or_raise`; carries the full report."""

    def __init__(self, report: ContinuityReport):
        self.report = report
        first = (report.errors or report.findings or [Finding(None, "", "")])[0]
        super().__init__(f"{report.verdict}: {first.message}")


def verify_or_raise(
    ledger: bytes, media: Mapping[str, MediaDigest], trust: TrustFile,
    policy: VerificationPolicy | None = None,
) -> ContinuityReport:
    report = verify(ledger, media, trust, policy)
    if report.verdict != INTACT:
        raise ContinuityError(report)
    return report


def verify(
    ledger: bytes, media: Mapping[str, MediaDigest], trust: TrustFile,
    policy: VerificationPolicy | None = None,
) -> ContinuityReport:
    """Verify one device's ledger and media against the unit's trust file."""
    return _LedgerCheck(trust, policy or VerificationPolicy()).run(ledger, media)


class _LedgerCheck:
    """One pass over a ledger: chain, signatures, time, recordings, media."""

    def __init__(self, trust: TrustFile, policy: VerificationPolicy):
        self.trust, self.policy = trust, policy
        self.report = ContinuityReport(INTACT, None, trust.unit, 0, None)
        self.digests: dict[int, str] = {}  # seq -> payload SHA-256, accepted entries
        self.seen: set[str] = set()
        self.expected_seq = 0
        self.prev_digest: str | None = GENESIS_PREV
        self.signing_key: str | None = None
        self.boots: dict[str, tuple[int, int]] = {}  # boot id -> (monotonic, utc) last seen
        self.recordings: dict[int, RecordingReport] = {}
        self.interruptions: dict[int, InterruptionReport] = {}
        self.media_refs: list[tuple[int, MediaFile]] = []
        self.receipts: list[OffloadReceipt] = []

    def find(self, seq: int | None, kind: str, message: str, severity: str = ERROR) -> None:
        self.report.findings.append(Finding(seq, kind, message, severity))

    # --- the walk -------------------------------------------------------------

    def run(self, ledger: bytes, media: Mapping[str, MediaDigest]) -> ContinuityReport:
        lines = split_lines(ledger)
        if not lines:
            self.find(None, "empty_ledger", "the ledger has no entries")
        for number, line in enumerate(lines, start=1):
            try:
                signed = parse_line(line)
            except ProtocolError as e:
                self.find(None, "malformed_entry", f"ledger line {number}: {e}")
                self.prev_digest = None  # the next link cannot be checked against it
                self.expected_seq += 1
                continue
            if number == len(lines) and not ledger.endswith(b"\n"):
                self.find(signed.entry.seq, "torn_write", "the last line has no newline",
                          WARNING)
            self.report.entries += 1
            if self.accept(signed):
                self.interpret(signed)
        self.check_external_receipts()
        self.check_media(media)
        self.finish()
        return self.report

    def accept(self, signed: SignedEntry) -> bool:
        """Identity, chain and signature checks. False: do not interpret the entry.

        An entry whose signature fails still takes its place in the chain (its
        bytes are what the next entry's ``prev`` names), so one altered entry is
        reported once, not as a break of everything after it.
        """
        entry, digest = signed.entry, signed.digest
        if self.report.device is None:
            self.start_device(signed)
        elif entry.device != self.report.device:
            self.find(entry.seq, "foreign_entry",
                      f"entry of device {entry.device!r} in the ledger of {self.report.device!r}")
            return False
        if digest in self.seen:
            self.find(entry.seq, "replayed_entry", f"entry {entry.seq} appears a second time")
            return False
        self.seen.add(digest)
        if entry.seq != self.expected_seq:
            if entry.seq > self.expected_seq:
                self.find(entry.seq, "missing_entries",
                          f"entries {self.expected_seq}..{entry.seq - 1} are missing")
            else:
                self.find(entry.seq, "seq_out_of_order",
                          f"entry {entry.seq} comes where {self.expected_seq} should")
        elif self.prev_digest is not None and entry.prev != self.prev_digest:
            self.find(entry.seq, "prev_mismatch",
                      f"entry {entry.seq} does not link to the entry before it")
        self.expected_seq = entry.seq + 1
        self.prev_digest = digest
        if not self.signature_ok(signed):
            return False
        self.digests.setdefault(entry.seq, digest)
        self.report.head = digest
        self.check_time(signed)
        return True

    def start_device(self, signed: SignedEntry) -> None:
        entry = signed.entry
        self.report.device = entry.device
        if entry.device not in self.trust.devices:
            self.find(entry.seq, "unknown_device",
                      f"device {entry.device!r} is not in the unit's trust file")
        body = entry.body
        if entry.seq != 0 or not isinstance(body, Provisioned):
            self.find(entry.seq, "no_genesis", "the ledger does not start with its provisioned "
                      "entry (seq 0)")
            # Fall back to any trusted device key, so the rest is still checked.
            keys = self.trust.device_keys(entry.device)
            self.signing_key = signed.keyids[0] if signed.keyids else None
            if self.signing_key not in keys:
                self.signing_key = keys[0] if keys else None
            return
        if entry.prev != GENESIS_PREV:
            self.find(entry.seq, "prev_mismatch", "the genesis entry must have an all-zero prev")
        self.signing_key = body.device_key
        if body.unit != self.trust.unit:
            self.find(0, "wrong_unit", f"provisioned for unit {body.unit!r}, the trust file is "
                      f"for {self.trust.unit!r}")
        if body.archive_key != self.trust.archive_encryption_key:
            self.find(0, "wrong_archive_key", "the device encrypts to an archive key the trust "
                      "file does not name", WARNING)

    def signature_ok(self, signed: SignedEntry) -> bool:
        entry, keyid = signed.entry, self.signing_key
        trusted = self.trust.device_keys(entry.device)
        if keyid is None or keyid not in trusted:
            self.find(entry.seq, "untrusted_key", f"the device's key is not trusted for "
                      f"{entry.device!r} in the trust file")
            return False
        if keyid not in signed.envelope.signatures:
            self.find(entry.seq, "untrusted_signature", "entry is not signed by the device's "
                      "current key (re-signed with another key?)")
            return False
        try:
            signed.envelope.verify([self.trust.signing_key(keyid)], 1)
        except VerificationError:
            self.find(entry.seq, "bad_signature", "the signature does not match the entry "
                      "(entry altered)")
            return False
        return True

    def check_time(self, signed: SignedEntry) -> None:
        entry, t = signed.entry, signed.entry.time
        # A time_sync entry declares a step of the wall clock: it is measured
        # from its own (new) time, and so is everything after it.
        declared_step = isinstance(entry.body, TimeSync)
        last = self.boots.get(t.boot_id)
        if last is not None:
            last_mono, last_utc = last
            if t.monotonic_ns < last_mono:
                self.find(entry.seq, "monotonic_rollback",
                          "monotonic time went back within one boot")
            if t.utc_ns < last_utc and not declared_step:
                self.find(entry.seq, "clock_rollback", "wall-clock time went back "
                          f"{(last_utc - t.utc_ns) / 1e9:.3f} s within one boot with no "
                          "time_sync entry declaring it")
        self.boots[t.boot_id] = (t.monotonic_ns, t.utc_ns)

    # --- meaning --------------------------------------------------------------

    def interpret(self, signed: SignedEntry) -> None:
        entry, body, seq = signed.entry, signed.entry.body, signed.entry.seq
        for m in entry.media():
            self.media_refs.append((seq, m))
        match body:
            case Provisioned() if seq != 0:
                self.find(seq, "second_genesis", "a provisioned entry after the genesis")
            case Assigned():
                pass
            case RecordStart():
                self.recordings[seq] = RecordingReport(
                    recording=seq, officer=body.officer, category=body.category,
                    start_utc_ns=entry.time.utc_ns)
                self.report.recordings.append(self.recordings[seq])
            case Segment():
                self.segment(seq, body)
            case Interruption():
                rep = InterruptionReport(seq, body.reason, body.cut_utc_ns, body.recording,
                                         detected_by=body.detected_by)
                self.interruptions[seq] = rep
                self.report.interruptions.append(rep)
                rec = self.recordings.get(body.recording) if body.recording is not None else None
                if rec is not None:
                    rec._pending.append(seq)
            case Resume():
                rep = self.interruptions.get(body.interruption)
                if rep is None:
                    self.find(seq, "bad_link", f"resume names {body.interruption}, which is not "
                              "an interruption")
                else:
                    rep.resumed_by = seq
                rec = self.recordings.get(body.recording)
                if rec is not None:
                    rec.spans += 1
            case VoiceNote():
                rep = self.interruptions.get(body.interruption)
                if rep is None:
                    self.find(seq, "bad_link", f"voice note names {body.interruption}, which is "
                              "not an interruption")
                elif body.speech_seconds >= MIN_SPEECH_SECONDS:
                    rep.voice_note, rep.explained = seq, True
                else:
                    self.find(seq, "silent_voice_note", f"the voice note for interruption "
                              f"{body.interruption} has no speech", WARNING)
            case RecordStop():
                rec = self.recordings.get(body.recording)
                if rec is None:
                    self.find(seq, "bad_link", f"record_stop names {body.recording}, which is not "
                              "a recording")
                else:
                    rec.stop_utc_ns, rec.stop_trigger = entry.time.utc_ns, body.trigger
            case Marker():
                self.report.markers.append({"seq": seq, "utc_ns": entry.time.utc_ns,
                                            "phase": body.phase, "recording": body.recording})
            case Exemption():
                self.report.exemptions.append({
                    "seq": seq, "utc_ns": entry.time.utc_ns, "reason": body.reason,
                    "note": body.note,
                    "voice_memo": body.voice_memo.file if body.voice_memo else None})
            case OffloadReceiptEntry():
                self.embedded_receipt(seq, body)
            case Overdue():
                self.report.overdue.append({"seq": seq, "utc_ns": entry.time.utc_ns,
                                            "recording": body.recording, "hours": body.hours})
            case TimeSync() | ConsoleAction():
                pass
            case LedgerGap():  # the device's own word that entries (and their media) are gone
                lost = (f"{body.first_seq}..{body.last_seq}" if body.last_seq is not None
                        else f"from {body.first_seq} on (how many is unknown: its high-water "
                        "mark was gone too)")
                self.find(seq, "ledger_gap", f"the device declares entries {lost} gone from "
                          "its ledger")
            case KeyRotated():
                if fingerprint(bytes.fromhex(body.new_public)) != body.new_key:
                    self.find(seq, "bad_key_rotation", "new_key is not the new key's id")
                elif body.new_key not in self.trust.device_keys(entry.device):
                    self.find(seq, "untrusted_key", "the device rotated to a key the trust file "
                              "does not list for it")
                self.signing_key = body.new_key
            case UnknownBody():
                self.find(seq, "unknown_kind", f"entry kind {entry.kind!r} is not known to this "
                          "verifier; kept, not interpreted", INFO)

    def segment(self, seq: int, body: Segment) -> None:
        rec = self.recordings.get(body.recording)
        if rec is None:
            self.find(seq, "bad_link", f"segment names recording {body.recording}, which does "
                      "not exist")
            return
        if rec.stop_utc_ns is not None:
            self.find(seq, "segment_after_stop", f"segment of recording {body.recording} after "
                      "its record_stop")
        prev = rec._last
        if prev is not None:
            # The earlier segment's cadence: a frame period, or for an audio-only
            # segment (camera fault) the sample period.
            period = prev.frame_period_ns
            step = body.first_capture_utc_ns - prev.last_capture_utc_ns
            if step <= 0:
                self.find(seq, "overlap", f"segment starts {-step / 1e9:.3f} s before the "
                          "previous one's last capture (duplicated or reordered media)")
            elif step > self.policy.max_gap_frame_periods * period:
                gap = Gap(body.recording, rec._last_seq, seq, prev.last_capture_utc_ns + period,
                          (step - period) / 1e9, declared=bool(rec._pending))
                if rec._pending:
                    cause = self.interruptions[rec._pending[0]]
                    gap.reason, gap.interruption = cause.reason, cause.seq
                else:
                    self.find(seq, "undeclared_gap", f"{gap.seconds:.3f} s gap before this "
                              "segment that no interruption declares")
                self.report.gaps.append(gap)
        rec._pending.clear()
        rec._last, rec._last_seq = body, seq
        rec.segments += 1
        rec.duration_s += (body.last_capture_utc_ns - body.first_capture_utc_ns
                           + body.frame_period_ns) / 1e9

    def embedded_receipt(self, seq: int, body: OffloadReceiptEntry) -> None:
        try:
            receipt = open_receipt(body.receipt, self.trust)
        except ProtocolError as e:
            self.find(seq, "bad_receipt", str(e))
            return
        if receipt.device != self.report.device:
            self.find(seq, "bad_receipt", f"receipt is for device {receipt.device!r}")
        elif receipt.last_seq >= seq or self.digests.get(receipt.last_seq) != receipt.head:
            self.find(seq, "receipt_mismatch", f"receipt's head (entry {receipt.last_seq}) is "
                      "not this ledger's entry")
        else:
            self.receipts.append(receipt)

    def check_external_receipts(self) -> None:
        last = max(self.digests, default=-1)
        for i, envelope in enumerate(self.policy.receipts):
            try:
                receipt = open_receipt(envelope, self.trust)
            except ProtocolError as e:
                self.find(None, "bad_receipt", f"receipt {i + 1}: {e}")
                continue
            if receipt.device != self.report.device:
                self.find(None, "other_device_receipt", f"receipt {i + 1} is for device "
                          f"{receipt.device!r}; not used", WARNING)
            elif receipt.last_seq > last:
                self.find(last, "tail_cut", f"dock {receipt.dock!r} received entries up to "
                          f"{receipt.last_seq}, but the ledger ends at {last}: its tail is gone")
            elif self.digests.get(receipt.last_seq) != receipt.head:
                self.find(receipt.last_seq, "receipt_mismatch", f"dock {receipt.dock!r} "
                          f"received a different entry {receipt.last_seq}: the ledger was "
                          "rewritten")
            else:
                self.receipts.append(receipt)

    def check_media(self, media: Mapping[str, MediaDigest]) -> None:
        archived = set().union(*(r.media_files for r in self.receipts))
        referenced = set()
        for seq, ref in self.media_refs:
            referenced.add(ref.file)
            got = media.get(ref.file)
            if got is None:
                if ref.file in archived:
                    self.find(seq, "offloaded", f"{ref.file} was archived against a receipt "
                              "and freed on the device", INFO)
                else:
                    self.find(seq, "media_missing", f"{ref.file} is missing")
            elif got.size != ref.size:
                kind = "media_truncated" if got.size < ref.size else "media_size"
                self.find(seq, kind, f"{ref.file} is {got.size} bytes, sealed as {ref.size}")
            elif got.sha256 != ref.sha256:
                self.find(seq, "media_hash", f"{ref.file} does not match its sealed SHA-256 "
                          "(altered or swapped)")
        for name in sorted(set(media) - referenced):
            self.find(None, "unsealed_media", f"{name} is not sealed by any entry", WARNING)

    def finish(self) -> None:
        for rep in self.report.interruptions:
            if not rep.explained:
                self.find(rep.seq, "unexplained_interruption", f"interruption {rep.seq} "
                          f"({rep.reason}) has no voice note with speech", UNEXPLAINED)
        for gap in self.report.gaps:
            if gap.interruption is not None:
                rep = self.interruptions[gap.interruption]
                gap.voice_note, gap.explained = rep.voice_note, rep.explained
        severities = {f.severity for f in self.report.findings}
        if ERROR in severities:
            self.report.verdict = BROKEN
        elif UNEXPLAINED in severities:
            self.report.verdict = INTACT_UNEXPLAINED_GAPS
