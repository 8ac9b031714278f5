"""The archive's per-device Merkle log, as both sides see it.

Each device has a log whose leaf ``i`` is the payload bytes of the ``i``-th
entry of its ledger as archived (the bytes the device signed), so::

    leaf hash = SHA-256(0x00 || entry payload)

The dock signs each checkpoint at docking with its Ed25519 key (trust file:
``docks``; an archive signing key is accepted too, for checkpoints signed
offline by ``custody archive ingest``); the device cosigns it with its own key as witness (C2SP
tlog-cosignature) once it has checked the new checkpoint extends the one it
holds and matches its own ledger. A rewritten history then shows: the device
cannot rewrite what the archive signed, the archive cannot rewrite what the
device cosigned. Pure: no I/O, times passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload
from urllib.parse import quote

from protocol.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointVerification,
    CosignatureVerifier,
    Cosigner,
    check_extends,
    open_checkpoint,
)
from protocol.envelope import decode_json, envelope_from_dict, split_lines
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.merkle import MerkleTree, leaf_hash
from protocol.merkle_frontier import Frontier
from protocol.note import Ed25519NoteSigner, Ed25519Verifier, Note
from protocol.trust import TrustFile


def log_origin(unit: str, device: str) -> str:
    """The origin line (and the archive's key name) of a device's log."""
    return f"custody/{quote(unit, safe='')}/log/{quote(device, safe='')}"


def witness_name(unit: str, device: str) -> str:
    """The device's key name as cosigner of its log."""
    return f"custody/{quote(unit, safe='')}/device/{quote(device, safe='')}"


def log_verifiers(trust: TrustFile, device: str) -> list[Ed25519Verifier]:
    """The keys that may sign the checkpoints of ``device``'s log: the unit's docks'
    (a dock signs one at each docking, ADR 0040) and the archive's own."""
    name = log_origin(trust.unit, device)
    keyids = [k for holder in trust.docks.values() for k in holder.keys] + trust.archive.keys
    return [Ed25519Verifier(name, bytes.fromhex(trust.keys[k].public))
            for k in dict.fromkeys(keyids) if k in trust.keys]


def witness_verifiers(trust: TrustFile, device: str) -> list[CosignatureVerifier]:
    name = witness_name(trust.unit, device)
    return [CosignatureVerifier(name, bytes.fromhex(trust.keys[k].public))
            for k in trust.device_keys(device) if k in trust.keys]


def log_signer(trust: TrustFile, device: str, archive_key: SigningKey) -> Ed25519NoteSigner:
    return Ed25519NoteSigner(log_origin(trust.unit, device), archive_key.private)


def tree_of(payloads: Sequence[bytes]) -> MerkleTree:
    return MerkleTree(leaf_hash(p) for p in payloads)


def open_device_checkpoint(data: bytes, trust: TrustFile, device: str) -> CheckpointVerification:
    """A checkpoint of ``device``'s log, signed by an archive key; its cosignatures checked."""
    origin = log_origin(trust.unit, device)
    last: CheckpointError | None = None
    for verifier in log_verifiers(trust, device):
        try:
            return open_checkpoint(data, verifier, witness_verifiers(trust, device), origin)
        except CheckpointError as e:
            last = e
    raise last or CheckpointError(f"the trust file names no dock or archive key for {device}'s "
                                  "log")


def checkpoint_signing_key(data: bytes, trust: TrustFile, device: str) -> bytes:
    """The public key (a dock's or the archive's) whose signature opens a checkpoint."""
    origin = log_origin(trust.unit, device)
    for verifier in log_verifiers(trust, device):
        try:
            open_checkpoint(data, verifier, (), origin)
        except CheckpointError:
            continue
        return verifier.public
    raise CheckpointError(f"no dock or archive key of the trust file signed this checkpoint of "
                          f"{device}'s log")


class CheckpointRefused(CheckpointError):
    """The device will not cosign: raise an alert with this message."""


@dataclass(frozen=True)
class Cosigned:
    note: bytes  # the new checkpoint with the device's cosignature added
    checkpoint: Checkpoint
    # The frontier of the new checkpoint's tree, as computed from the device's own
    # ledger (None when no ledger was given): to keep beside the note for next time.
    frontier: Frontier | None = None
    frontier_used: bool = False  # the held frontier spared recomputing the first entries


def cosign_if_consistent(old_checkpoint: bytes | None, new_checkpoint: bytes,
                         proof: Sequence[bytes], device_key: SigningKey, *, trust: TrustFile,
                         device: str, timestamp: int,
                         ledger_payloads: Sequence[bytes] | None = None,
                         frontier: Frontier | None = None) -> Cosigned:
    """The device's side of docking: cosign the archive's new checkpoint, or refuse.

    ``old_checkpoint`` is the last one this device cosigned (None at the first
    docking), ``proof`` the archive's consistency proof from it to the new one.
    With ``ledger_payloads`` (the device's own entries' payloads, in ledger
    order) the device also checks the new root is the root of its own first
    ``size`` entries, so the archive cannot log a history the device never had.

    ``frontier`` is the one the device kept beside ``old_checkpoint``. It is
    derived data from a card anyone may edit, so it is used only when it is
    the old checkpoint's tree (its size, and its root, which no other frontier
    can fold to) *and* the old checkpoint carries this device's own
    cosignature (which no one without the device key can add to a checkpoint a
    stolen dock key signed over a made-up history). Then only the entries
    after it are hashed; otherwise all of them are. Raises
    :class:`CheckpointRefused`.
    """
    old_verified = None
    try:
        new = open_device_checkpoint(new_checkpoint, trust, device).checkpoint
        if old_checkpoint is not None:
            old_verified = open_device_checkpoint(old_checkpoint, trust, device)
            check_extends(old_verified.checkpoint, new, list(proof))
    except CheckpointError as e:
        raise CheckpointRefused(str(e)) from e
    computed, used = None, False
    if ledger_payloads is not None:
        if new.size > len(ledger_payloads):
            raise CheckpointRefused(f"the archive logs {new.size} entries, the device has "
                                    f"{len(ledger_payloads)}")
        used = frontier_vouched_for(frontier, old_verified, new.size)
        start = frontier if used and frontier is not None else Frontier()
        computed = start.extended(leaf_hash(p) for p in ledger_payloads[start.size:new.size])
        if computed.root() != new.root_hash:
            raise CheckpointRefused(f"the archive's log of {new.size} entries is not this "
                                    "device's ledger")
    note = Note.from_bytes(new_checkpoint)
    cosigner = Cosigner(witness_name(trust.unit, device), device_key.private)
    if any(cosigner.verifier.matches(s) for s in note.signatures):
        return Cosigned(new_checkpoint, new, computed, used)
    note.signatures.append(cosigner.cosign(note.text, timestamp))
    return Cosigned(note.to_bytes(), new, computed, used)


def frontier_vouched_for(frontier: Frontier | None, old: CheckpointVerification | None,
                         new_size: int) -> bool:
    """Whether ``frontier`` may stand for the first entries: it is the tree of
    ``old``, a checkpoint this device cosigned, and no larger than the new one."""
    return (frontier is not None and old is not None and bool(old.cosigned_by)
            and frontier.size == old.checkpoint.size <= new_size
            and frontier.root() == old.checkpoint.root_hash)


def ledger_leaf(line: bytes) -> bytes:
    """The leaf input of one ledger line: its signed payload bytes, or the line's
    raw bytes when it is not an envelope at all (the log keeps one leaf per line)."""
    try:
        return envelope_from_dict(decode_json(line, "ledger line")).payload
    except ProtocolError:
        return line


def ledger_leaves(ledger: bytes) -> list[bytes]:
    """The leaf inputs of a device's log, one per ledger line, in order."""
    return [ledger_leaf(line) for line in split_lines(ledger)]


class LineLeaves(Sequence[bytes]):
    """The leaf inputs of ledger lines already split, each parsed only when asked
    for: the device's cosigning reads only the entries after its frontier."""

    def __init__(self, lines: Sequence[bytes]):
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [ledger_leaf(line) for line in self.lines[index]]
        return ledger_leaf(self.lines[index])
