"""The archive's side of a device's Merkle log: signing checkpoints, keeping the
device's cosignatures, and proofs for evidence packages.

The leaves are the archived ledger's entries (protocol/archive_log.py), so the
tree is rebuilt from the ledger whenever it is needed (a device's ledger is
thousands of entries, milliseconds to hash) and no second copy can drift.
Checkpoints are files ``checkpoints/<device>/<size>.checkpoint``; one is
signed only if it is consistent with every checkpoint signed before it (the
tlog-checkpoint rule), so a ledger rewritten inside the archive is refused
here, before anyone signs over it.

At docking the dock (daemon/dock/checkpoints.py) signs with its dock key,
calls :meth:`DeviceLog.proposal` with the size of the checkpoint the device
holds, hands the note and proof to the device
(``protocol.archive_log.cosign_if_consistent``, in device/checkpoint_keeper.py),
and gives what comes back to :meth:`DeviceLog.accept_cosigned`. A refusal is
the dock's ``checkpoint_refused`` alert.
"""

from __future__ import annotations

import os
from pathlib import Path

from daemon.archive.store import EvidenceStore
from hardware.host.durable import write_new
from protocol.archive_log import (
    ledger_leaves,
    log_origin,
    log_signer,
    open_device_checkpoint,
    tree_of,
    witness_name,
)
from protocol.checkpoint import Checkpoint, CheckpointError
from protocol.keys import SigningKey
from protocol.merkle import MerkleTree
from protocol.note import Note
from protocol.store_reader import StoreError
from protocol.trust import TrustFile

CHECKPOINTS_DIR = "checkpoints"


class LogError(Exception):
    """The archive will not sign or keep a checkpoint; says why."""


class DeviceLog:
    def __init__(self, root: Path, trust: TrustFile, store: EvidenceStore, device: str):
        self.dir = Path(root) / CHECKPOINTS_DIR / device
        self.trust, self.store, self.device = trust, store, device

    def tree(self) -> MerkleTree:
        return tree_of(ledger_leaves(self.store.ledger(self.device)))

    def checkpoint_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("*.checkpoint"), key=lambda p: int(p.stem))

    def latest(self) -> bytes | None:
        files = self.checkpoint_files()
        return files[-1].read_bytes() if files else None

    def _path(self, size: int) -> Path:
        return self.dir / f"{size:012d}.checkpoint"

    def sign(self, archive_key: SigningKey, extensions: tuple[str, ...] = ()) -> bytes:
        """Sign a checkpoint of the log as it is now (or return the newest, if it has
        not grown), with ``extensions`` as its extension lines (the audit head).
        Refuses if the ledger no longer matches an earlier checkpoint."""
        tree = self.tree()
        for path in self.checkpoint_files():
            cp = self._open(path.read_bytes()).checkpoint
            if cp.size > tree.size or tree.root(cp.size) != cp.root_hash:
                raise LogError(f"{self.device}: the archived ledger is not the one checkpoint "
                               f"{path.name} fixed; refusing to sign over a rewritten history")
        latest = self.latest()
        if latest is not None and self._open(latest).checkpoint.size == tree.size:
            return latest
        signer = log_signer(self.trust, self.device, archive_key)
        text = Checkpoint(log_origin(self.trust.unit, self.device), tree.size,
                          tree.root(), extensions).to_text()
        note = Note(text, [signer.sign(text)]).to_bytes()
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_new(self._path(tree.size), note)
        return note

    def proposal(self, device_size: int | None) -> tuple[bytes, list[bytes]]:
        """The newest checkpoint and the consistency proof from ``device_size``
        (the size of the checkpoint the device holds; None or 0 at its first docking)."""
        latest = self.latest()
        if latest is None:
            raise LogError(f"{self.device}: no checkpoint signed yet")
        size = self._open(latest).checkpoint.size
        if not device_size:
            return latest, []
        if device_size > size:
            raise LogError(f"{self.device}: the device holds a checkpoint of {device_size} "
                           f"entries, the archive's newest has {size}")
        return latest, self.tree().consistency_proof(device_size, size)

    def accept_cosigned(self, note: bytes) -> None:
        """Keep the device's cosignature on a checkpoint this archive signed."""
        opened = self._open(note)
        name = witness_name(self.trust.unit, self.device)
        if name not in opened.cosigned_by:
            raise LogError(f"{self.device}: the checkpoint carries no cosignature by the device")
        path = self._path(opened.checkpoint.size)
        if not path.is_file() or Note.from_bytes(path.read_bytes()).text != opened.note.text:
            raise LogError(f"{self.device}: the device cosigned a checkpoint this archive did "
                           "not sign")
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the same signed text, one signature more
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def covering(self, index: int) -> bytes:
        """The checkpoint to prove leaf ``index`` against: the newest cosigned one that
        covers it, else the newest that does."""
        best: bytes | None = None
        for path in reversed(self.checkpoint_files()):
            data = path.read_bytes()
            opened = self._open(data)
            if opened.checkpoint.size <= index:
                break
            if opened.cosigned_by:
                return data
            best = best or data
        if best is None:
            raise LogError(f"{self.device}: no checkpoint covers entry {index} yet")
        return best

    def _open(self, data: bytes):
        try:
            return open_device_checkpoint(data, self.trust, self.device)
        except CheckpointError as e:
            raise LogError(f"{self.device}: {e}") from e


def _write_new(path: Path, data: bytes) -> None:
    try:
        write_new(path, data)
    except FileExistsError as e:
        raise StoreError(f"{path}: a checkpoint of this size is already there") from e
