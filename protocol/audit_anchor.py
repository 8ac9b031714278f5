"""The archive's audit-log head, anchored in the checkpoints of the device logs.

The audit log (``audit.jsonl``, docs/archive.md) is hash-chained: each record
names the SHA-256 of the line before it. A chain alone does not stop whoever
holds the archive's disk from rewriting it whole and re-chaining it. So each
checkpoint the dock signs carries the audit log's head at that moment as a
C2SP tlog-checkpoint extension line::

    custody-audit <records> <SHA-256 hex of the last record's line, or 64 zeros>

and the device cosigns it with the rest. A rewritten audit log then disagrees
with a checkpoint signed by the dock and cosigned by a device (ADR 0041).
Pure: the caller reads the files.

    >>> anchor_line(0, "0" * 64)
    'custody-audit 0 0000000000000000000000000000000000000000000000000000000000000000'
    >>> audit_anchor(("custody-audit 2 " + "ab" * 32,))
    (2, 'abababababababababababababababababababababababababababababababab')
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from protocol.verify import Finding

EXTENSION = "custody-audit"
GENESIS = "0" * 64
_LINE = re.compile(r"custody-audit (0|[1-9][0-9]*) ([0-9a-f]{64})")


def anchor_line(records: int, head: str) -> str:
    return f"{EXTENSION} {records} {head}"


def audit_anchor(extensions: Sequence[str]) -> tuple[int, str] | None:
    """The (records, head) a checkpoint's extension lines anchor, or None."""
    for line in extensions:
        m = _LINE.fullmatch(line)
        if m:
            return int(m.group(1)), m.group(2)
    return None


def audit_chain(audit: bytes) -> tuple[list[str], int | None]:
    """The head after each record (``heads[n]``: after the first ``n``), and the
    number of the first record that does not link to the one before (None: all do)."""
    heads, broken = [GENESIS], None
    lines = audit.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines):
        if broken is None:
            try:
                record = json.loads(line)
                links = isinstance(record, dict) and record.get("seq") == n and \
                    record.get("prev") == heads[-1]
            except ValueError:
                links = False
            if not links:
                broken = n
        heads.append(hashlib.sha256(line).hexdigest())
    return heads, broken


#: The archive's audit log, at its root: what an ``audit_rewritten`` finding names.
AUDIT_NAME = "audit.jsonl"


def check_audit_anchors(audit: bytes, anchors: Sequence[tuple[str, int, str]]) -> list[Finding]:
    """``anchors``: (checkpoint name, records, head) from checkpoints whose signatures
    verified. An ``audit_rewritten`` finding for each the audit log contradicts."""
    heads, broken = audit_chain(audit)
    findings = []
    for name, records, head in anchors:
        problem = None
        if records >= len(heads):
            problem = (f"it anchored {records} audit records, the audit log has "
                       f"{len(heads) - 1}: records were removed")
        elif broken is not None and broken < records:
            problem = f"the audit log's record {broken} does not link to the one before it"
        elif heads[records] != head:
            problem = f"the audit log's first {records} records are not the ones it anchored"
        if problem:
            findings.append(Finding(None, "audit_rewritten", f"{name}: {problem}: the audit "
                                    "log was rewritten", file=AUDIT_NAME))
    return findings
