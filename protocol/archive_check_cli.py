"""The archive part of ``custody verify ARCHIVE``: reads checkpoints and tombstones.

An archive (``trust.json``, ``devices/<id>/``) may also hold, per device::

    checkpoints/<id>/<size>.checkpoint    signed checkpoints of its log (C2SP)
    tombstones/<id>/<recording>.json      signed records of deleted media

:func:`check_archived_store` runs :func:`protocol.archive_device_check.check_archived_device`
for each store and folds its findings into that store's continuity report.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.archive_device_check import (
    CHECKPOINTS_DIR,
    TOMBSTONES_DIR,
    ArchivedDeviceCheck,
    check_archived_device,
)
from protocol.archive_log import open_device_checkpoint
from protocol.audit_anchor import AUDIT_NAME, audit_anchor, check_audit_anchors
from protocol.checkpoint import CheckpointError
from protocol.findings import Finding
from protocol.store_reader import StoreContents, read_file_if_present, read_small_files
from protocol.trust import TrustFile
from protocol.verify import (
    BROKEN,
    ERROR,
    INTACT,
    INTACT_UNEXPLAINED_GAPS,
    UNEXPLAINED,
    ContinuityReport,
)

MAX_AUDIT_BYTES = 1 << 30


def is_archive(path: Path) -> bool:
    return (path / "devices").is_dir()


def read_extras(archive: Path, device: str) -> tuple[list[tuple[str, bytes]],
                                                       list[tuple[str, object]], list[Finding]]:
    """A device's checkpoints and tombstones, and findings about those not read.

    Read through the store reader's rules (no links, regular files, bounded):
    a link, FIFO, oversized or unparsable file is a finding naming its path.
    """
    checkpoints, findings = read_small_files(archive, (CHECKPOINTS_DIR, device), ".checkpoint")
    raw, unread = read_small_files(archive, (TOMBSTONES_DIR, device), ".json")
    findings += unread
    tombstones: list[tuple[str, object]] = []
    for name, data in raw:
        try:
            tombstones.append((name, json.loads(data)))
        except ValueError as e:
            where = f"{TOMBSTONES_DIR}/{device}/{name}"
            findings.append(Finding(None, "bad_tombstone", f"{where}: not JSON ({e})",
                                    file=where))
    return checkpoints, tombstones, findings


def check_archived_store(archive: Path, trust: TrustFile, contents: StoreContents,
                  report: ContinuityReport) -> ArchivedDeviceCheck:
    """Check one archived store and fold the findings into its ``report``.

    The archive check decides about missing media (deleted under a tombstone,
    or lost): in an archive nothing is "offloaded" further, so verify's own
    findings about missing files give way to it. The verdict is recomputed.
    """
    device = report.device or contents.path.name
    checkpoints, tombstones, unread = read_extras(archive, device)
    check = check_archived_device(device, contents.ledger, contents.media, checkpoints,
                                  tombstones, trust)
    check.findings = unread + check.findings
    report.findings = [f for f in report.findings if f.kind not in ("offloaded", "media_missing")]
    report.findings += check.findings
    report.findings += _audit_findings(archive, trust, device, checkpoints)
    severities = {f.severity for f in report.findings}
    report.verdict = (BROKEN if ERROR in severities else INTACT_UNEXPLAINED_GAPS
                      if UNEXPLAINED in severities else INTACT)
    return check


def _audit_findings(archive: Path, trust: TrustFile, device: str,
                    checkpoints: list[tuple[str, bytes]]) -> list:
    """The audit log against the heads this device's signed checkpoints anchor."""
    anchors = []
    for name, data in checkpoints:
        try:
            cp = open_device_checkpoint(data, trust, device).checkpoint
        except CheckpointError:
            continue  # bad_checkpoint already says so
        anchor = audit_anchor(cp.extensions)
        if anchor is not None:
            anchors.append((name, *anchor))
    if not anchors:
        return []
    audit = read_file_if_present(archive / AUDIT_NAME, MAX_AUDIT_BYTES) or b""
    return check_audit_anchors(audit, anchors)
