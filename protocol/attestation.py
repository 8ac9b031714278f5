"""Continuity attestations: a dock's signed word on what a device handed in.

After each offload the dock verifies the device's ledger and media
(:func:`protocol.verify.verify`) and states, for the range it archived, what a
unit head needs to know: the recordings (start, stop, duration, segments), every
gap with its reason and whether a voice note explains it, exemptions, markers,
how long each recording took to reach the archive (Art. 10: at most 24 h), the
device's clock offset and the verdict. It is published over MQTT (retained,
one topic per device) and kept by the archive.

    att = build_attestation(report, dock="DOCK-01", first_seq=0, last_seq=41,
                            archived_utc_ns=t, attested_utc_ns=t)
    envelope = sign_attestation(att, dock_key.signer())   # DSSE, JSON form
    att = open_attestation(envelope, trust)               # raises ProtocolError
    check = check_attestation(envelope, trust)            # the same, as a result

Only a key the trust file lists for the dock the attestation names may sign
it. The attestation id is derived from (unit, dock, device, seq range, head),
so a consumer that deduplicates by id never hides a different statement: a
payload whose id is not its own is refused. Pure: times are the caller's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile
from protocol.verify import ContinuityReport

ATTESTATION_PAYLOAD_TYPE = "application/vnd.custody.attestation+json"
ATTESTATION_KIND = "continuity_attestation"
HANDOVER_LIMIT_S = 24 * 3600  # Art. 10: hand recordings in within 24 hours
VERDICTS = ("intact", "intact_unexplained_gaps", "broken")


@dataclass
class AttestedRecording(Record):
    recording: int  # seq of its record_start
    officer: str
    category: str
    start_utc_ns: int
    stop_utc_ns: int | None  # None: still going when the device docked
    duration_s: float  # captured time, gaps excluded
    segments: int
    spans: int
    handover_s: float | None  # recorded (its stop) -> archived; None while it goes on
    overdue: bool  # handed in later than the limit, or the device said so


@dataclass
class AttestedGap(Record):
    recording: int
    start_utc_ns: int
    seconds: float
    declared: bool  # an interruption covers it
    reason: str | None
    interruption: int | None  # seq of that interruption
    voice_note: int | None  # seq of the voice note that explains it
    explained: bool


@dataclass
class AttestedExemption(Record):
    seq: int
    utc_ns: int
    reason: str
    note: str | None = None
    voice_memo: str | None = None


@dataclass
class AttestedMarker(Record):
    seq: int
    utc_ns: int
    phase: str
    recording: int | None = None


@dataclass
class AttestedFinding(Record):
    seq: int | None
    kind: str
    message: str
    severity: str


@dataclass
class Attestation(Record):
    """A dock's continuity report over entries ``first_seq``..``last_seq`` of a device."""

    id: str
    unit: str
    dock: str
    device: str
    officers: list[str]
    first_seq: int
    last_seq: int
    head: str | None  # SHA-256 of the last verified entry's payload
    archived_utc_ns: int  # when the range was archived (dock clock)
    attested_utc_ns: int
    recordings: list[AttestedRecording]
    gaps: list[AttestedGap]
    exemptions: list[AttestedExemption]
    markers: list[AttestedMarker]
    clock_offset_ns: int | None  # device clock minus dock clock, as the dock measured
    verdict: str
    findings: list[AttestedFinding]
    handover_limit_s: int = HANDOVER_LIMIT_S
    kind: str = ATTESTATION_KIND
    format: int = 1

    def validate(self, where: str) -> None:
        if self.kind != ATTESTATION_KIND:
            raise ProtocolError(f"{where}.kind: not a {ATTESTATION_KIND}")
        if self.verdict not in VERDICTS:
            raise ProtocolError(f"{where}.verdict: {self.verdict!r} is not one of "
                                f"{', '.join(VERDICTS)}")
        if not 0 <= self.first_seq <= self.last_seq:
            raise ProtocolError(f"{where}: seq range {self.first_seq}..{self.last_seq} is empty")
        if self.id != attestation_id(self.unit, self.dock, self.device, self.first_seq,
                                     self.last_seq, self.head):
            raise ProtocolError(f"{where}.id: not the id of this unit, dock, device, range and "
                                "head")

    @property
    def overdue(self) -> list[AttestedRecording]:
        return [r for r in self.recordings if r.overdue]

    @property
    def unexplained_gaps(self) -> list[AttestedGap]:
        return [g for g in self.gaps if not g.explained]


def attestation_id(unit: str, dock: str, device: str, first_seq: int, last_seq: int,
                   head: str | None) -> str:
    """What names one attestation: the same dock stating the same range of the same chain."""
    text = encode_json([unit, dock, device, first_seq, last_seq, head])
    return hashlib.sha256(b"custody-attestation-id/1\n" + text).hexdigest()[:32]


def build_attestation(report: ContinuityReport, *, dock: str, first_seq: int, last_seq: int,
                      archived_utc_ns: int, attested_utc_ns: int,
                      clock_offset_ns: int | None = None, since_utc_ns: int | None = None,
                      handover_limit_s: int = HANDOVER_LIMIT_S) -> Attestation:
    """The attestation of a verified range, from :func:`protocol.verify.verify`'s report.

    The report may cover the whole ledger; the attestation keeps what belongs
    to ``first_seq``..``last_seq``: recordings started in it, still going, or
    stopped at or after ``since_utc_ns`` (the time of entry ``first_seq``;
    None keeps every recording), and the gaps, markers and exemptions of its
    entries. Findings and the verdict are the whole chain's: a break before
    the range still breaks what the range builds on.
    """
    if report.device is None:
        raise ProtocolError("attestation: the report names no device (empty ledger?)")

    def in_range(seq: Any) -> bool:
        return isinstance(seq, int) and first_seq <= seq <= last_seq

    flagged = {o.get("recording") for o in report.overdue}
    recordings = []
    for rec in report.recordings:
        if not (rec.recording >= first_seq or rec.stop_utc_ns is None
                or since_utc_ns is None or rec.stop_utc_ns >= since_utc_ns):
            continue
        handover = (None if rec.stop_utc_ns is None
                    else max(0, archived_utc_ns - rec.stop_utc_ns) / 1e9)
        # A recording still going is overdue once its start is older than the limit.
        waited = (archived_utc_ns - rec.start_utc_ns) / 1e9 if handover is None else handover
        recordings.append(AttestedRecording(
            recording=rec.recording, officer=rec.officer, category=rec.category,
            start_utc_ns=rec.start_utc_ns, stop_utc_ns=rec.stop_utc_ns,
            duration_s=rec.duration_s, segments=rec.segments, spans=rec.spans,
            handover_s=handover,
            overdue=waited > handover_limit_s or rec.recording in flagged))
    gaps = [AttestedGap(recording=g.recording, start_utc_ns=g.start_utc_ns, seconds=g.seconds,
                        declared=g.declared, reason=g.reason, interruption=g.interruption,
                        voice_note=g.voice_note, explained=g.explained)
            for g in report.gaps if in_range(g.before_seq)]
    exemptions = [AttestedExemption(seq=e["seq"], utc_ns=e["utc_ns"], reason=e["reason"],
                                    note=e.get("note"), voice_memo=e.get("voice_memo"))
                  for e in report.exemptions if in_range(e.get("seq"))]
    markers = [AttestedMarker(seq=m["seq"], utc_ns=m["utc_ns"], phase=m["phase"],
                              recording=m.get("recording"))
               for m in report.markers if in_range(m.get("seq"))]
    findings = [AttestedFinding(seq=f.seq, kind=f.kind, message=f.message, severity=f.severity)
                for f in report.findings]
    return Attestation(
        id=attestation_id(report.unit, dock, report.device, first_seq, last_seq, report.head),
        unit=report.unit, dock=dock, device=report.device,
        officers=sorted({r.officer for r in recordings}),
        first_seq=first_seq, last_seq=last_seq, head=report.head,
        archived_utc_ns=archived_utc_ns, attested_utc_ns=attested_utc_ns,
        recordings=recordings, gaps=gaps, exemptions=exemptions, markers=markers,
        clock_offset_ns=clock_offset_ns, verdict=report.verdict, findings=findings,
        handover_limit_s=handover_limit_s)


# --- as bytes, signed ----------------------------------------------------------


def sign_attestation(attestation: Attestation, dock_signer: Signer) -> dict[str, Any]:
    """The attestation as a dock-signed DSSE envelope in JSON form."""
    payload = encode_json(attestation.to_dict())
    return sign_payload(payload, ATTESTATION_PAYLOAD_TYPE, [dock_signer]).to_dict()


@dataclass
class AttestationCheck:
    """What :func:`check_attestation` found: the attestation, or why it is refused."""

    attestation: Attestation | None = None
    problem: str | None = None
    signed_by: list[str] = field(default_factory=list)  # key ids that verified

    @property
    def ok(self) -> bool:
        return self.attestation is not None


def check_attestation(envelope_json: Any, trust: TrustFile) -> AttestationCheck:
    """Check an attestation envelope against the trust file; never raises for bad input."""
    try:
        envelope: Envelope = envelope_from_dict(envelope_json, "attestation")
        if envelope.payload_type != ATTESTATION_PAYLOAD_TYPE:
            raise ProtocolError(f"attestation: payloadType {envelope.payload_type!r}")
        att = Attestation.from_dict(decode_json(envelope.payload, "attestation"), "attestation")
    except ProtocolError as e:
        return AttestationCheck(problem=str(e))
    if att.unit != trust.unit:
        return AttestationCheck(problem=f"attestation: for unit {att.unit!r}, the trust file "
                                f"is for {trust.unit!r}")
    holder = trust.docks.get(att.dock)
    keys = [trust.signing_key(k) for k in (holder.keys if holder else [])]
    keys = [k for k in keys if k is not None]
    if not keys:
        return AttestationCheck(problem=f"attestation: dock {att.dock!r} has no key in the "
                                "trust file (only a dock may attest)")
    try:
        verified = envelope.verify(keys, 1)
    except VerificationError:
        return AttestationCheck(problem=f"attestation: no valid signature by dock {att.dock!r}")
    return AttestationCheck(attestation=att, signed_by=sorted(verified))


def open_attestation(envelope_json: Any, trust: TrustFile) -> Attestation:
    """:func:`check_attestation`, raising :class:`ProtocolError` unless it verifies."""
    check = check_attestation(envelope_json, trust)
    if check.attestation is None:
        raise ProtocolError(check.problem or "attestation: refused")
    return check.attestation
