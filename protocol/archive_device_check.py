"""What an archive adds to a device's verification: its log's checkpoints and
cosignatures, and tombstones for deleted media.

:func:`check_archived_device` runs beside :func:`protocol.verify.verify` for
each device of an archive. It finds:

- ``ledger_rewritten`` (error): the archived ledger is not the history a
  checkpoint signed by a dock (and cosigned by the device) fixed;
- ``ledger_truncated`` (error): a checkpoint covers more entries than the
  ledger has;
- ``bad_checkpoint`` (error): a checkpoint no dock or archive key signed, or a
  cosignature by the device's key that fails;
- ``not_cosigned`` (warning): the newest checkpoint has no device cosignature;
- ``no_checkpoint`` (warning): the device's log has no checkpoint yet;
- ``archive_media_missing`` (error): a sealed file gone from the archive with
  no tombstone: nothing past the archive may free it;
- ``deleted`` (info): gone, with a valid tombstone naming who and why;
- ``bad_tombstone`` (error), ``tombstone_file_present`` (warning).

Pure: the caller reads the files (protocol/archive_check_cli.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.archive_log import ledger_leaves, open_device_checkpoint, tree_of
from protocol.checkpoint import CheckpointError
from protocol.entries import MediaFile
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.media_check import media_path
from protocol.tombstone import Tombstone, open_tombstone
from protocol.trust import TrustFile
from protocol.verify import INFO, LEDGER_FILE, WARNING, Finding, MediaDigest

# An archive's own records, per device, relative to the archive (docs/archive.md).
CHECKPOINTS_DIR = "checkpoints"
TOMBSTONES_DIR = "tombstones"


def checkpoint_path(device: str, name: str) -> str:
    return f"{CHECKPOINTS_DIR}/{device}/{name}"


def tombstone_path(device: str, name: str) -> str:
    return f"{TOMBSTONES_DIR}/{device}/{name}"


@dataclass
class ArchivedDeviceCheck:
    device: str
    checkpoints: int = 0
    checked_size: int = 0  # entries fixed by the newest valid checkpoint
    cosigned_size: int = 0  # entries fixed by the newest checkpoint the device cosigned
    deleted_files: int = 0
    findings: list[Finding] = field(default_factory=list)


def check_archived_device(device: str, ledger: bytes, media: Mapping[str, MediaDigest],
                          checkpoints: Sequence[tuple[str, bytes]],
                          tombstones: Sequence[tuple[str, Any]],
                          trust: TrustFile) -> ArchivedDeviceCheck:
    result = ArchivedDeviceCheck(device)
    find = result.findings.append
    leaves = ledger_leaves(ledger)
    tree = tree_of(leaves)
    newest_cosigned = False
    for name, data in checkpoints:
        try:
            opened = open_device_checkpoint(data, trust, device)
        except CheckpointError as e:
            find(Finding(None, "bad_checkpoint", f"{name}: {e}",
                         file=checkpoint_path(device, name)))
            continue
        result.checkpoints += 1
        cp = opened.checkpoint
        if cp.size > tree.size:
            find(Finding(None, "ledger_truncated", f"{name}: the log fixed {cp.size} entries, "
                         f"the archived ledger has {tree.size}: its tail is gone",
                         file=LEDGER_FILE))
            continue
        if tree.root(cp.size) != cp.root_hash:
            who = "the archive and the device" if opened.cosigned_by else "the archive"
            find(Finding(None, "ledger_rewritten", f"{name}: the first {cp.size} entries are "
                         f"not the ones {who} signed: the ledger was rewritten",
                         file=LEDGER_FILE))
            continue
        if cp.size >= result.checked_size:
            result.checked_size = cp.size
            newest_cosigned = bool(opened.cosigned_by)
        if opened.cosigned_by:
            result.cosigned_size = max(result.cosigned_size, cp.size)
    if not checkpoints:
        find(Finding(None, "no_checkpoint", "the archive has no checkpoint of this device's "
                     "log", WARNING))
    elif result.checked_size and not newest_cosigned:
        find(Finding(None, "not_cosigned", f"the newest checkpoint ({result.checked_size} "
                     "entries) is not cosigned by the device", WARNING))
    _check_media(result, ledger, media, tombstones, trust)
    return result


def _check_media(result: ArchivedDeviceCheck, ledger: bytes, media: Mapping[str, MediaDigest],
                 tombstones: Sequence[tuple[str, Any]], trust: TrustFile) -> None:
    find = result.findings.append
    deleted: dict[str, tuple[str, Tombstone]] = {}
    for name, envelope in tombstones:
        try:
            t = open_tombstone(envelope, trust)
        except ProtocolError as e:
            find(Finding(None, "bad_tombstone", f"{name}: {e}",
                         file=tombstone_path(result.device, name)))
            continue
        if t.device != result.device:
            find(Finding(t.recording, "bad_tombstone", f"{name}: for device {t.device!r}",
                         file=tombstone_path(result.device, name)))
            continue
        for m in t.media:
            deleted[m.file] = (m.sha256, t)
    refs: list[tuple[int, MediaFile]] = []
    for line in split_lines(ledger):
        try:
            signed = parse_line(line)
        except ProtocolError:
            continue  # verify reports it
        refs += [(signed.entry.seq, m) for m in signed.entry.media()]
    for seq, ref in refs:
        gone = deleted.get(ref.file)
        if ref.file in media:
            if gone is not None:
                find(Finding(seq, "tombstone_file_present", f"{ref.file} has a tombstone but "
                             "is still in the archive", WARNING, media_path(ref.file)))
        elif gone is not None and gone[0] == ref.sha256:
            t = gone[1]
            result.deleted_files += 1
            find(Finding(seq, "deleted", f"{ref.file} deleted by {t.deleted_by}: {t.reason}",
                         INFO, media_path(ref.file)))
        else:
            find(Finding(seq, "archive_media_missing", f"{ref.file} is not in the archive and "
                         "no tombstone accounts for it", file=media_path(ref.file)))
