"""Checkpoints, cosignatures and proofs of a transparency log (C2SP).

- ``tlog-checkpoint``: a signed note whose text is the log's origin, tree size
  and base64 root hash (and optional extension lines).
- ``tlog-cosignature``: an Ed25519 cosignature (signature type 0x04) by a
  witness over ``cosignature/v1\\ntime <t>\\n`` and the checkpoint text; the
  signature is the 8-byte big-endian timestamp then the Ed25519 signature.
- ``tlog-proof``: ``c2sp.org/tlog-proof@v1``, an optional ``extra`` line,
  ``index N``, the inclusion proof one base64 hash a line, a blank line, the
  checkpoint verbatim.

In Custody the archive keeps one log per device whose leaves are the device's
ledger entries' payload bytes, in ledger order; the dock signs its checkpoints
at docking (or the archive's signing key, offline) and the device cosigns them
as witness (docs/archive.md, ADR 0040). Pure: times are passed in.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.keys import raw_public
from protocol.merkle import HASH_SIZE, ProofError, verify_consistency, verify_inclusion
from protocol.note import (
    SIG_COSIGNATURE_ED25519,
    Ed25519Verifier,
    Note,
    NoteError,
    NoteSignature,
    check_key_name,
    ed25519_ok,
    verify_note,
)

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
COSIGNATURE_HEADER = "cosignature/v1"
MAX_TIMESTAMP = 2**63 - 1


class CheckpointError(NoteError):
    """A checkpoint, cosignature or tlog proof that is malformed or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed head: origin, size, root hash.

    >>> cp = Checkpoint("example.com/log", 2, bytes(32))
    >>> Checkpoint.from_text(cp.to_text()) == cp
    True
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(),
                 *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointError("a checkpoint needs at least three non-empty lines")
        origin, size, root = lines[:3]
        if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise CheckpointError(f"checkpoint size {size!r} is not a decimal without "
                                  "leading zeroes")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError) as e:
            raise CheckpointError("checkpoint root hash is not base64") from e
        if len(root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash is {len(root_hash)} bytes")
        return cls(origin, int(size), root_hash, tuple(lines[3:]))


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What an Ed25519 cosigner signs (tlog-cosignature, "Ed25519 signed message")."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


@dataclass(frozen=True)
class CosignatureVerifier(Ed25519Verifier):
    """A witness's Ed25519 cosigning key (signature type 0x04)."""

    sig_type = SIG_COSIGNATURE_ED25519

    def timestamp(self, text: str, sig: NoteSignature) -> int | None:
        """The cosignature's timestamp if it verifies over ``text``, else None."""
        if len(sig.signature) != 8 + 64:
            return None
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if timestamp > MAX_TIMESTAMP:
            return None
        if not ed25519_ok(self.public, sig.signature[8:], cosignature_message(text, timestamp)):
            return None
        return timestamp

    def verify(self, text: str, sig: NoteSignature) -> bool:
        return self.timestamp(text, sig) is not None


@dataclass(frozen=True)
class Cosigner:
    """A witness that cosigns checkpoints with an Ed25519 key."""

    name: str
    private: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, raw_public(self.private.public_key()))

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise CheckpointError(f"cosignature timestamp {timestamp} out of range")
        sig = self.private.sign(cosignature_message(checkpoint_text, timestamp))
        return NoteSignature(self.name, self.verifier.key_id, struct.pack(">Q", timestamp) + sig)


@dataclass
class CheckpointVerification:
    """What a checkpoint note was found to say and who vouched for it."""

    checkpoint: Checkpoint
    note: Note
    cosigned_by: dict[str, int]  # witness name -> cosignature timestamp


def open_checkpoint(data: bytes, log: Ed25519Verifier,
                    witnesses: Sequence[CosignatureVerifier] = (),
                    origin: str | None = None) -> CheckpointVerification:
    """Parse a checkpoint note, check the log's signature and each known witness's.

    Raises :class:`CheckpointError` if the log did not sign it, the origin is
    not the expected one, or any known key's signature fails.
    """
    try:
        note = Note.from_bytes(data)
        verify_note(note, [log])
    except NoteError as e:
        raise CheckpointError(f"checkpoint: {e}") from e
    checkpoint = Checkpoint.from_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    cosigned: dict[str, int] = {}
    for sig in note.signatures:
        for w in witnesses:
            if w.matches(sig):
                timestamp = w.timestamp(note.text, sig)
                if timestamp is None:
                    raise CheckpointError(f"checkpoint: the cosignature by {sig.name} does "
                                          "not verify")
                cosigned[sig.name] = timestamp
    return CheckpointVerification(checkpoint, note, cosigned)


def check_extends(old: Checkpoint, new: Checkpoint, proof: list[bytes]) -> None:
    """Raise :class:`CheckpointError` unless ``new`` is an append-only extension of ``old``."""
    if new.origin != old.origin:
        raise CheckpointError(f"checkpoints of two logs ({old.origin!r}, {new.origin!r})")
    if new.size < old.size:
        raise CheckpointError(f"the log shrank from {old.size} to {new.size} entries")
    if old.size == 0:
        return
    try:
        verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)
    except ProofError as e:
        raise CheckpointError(f"checkpoint of size {new.size} is not consistent with the one "
                              f"of size {old.size}: {e}") from e


@dataclass
class TlogProof:
    """A self-contained proof that a leaf is in a log (c2sp.org/tlog-proof)."""

    index: int
    proof: list[bytes]
    checkpoint: bytes  # the checkpoint note, verbatim
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def from_bytes(cls, data: bytes) -> TlogProof:
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep:
            raise CheckpointError("tlog proof: no blank line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as e:
            raise CheckpointError("tlog proof: header is not ASCII") from e
        if lines[0] != PROOF_HEADER:
            raise CheckpointError(f"tlog proof: first line is not {PROOF_HEADER}")
        extra, rest = None, lines[1:]
        try:
            if rest and rest[0].startswith("extra "):
                extra, rest = base64.b64decode(rest[0][6:], validate=True), rest[1:]
            if not rest or not rest[0].startswith("index "):
                raise CheckpointError("tlog proof: no index line")
            index = rest[0][6:]
            if not index.isdigit() or (index != "0" and index.startswith("0")):
                raise CheckpointError(f"tlog proof: index {index!r} is not a decimal")
            proof = [base64.b64decode(h, validate=True) for h in rest[1:]]
        except (binascii.Error, ValueError) as e:
            raise CheckpointError(f"tlog proof: bad base64 ({e})") from e
        return cls(int(index), proof, checkpoint, extra)

    def verify(self, leaf: bytes, log: Ed25519Verifier, witnesses: Sequence[CosignatureVerifier],
               quorum: int, origin: str | None = None) -> CheckpointVerification:
        """Check the checkpoint's signatures, the witness quorum and the inclusion of ``leaf``
        (a leaf hash). Raises :class:`CheckpointError`."""
        opened = open_checkpoint(self.checkpoint, log, witnesses, origin)
        if len(opened.cosigned_by) < quorum:
            raise CheckpointError(f"tlog proof: {len(opened.cosigned_by)} of the {quorum} "
                                  "cosignatures required")
        try:
            verify_inclusion(self.index, opened.checkpoint.size, leaf, self.proof,
                             opened.checkpoint.root_hash)
        except ProofError as e:
            raise CheckpointError(f"tlog proof: {e}") from e
        return opened
