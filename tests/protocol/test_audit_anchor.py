"""The audit log's head anchored in checkpoints (protocol/audit_anchor.py)."""

from __future__ import annotations

import hashlib
import json

from protocol.audit_anchor import GENESIS, anchor_line, audit_anchor, check_audit_anchors


def log_of(n: int) -> tuple[bytes, list[str]]:
    lines, heads, prev = [], [GENESIS], GENESIS
    for seq in range(n):
        line = json.dumps({"seq": seq, "prev": prev, "action": "view"}).encode()
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line)
        heads.append(prev)
    return b"".join(x + b"\n" for x in lines), heads


def test_an_anchor_of_a_prefix_holds_as_the_log_grows():
    audit, heads = log_of(5)
    anchors = [("a", 0, GENESIS), ("b", 3, heads[3]), ("c", 5, heads[5])]
    assert check_audit_anchors(audit, anchors) == []
    assert audit_anchor(("other", anchor_line(3, heads[3]))) == (3, heads[3])
    assert audit_anchor(("custody-audit 03 " + heads[3],)) is None


def test_removed_edited_or_broken_records_are_audit_rewritten():
    audit, heads = log_of(5)
    shorter, _ = log_of(4)
    [f] = check_audit_anchors(shorter, [("c", 5, heads[5])])
    assert f.kind == "audit_rewritten" and "removed" in f.message
    edited = audit.replace(b'"view"', b'"edit"', 1)  # record 0 edited, not re-chained
    [f] = check_audit_anchors(edited, [("b", 3, heads[3])])
    assert "record 1 does not link" in f.message
    other, _ = log_of(5)
    other = other.replace(b'"view"', b'"VIEW"')  # re-chained from scratch: other heads
    relinked = b""
    prev = GENESIS
    for line in other.splitlines():
        rec = json.loads(line)
        rec["prev"] = prev
        new = json.dumps(rec).encode()
        prev = hashlib.sha256(new).hexdigest()
        relinked += new + b"\n"
    [f] = check_audit_anchors(relinked, [("b", 3, heads[3])])
    assert "not the ones it anchored" in f.message
    assert check_audit_anchors(relinked, [("a", 0, GENESIS)]) == []
