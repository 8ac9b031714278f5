"""Verifying only what is new: a range of ledger lines that extends a verified ledger.

The dock has already verified (and archived) a device's ledger up to some
entry. When the device brings more, the dock checks the new lines alone: that
they continue the chain from the archived head (seq and ``prev``), are entries
of that device signed by its current key (following ``key_rotated``), and that
each media file they seal arrived whole with the sealed size and SHA-256. The
cost grows with what is new, not with the device's history.

Continuity across recordings (gaps, interruptions, voice notes) is a question
about the whole ledger and stays :func:`protocol.verify.verify`'s job.

    head = chain_head(archived_ledger_bytes, trust)     # where the archive ends
    report = verify_range(head, new_lines, media_digests, trust)
    report.ok, report.findings, report.media, report.end
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from securesystemslib.exceptions import VerificationError

from protocol.entries import (
    GENESIS_PREV,
    KeyRotated,
    LedgerGap,
    MediaFile,
    Provisioned,
    TimeSync,
)
from protocol.envelope import SignedEntry, parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.keys import fingerprint
from protocol.time_statement import open_time_statement
from protocol.trust import TrustFile
from protocol.verify import ERROR, WARNING, Finding, MediaDigest


@dataclass(frozen=True)
class ChainHead:
    """Where a verified ledger ends: what its next entry must continue from."""

    device: str
    next_seq: int = 0
    digest: str = GENESIS_PREV  # payload SHA-256 of entry next_seq - 1
    signing_key: str | None = None  # the key entries are signed with now (None: no genesis yet)


@dataclass
class RangeReport:
    start: ChainHead
    end: ChainHead  # where the ledger ends if this range is appended
    entries: int = 0
    media: dict[str, MediaFile] = field(default_factory=dict)  # sealed in this range
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def ok(self) -> bool:
        return self.entries > 0 and not self.errors

    @property
    def first_seq(self) -> int:
        return self.start.next_seq

    @property
    def last_seq(self) -> int:
        return self.end.next_seq - 1


def chain_head(ledger: bytes, device: str) -> ChainHead:
    """The head of a ledger that was verified when it was written (no signature checks).

    Raises :class:`ProtocolError` if a line cannot be read.
    """
    head = ChainHead(device)
    for line in split_lines(ledger):
        signed = parse_line(line)
        key = head.signing_key
        match signed.entry.body:
            case Provisioned(device_key=k) if signed.entry.seq == 0:
                key = k
            case KeyRotated(new_key=k):
                key = k
        head = ChainHead(device, signed.entry.seq + 1, signed.digest, key)
    return head


def verify_range(start: ChainHead, lines: bytes, media: Mapping[str, MediaDigest] | None,
                 trust: TrustFile) -> RangeReport:
    """Check ledger ``lines`` as the continuation of a ledger ending at ``start``.

    ``media`` is what the caller measured of the files the range seals (None:
    check the ledger only, e.g. before the media has arrived).
    """
    report = RangeReport(start, start)
    findings = report.findings

    def find(seq: int | None, kind: str, message: str, severity: str = ERROR) -> None:
        findings.append(Finding(seq, kind, message, severity))

    if lines and not lines.endswith(b"\n"):
        find(None, "torn_write", "the range's last line has no newline")
    head = start
    for number, line in enumerate(split_lines(lines), start=1):
        try:
            signed = parse_line(line)
        except ProtocolError as e:
            find(head.next_seq, "malformed_entry", f"line {number} of the range: {e}")
            break  # nothing after it can be linked
        entry = signed.entry
        report.entries += 1
        if entry.device != start.device:
            find(entry.seq, "foreign_entry", f"entry of device {entry.device!r} in the ledger "
                 f"of {start.device!r}")
            break
        if entry.seq != head.next_seq and _declared_jump(head, signed):
            body = signed.entry.body
            # The device's own signed word that entries are gone from its ledger
            # (device/high_water.py): what it declares is kept, and said.
            find(entry.seq, "ledger_gap", f"the device declares entries {body.first_seq}.."
                 f"{body.last_seq} gone; entries {head.next_seq}..{entry.seq - 1} never "
                 "reach the archive", WARNING)
            head = ChainHead(start.device, entry.seq, entry.prev, head.signing_key)
        if entry.seq != head.next_seq:
            find(entry.seq, "seq_out_of_order", f"entry {entry.seq} comes where "
                 f"{head.next_seq} should")
            break
        if entry.prev != head.digest:
            find(entry.seq, "prev_mismatch", f"entry {entry.seq} does not link to the entry "
                 "before it")
            break
        key = _signing_key(head, signed, trust, find)
        if key is None or not _signature_ok(signed, key, trust, find):
            break
        for m in entry.media():
            if m.file in report.media:
                find(entry.seq, "media_reused", f"{m.file} is sealed twice in the range")
            report.media[m.file] = m
        if isinstance(entry.body, TimeSync) and entry.body.statement is not None:
            try:
                statement = open_time_statement(entry.body.statement, trust)
                if statement.device != start.device:
                    raise ProtocolError(f"it is for device {statement.device!r}")
            except ProtocolError as e:
                find(entry.seq, "bad_time_statement", str(e), WARNING)
        if isinstance(entry.body, KeyRotated):
            if fingerprint(bytes.fromhex(entry.body.new_public)) != entry.body.new_key:
                find(entry.seq, "bad_key_rotation", "new_key is not the new key's id")
                break
            key = entry.body.new_key
        head = ChainHead(start.device, entry.seq + 1, signed.digest, key)
    report.end = head
    if not report.entries and not findings:
        find(None, "empty_range", "the range has no entries")
    if media is not None:
        _check_media(report, media, find)
    return report


def _declared_jump(head: ChainHead, signed: SignedEntry) -> bool:
    """A ``ledger_gap`` entry that skips from ``head`` to just after the mark it names:
    it covers every seq it skips (``first_seq`` <= head's next seq) and links to the
    mark's head. Its signature is checked like any entry's, by the caller."""
    body, entry = signed.entry.body, signed.entry
    return (isinstance(body, LedgerGap) and body.last_seq is not None
            and entry.seq == body.last_seq + 1 and body.first_seq <= head.next_seq < entry.seq
            and entry.prev == body.last_head)


def _signing_key(head: ChainHead, signed: SignedEntry, trust: TrustFile, find) -> str | None:
    entry = signed.entry
    if head.next_seq == 0:
        body = entry.body
        if not isinstance(body, Provisioned) or entry.prev != GENESIS_PREV:
            find(entry.seq, "no_genesis", "the ledger does not start with its provisioned entry")
            return None
        if body.unit != trust.unit:
            find(0, "wrong_unit", f"provisioned for unit {body.unit!r}, the trust file is for "
                 f"{trust.unit!r}")
            return None
        return body.device_key
    if head.signing_key is None:
        find(entry.seq, "untrusted_key", "no signing key is known for this ledger")
    return head.signing_key


def _signature_ok(signed: SignedEntry, keyid: str, trust: TrustFile, find) -> bool:
    entry = signed.entry
    if keyid not in trust.device_keys(entry.device):
        find(entry.seq, "untrusted_key", f"the device's key is not trusted for {entry.device!r}")
        return False
    if keyid not in signed.envelope.signatures:
        find(entry.seq, "untrusted_signature", "entry is not signed by the device's current key")
        return False
    try:
        signed.envelope.verify([trust.signing_key(keyid)], 1)
    except VerificationError:
        find(entry.seq, "bad_signature", "the signature does not match the entry (altered)")
        return False
    return True


def _check_media(report: RangeReport, media: Mapping[str, MediaDigest], find) -> None:
    for name, ref in report.media.items():
        got = media.get(name)
        if got is None:
            find(None, "media_missing", f"{name} did not arrive")
        elif got.size != ref.size:
            kind = "media_truncated" if got.size < ref.size else "media_size"
            find(None, kind, f"{name} is {got.size} bytes, sealed as {ref.size}")
        elif got.sha256 != ref.sha256:
            find(None, "media_hash", f"{name} does not match its sealed SHA-256")

