"""Verification: is a device's recording complete and unaltered, and where not?

One implementation, used by the device (before freeing space), the dock (on
offload) and ``custody verify``. Pure: the caller passes the ledger bytes, the
size and SHA-256 of each media file it has, the trust file and a policy.

    report = verify(ledger, media, trust, VerificationPolicy())
    report.verdict          # "intact", "intact_unexplained_gaps" or "broken"
    verify_or_raise(...)    # the same, raising ContinuityError unless intact

Every finding kind, its severity and meaning: :mod:`protocol.findings` (and
docs/format.md, "Findings"). What is checked, and what cannot be (a ledger's
cut-off tail without any later receipt): docs/format.md, "What verification proves".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError

from protocol.audio_coverage import AudioTrack
from protocol.entries import (
    GENESIS_PREV,
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
from protocol.errors import DuplicateKeyError, ProtocolError
from protocol.findings import ERROR, INFO, UNEXPLAINED, WARNING, Finding
from protocol.keys import fingerprint
from protocol.media_check import (
    KeptReceipt,
    MediaDigest,
    check_media,
    embedded_receipt,
    kept_receipts,
)
from protocol.receipt import OffloadReceipt
from protocol.report import (
    BROKEN,
    INTACT,
    INTACT_UNEXPLAINED_GAPS,
    VERDICT_RANK,
    AudioGap,
    ContinuityReport,
    Gap,
    InterruptionReport,
    RecordingReport,
    TimeStep,
    verdict_of,
    worst,
)
from protocol.time_statement import MAX_DOCK_STEP_NS, check_time_sync
from protocol.trust import TrustFile

__all__ = [
    "BROKEN", "ERROR", "INFO", "INTACT", "INTACT_UNEXPLAINED_GAPS", "UNEXPLAINED", "VERDICT_RANK",
    "WARNING", "ContinuityError", "ContinuityReport", "Finding", "Gap", "KeptReceipt",
    "MediaDigest", "VerificationPolicy", "verify", "verify_or_raise", "worst",
]

LEDGER_FILE = "ledger.jsonl"


@dataclass(frozen=True)
class VerificationPolicy:
    """What counts as continuous, and what else the verifier may rely on.

    ``receipts`` are dock-signed receipts (envelope JSON, or :class:`KeptReceipt`)
    kept outside the ledger, e.g. by the archive: with them a cut-off ledger
    tail is detected.
    """

    max_gap_frame_periods: float = 1.5  # of the earlier segment's frame (or sample) period
    receipts: Sequence[Any] = ()
    # How far the wall clock may wander from the monotonic one unannounced: the
    # device declares (time_sync) every step larger than this, and an entry's two
    # clock readings are not taken at one instant. Below it the wall clock counts.
    clock_tolerance_ns: int = 1_000_000_000
    # How much less audio than its time a segment may hold unannounced (a sound
    # card's crystal drifting from the capture clock, frame-time jitter at the
    # cuts); a larger shortfall is a hole in the sound (protocol.audio_coverage).
    audio_tolerance_ns: int = 250_000_000


class ContinuityError(Exception):
    """Raised by :func:`verify_or_raise`; carries the full report."""

    def __init__(self, report: ContinuityReport):
        self.report = report
        first = (report.errors or report.findings)
        super().__init__(f"{report.verdict}: {first[0].message if first else ''}")


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
    policy: VerificationPolicy | None = None, store_findings: Sequence[Finding] = (),
) -> ContinuityReport:
    """Verify one device's ledger and media against the unit's trust file.

    ``store_findings`` are what the reader of the store found on disk (links,
    FIFOs, files too large, …); they count towards the verdict like the rest.
    """
    check = _LedgerCheck(trust, policy or VerificationPolicy())
    check.report.findings.extend(store_findings)
    return check.run(ledger, media)


class _LedgerCheck:
    """One pass over a ledger: chain, signatures, time, recordings, media."""

    def __init__(self, trust: TrustFile, policy: VerificationPolicy):
        self.trust, self.policy = trust, policy
        self.report = ContinuityReport(INTACT, None, trust.unit, 0, None)
        self.digests = self.report._digests  # seq -> payload SHA-256, accepted entries
        self.seen: set[str] = set()
        self.expected_seq = 0
        self.prev_digest: str | None = GENESIS_PREV
        self.signing_key: str | None = None
        self.boots: dict[str, tuple[int, int]] = {}  # boot id -> (monotonic, utc) last seen
        self.time_statements: dict[str, int] = {}  # a statement's signatures -> the seq using it
        self.boot: str | None = None  # of the last accepted entry
        self.boot_utc_ns: int = 0  # wall time of the first entry of the current boot
        self.clock_source: str | None = None
        self.recordings: dict[int, RecordingReport] = {}
        self.last_recording: RecordingReport | None = None
        self.interruptions: dict[int, InterruptionReport] = {}
        self.audio: dict[int, AudioTrack] = {}  # by recording: its sound's coverage
        self.media_refs: list[tuple[int, MediaFile]] = []
        self.receipts: list[OffloadReceipt] = []
        self.line: int | None = None  # the ledger line being read
        self.line_of: dict[int, int] = {}  # seq -> ledger line

    def find(self, seq: int | None, kind: str, message: str, severity: str = "",
             file: str | None = None) -> None:
        line = self.line if self.line is not None else self.line_of.get(seq) if seq is not None \
            else None
        if file is None and line is not None:
            file = LEDGER_FILE
        self.report.findings.append(Finding(seq, kind, message, severity, file,
                                            line if file == LEDGER_FILE else None))

    # --- the walk -------------------------------------------------------------

    def run(self, ledger: bytes, media: Mapping[str, MediaDigest]) -> ContinuityReport:
        lines = split_lines(ledger)
        torn = bool(lines) and not ledger.endswith(b"\n")
        for number, line in enumerate(lines, start=1):
            self.line = number
            self.read_line(line, torn and number == len(lines))
        self.line = None
        if not self.report.entries:
            self.find(None, "empty_ledger", "the ledger has no entries")
        self.receipts += kept_receipts(self.policy.receipts, self.report.device, self.digests,
                                       self.trust, self.find)
        check_media(self.media_refs, media, self.receipts, self.find)
        self.finish()
        return self.report

    def read_line(self, line: bytes, torn: bool) -> None:
        try:
            signed = parse_line(line)
        except ProtocolError as e:
            if torn:
                # What a power cut leaves: kept in the file, not an entry.
                self.find(None, "torn_write", f"the last line has no newline: {len(line)} bytes "
                          "kept, not read as an entry")
                return
            kind = "duplicate_key" if isinstance(e, DuplicateKeyError) else "malformed_entry"
            self.find(None, kind, f"ledger line {self.line}: {e}")
            self.prev_digest = None  # the next link cannot be checked against it
            self.expected_seq += 1
            return
        self.line_of.setdefault(signed.entry.seq, self.line or 0)
        if torn:
            self.find(signed.entry.seq, "torn_write", f"the last line has no newline "
                      f"({len(line)} bytes, a whole entry): kept")
        self.report.entries += 1
        if self.accept(signed):
            self.interpret(signed)

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
        for where, value in entry.unlisted_values():
            self.find(entry.seq, "unknown_value", f"{where} {value!r} is not a value this "
                      "verifier knows; kept")
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
                      "file does not name")

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
        if t.boot_id != self.boot:
            self.report.boots.append({"seq": entry.seq, "boot_id": t.boot_id})
            if self.boot is not None:
                # Capture cannot go on across a boot: each recording open at
                # this point must be declared cut by an interruption.
                for rec in self.recordings.values():
                    if rec.stop_utc_ns is None and not rec._unresumed:
                        rec._boot_unclaimed = entry.seq
            self.boot, self.boot_utc_ns = t.boot_id, t.utc_ns
        if t.clock_source != self.clock_source:
            self.report.clock_sources.append({"seq": entry.seq, "from": self.clock_source,
                                              "to": t.clock_source, "synced": t.clock_synced})
            self.clock_source = t.clock_source

    def claims_boot(self, rec: RecordingReport, seq: int, what: str) -> None:
        """Something of ``rec`` after a boot change that no interruption declared."""
        if rec._boot_unclaimed is not None:
            self.find(seq, "undeclared_boot", f"recording {rec.recording} was open when the "
                      f"device booted again (entry {rec._boot_unclaimed}), and {what} comes "
                      "with no interruption declaring the cut")
            rec._boot_unclaimed = None

    # --- meaning --------------------------------------------------------------

    def interpret(self, signed: SignedEntry) -> None:
        entry, body, seq = signed.entry, signed.entry.body, signed.entry.seq
        for m in entry.media():
            self.media_refs.append((seq, m))
        match body:
            case Provisioned() if seq != 0:
                self.find(seq, "second_genesis", "a provisioned entry after the genesis")
            case RecordStart():
                self.record_start(signed, body)
            case Segment():
                self.segment(signed, body)
            case Interruption():
                rep = InterruptionReport(seq, body.reason, body.cut_utc_ns, body.recording,
                                         detected_by=body.detected_by)
                self.interruptions[seq] = rep
                self.report.interruptions.append(rep)
                rec = self.recordings.get(body.recording) if body.recording is not None else None
                if rec is not None:
                    self.audio[rec.recording].interrupted(seq)
                    rec._pending.append(seq)
                    rec._unresumed.add(seq)
                    rec._boot_unclaimed = None
                    rec._end_time = _when(signed)
            case Resume():
                rep = self.interruptions.get(body.interruption)
                if rep is None:
                    self.find(seq, "bad_link", f"resume names {body.interruption}, which is not "
                              "an interruption")
                else:
                    rep.resumed_by = seq
                rec = self.recordings.get(body.recording)
                if rec is not None:
                    self.claims_boot(rec, seq, "its resume")
                    self.audio[rec.recording].span_begins(entry.time.utc_ns)
                    rec._span_clock = _span_clock(signed)
                    rec.spans += 1
                    rec._unresumed.discard(body.interruption)
            case VoiceNote():
                rep = self.interruptions.get(body.interruption)
                if rep is None:
                    self.find(seq, "bad_link", f"voice note names {body.interruption}, which is "
                              "not an interruption")
                elif body.explains:
                    rep.voice_note, rep.explained = seq, True
                else:
                    self.find(seq, "silent_voice_note", f"the voice note for interruption "
                              f"{body.interruption} has no speech")
            case RecordStop():
                rec = self.recordings.get(body.recording)
                if rec is None:
                    self.find(seq, "bad_link", f"record_stop names {body.recording}, which is not "
                              "a recording")
                else:
                    self.claims_boot(rec, seq, "its record_stop")
                    rec.stop_utc_ns, rec.stop_trigger = entry.time.utc_ns, body.trigger
                    rec._end_time = _when(signed)
            case Marker():
                self.report.markers.append({"seq": seq, "utc_ns": entry.time.utc_ns,
                                            "phase": body.phase, "recording": body.recording})
            case Exemption():
                self.report.exemptions.append({
                    "seq": seq, "utc_ns": entry.time.utc_ns, "reason": body.reason,
                    "note": body.note,
                    "voice_memo": body.voice_memo.file if body.voice_memo else None})
            case OffloadReceiptEntry():
                receipt = embedded_receipt(seq, body.receipt, self.report.device, self.digests,
                                           self.trust, self.find)
                if receipt is not None:
                    self.receipts.append(receipt)
            case Overdue():
                self.report.overdue.append({"seq": seq, "utc_ns": entry.time.utc_ns,
                                            "recording": body.recording, "hours": body.hours})
            case TimeSync():
                self.time_sync(seq, body)
            case ConsoleAction():
                self.report.console_actions.append({
                    "seq": seq, "utc_ns": entry.time.utc_ns, "technician": body.technician,
                    "command": body.command, "result": body.result})
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
                          "verifier; kept, not interpreted")

    def time_sync(self, seq: int, body: TimeSync) -> None:
        step = TimeStep(seq, body.old_utc_ns, body.new_utc_ns,
                        (body.new_utc_ns - body.old_utc_ns) / 1e9, body.source, "none")
        if body.statement is not None:
            try:
                statement = check_time_sync(body, self.report.device, self.trust)
                signature = str(body.statement.get("signatures"))
                if signature in self.time_statements:  # one statement answers one reading
                    raise ProtocolError(f"time statement: used before, by entry "
                                        f"{self.time_statements[signature]} (replayed)")
                self.time_statements[signature] = seq
                step.dock, step.statement = statement.dock, "verified"
                if abs(statement.offset_ns) > MAX_DOCK_STEP_NS:
                    applied = "applied" if step.step_s else "not applied: the device kept its clock"
                    self.find(seq, "large_dock_offset", f"dock {statement.dock} said the clock "
                              f"was off by {statement.offset_ns / 1e9:+.3f} s ({applied})")
            except ProtocolError as e:
                step.statement = "invalid"
                self.find(seq, "bad_time_statement", str(e))
        self.report.time_syncs.append(step)

    def record_start(self, signed: SignedEntry, body: RecordStart) -> None:
        seq = signed.entry.seq
        rec = RecordingReport(recording=seq, officer=body.officer, category=body.category,
                              start_utc_ns=signed.entry.time.utc_ns, _start_time=_when(signed),
                              _span_clock=_span_clock(signed))
        prev = self.last_recording
        if prev is not None:
            end = prev._end_time or prev._start_time
            seconds, clock = _between(end, rec._start_time)
            self.report.between_recordings.append({"after": prev.recording, "before": seq,
                                                   "seconds": seconds, "clock": clock})
        self.recordings[seq] = self.last_recording = rec
        self.audio[seq] = AudioTrack(self.policy.audio_tolerance_ns,
                                     _seconds_ns(body.pre_record_seconds), seq,
                                     self.report.audio_gaps)
        self.audio[seq].span_begins(signed.entry.time.utc_ns)
        self.report.recordings.append(rec)

    def segment(self, signed: SignedEntry, body: Segment) -> None:
        seq, t = signed.entry.seq, signed.entry.time
        rec = self.recordings.get(body.recording)
        if rec is None:
            self.find(seq, "bad_link", f"segment names recording {body.recording}, which does "
                      "not exist")
            return
        # A recovered segment, or one sealed whole before the cut but entered only at
        # the next start (its capture all before this boot), is the cut's, not capture
        # after it: the interruption declaring the boot is still owed after it.
        if not body.recovered and body.last_capture_utc_ns >= self.boot_utc_ns:
            self.claims_boot(rec, seq, "a segment captured after it")
        if rec.stop_utc_ns is not None:
            self.find(seq, "segment_after_stop", f"segment of recording {body.recording} after "
                      "its record_stop")
        # A span's captures are stamped on the monotonic clock plus the wall
        # clock's offset when the span began (the recording's latest
        # record_start or resume), so a step within a span moves entries, not
        # captures. Back on the monotonic clock of that boot:
        boot, offset = rec._span_clock
        first_mono = body.first_capture_utc_ns - offset
        last_mono = body.last_capture_utc_ns - offset
        ahead = last_mono - t.monotonic_ns
        if boot == t.boot_id and ahead > self.policy.clock_tolerance_ns:
            self.find(seq, "capture_after_signing", f"the segment's last capture is "
                      f"{ahead / 1e9:.3f} s after its entry was signed")
        prev = rec._last
        if prev is not None and rec._last_end is not None:
            # The earlier segment's cadence: a frame period, or for an audio-only
            # segment (camera fault) its audio sample period, in frame_period_ns.
            period = prev.frame_period_ns
            prev_boot, prev_mono = rec._last_end
            step, clock = body.first_capture_utc_ns - prev.last_capture_utc_ns, "utc"
            if prev_boot == boot and abs(first_mono - prev_mono - step) \
                    > self.policy.clock_tolerance_ns:
                # The wall clock stepped between the two spans: only the
                # monotonic clock still measures the hole.
                step, clock = first_mono - prev_mono, "monotonic"
            if step <= 0:
                self.find(seq, "overlap", f"segment starts {-step / 1e9:.3f} s before the "
                          "previous one's last capture (duplicated or reordered media)")
            elif step > self.policy.max_gap_frame_periods * period:
                gap = Gap(body.recording, rec._last_seq, seq, prev.last_capture_utc_ns + period,
                          (step - period) / 1e9, declared=bool(rec._pending), clock=clock)
                if rec._pending:
                    cause = self.interruptions[rec._pending[0]]
                    gap.reason, gap.interruption = cause.reason, cause.seq
                else:
                    self.find(seq, "undeclared_gap", f"{gap.seconds:.3f} s gap before this "
                              "segment that no interruption declares")
                self.report.gaps.append(gap)
        self.audio_undeclared(self.audio[body.recording].segment(
            seq, first_ns=body.first_capture_utc_ns, last_ns=body.last_capture_utc_ns,
            period_ns=body.frame_period_ns, samples=body.audio_samples, rate=body.audio_rate,
            interruption=rec._pending[0] if rec._pending else None))
        rec._pending.clear()
        rec._last, rec._last_seq = body, seq
        rec._last_end = (boot, last_mono)
        rec.segments += 1
        rec.duration_s += (body.last_capture_utc_ns - body.first_capture_utc_ns
                           + body.frame_period_ns) / 1e9

    def audio_undeclared(self, gaps: list[AudioGap]) -> None:
        reading, self.line = self.line, None  # the finding names the short segment's line
        for gap in gaps:
            self.find(gap.seq, "undeclared_audio_gap", f"the segment holds {gap.seconds:.3f} s "
                      "less audio than its time, and no interruption declares the hole")
        self.line = reading

    def finish(self) -> None:
        for track in self.audio.values():
            self.audio_undeclared(track.finish())
        for rec in self.report.recordings:
            if rec._boot_unclaimed is not None:
                self.claims_boot(rec, rec._boot_unclaimed, "nothing else")
            if rec.stop_utc_ns is None and not rec._unresumed:
                self.find(rec.recording, "open_recording", f"recording {rec.recording} is "
                          "neither stopped nor interrupted at the end of the ledger (its tail "
                          "may be cut off)")
        for rep in self.report.interruptions:
            if not rep.explained:
                self.find(rep.seq, "unexplained_interruption", f"interruption {rep.seq} "
                          f"({rep.reason}) has no voice note with speech")
        for gap in self.report.gaps:
            if gap.interruption is not None:
                rep = self.interruptions[gap.interruption]
                gap.voice_note, gap.explained = rep.voice_note, rep.explained
        self.report.verdict = verdict_of(self.report.findings)


def _seconds_ns(seconds: float) -> int:
    """A length in seconds as written (any number), in ns: 0 unless finite and positive."""
    try:
        return max(0, int(seconds * 1_000_000_000))
    except (TypeError, ValueError, OverflowError):
        return 0


def _span_clock(signed: SignedEntry) -> tuple[str, int]:
    """(boot id, wall clock − monotonic) when a span begins."""
    t = signed.entry.time
    return (t.boot_id, t.utc_ns - t.monotonic_ns)


def _when(signed: SignedEntry) -> tuple[str, int, int]:
    t = signed.entry.time
    return (t.boot_id, t.monotonic_ns, t.utc_ns)


def _between(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[float, str]:
    """Seconds from entry time ``a`` to ``b``: monotonic within one boot, else UTC."""
    if a[0] == b[0]:
        return (b[1] - a[1]) / 1e9, "monotonic"
    return (b[2] - a[2]) / 1e9, "utc"
