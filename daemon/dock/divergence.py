"""A device's ledger that does not extend its archived copy: a seq reused, or a ledger cut back.

Restore an older image of a whole card (ledger, high-water mark and media, all
consistent) and the device cannot tell: it goes on from the older head and
signs new entries with seq numbers it had already used. The archive holds the
later entries, so the dock can tell. When a device sends a range that starts
inside what is archived (``first_seq`` below the archive's next seq), the dock
compares it with its copy, entry by entry:

- an entry with the same seq and other content, validly signed by the device:
  ``seq_reused`` (the device's key signed two entries with one seq: the proof
  is kept in quarantine);
- every entry the same, but the range ending before the archive does:
  ``ledger_cut_back`` (the device's ledger is shorter than what it already
  handed in);
- otherwise (a plain overlap) nothing is wrong here.

Either finding is refused and alerted by the caller; the archived copy is
only read. See docs/offload.md, "A card restored from an older image".

    >>> # divergence = find_divergence(archived_lines, first_seq, sent_bytes, device, trust)
    >>> # divergence.reason, divergence.seq, divergence.message
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.trust import TrustFile
from protocol.verify_range import ChainHead, chain_head, verify_range

SEQ_REUSED = "seq_reused"
LEDGER_CUT_BACK = "ledger_cut_back"


@dataclass(frozen=True)
class Divergence:
    reason: str  # SEQ_REUSED, LEDGER_CUT_BACK, or a range finding's kind
    seq: int  # the first entry where the device's ledger and the archive part
    message: str


def find_divergence(archived: list[bytes], first_seq: int, lines: bytes, device: str,
                    trust: TrustFile) -> Divergence | None:
    """How ``lines`` (the device's ledger from ``first_seq``) part from the ``archived``
    lines of that device, or None if they agree and reach the archive's end."""
    by_seq = {}
    for line in archived:  # seq, not line number: a ledger_gap skips seqs
        signed = parse_line(line)
        by_seq[signed.entry.seq] = (line, signed.digest)
    archived_end = max(by_seq, default=-1) + 1  # the archive's next seq
    last = first_seq - 1
    for line in split_lines(lines):
        try:
            signed = parse_line(line)
        except ProtocolError as e:
            return Divergence("malformed_entry", last + 1, f"entry after {last} as sent: {e}")
        seq = signed.entry.seq
        if seq >= archived_end:
            return None  # agrees up to the archive's end: an overlap, not a divergence
        last = seq
        if seq not in by_seq or by_seq[seq][1] == signed.digest:
            continue  # the same entry, or one the archive never had (a declared gap)
        return _reused(archived, seq, line, device, trust)
    return Divergence(LEDGER_CUT_BACK, last + 1,
                      f"the device's ledger ends at entry {last}, but entries up to "
                      f"{archived_end - 1} are archived: entries {last + 1}..{archived_end - 1} "
                      "are gone from the device (a card restored from an older image, or "
                      "cut back)")


def _reused(archived: list[bytes], seq: int, line: bytes, device: str,
            trust: TrustFile) -> Divergence:
    """The device sent another entry ``seq`` than the archive holds: is it the device's?"""
    entry = parse_line(line).entry
    before = chain_head(b"".join(x + b"\n" for x in archived
                                 if parse_line(x).entry.seq < seq), device)
    # Check the entry as the device's, linked to whatever it names as its prev.
    start = ChainHead(device, seq, entry.prev, before.signing_key)
    report = verify_range(start, line + b"\n", None, trust)
    if report.errors:
        error = report.errors[0]
        return Divergence(error.kind, seq, f"entry {seq} as sent is not the archived one, and "
                          f"is not valid: {error.message}")
    return Divergence(SEQ_REUSED, seq,
                      f"entry {seq} as sent is signed by the device but is not the archived "
                      f"entry {seq}: the device signed two entries with one seq (a card "
                      f"restored from an older image?); the archive holds entries up to "
                      f"{parse_line(archived[-1]).entry.seq}")
