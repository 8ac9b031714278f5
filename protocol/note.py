"""C2SP signed notes (c2sp.org/signed-note): text signed by one or more keys.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID || signature)``. A key is known to a verifier by
its (name, key ID) pair; signatures from unknown keys are ignored, one from a
known key that fails makes the whole note refused. Written from the spec; the
spec's own example is the test vector (tests/protocol/test_note.py).

Only Ed25519 is supported: signature type 0x01 for plain note signatures and
0x04 for tlog cosignatures (:mod:`protocol.checkpoint`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol.errors import ProtocolError
from protocol.keys import raw_public

SIG_ED25519 = 0x01
SIG_COSIGNATURE_ED25519 = 0x04
_DASH = "\u2014 "
MAX_SIGNATURES = 64  # the spec asks for at least 16


class NoteError(ProtocolError):
    """A note that is malformed or not signed as required."""


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note, "Signatures")."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def check_key_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} is empty or has a space or '+'")
    return name


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes  # 4 bytes
    signature: bytes  # what follows the key id (for 0x04: timestamp and Ed25519)

    def line(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass
class Note:
    """A note's text and its signature lines, in order.

    >>> note = Note("hello\\n")
    >>> Note.from_bytes(note.to_bytes()) == note
    True
    """

    text: str
    signatures: list[NoteSignature] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Note:
        try:
            whole = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("note is not UTF-8") from e
        if any(ord(c) < 0x20 and c != "\n" for c in whole):
            raise NoteError("note has a control character other than newline")
        # The text ends at the last blank line; signatures follow it.
        split = whole.rfind("\n\n")
        if split < 0:
            raise NoteError("note has no blank line before its signatures")
        text, sig_block = whole[:split + 1], whole[split + 2:]
        if not sig_block.endswith("\n"):
            raise NoteError("note's signature block does not end in a newline")
        signatures = []
        for number, line in enumerate(sig_block[:-1].split("\n"), start=1):
            signatures.append(_parse_signature(line, number))
        if not signatures:
            raise NoteError("note has no signatures")
        if len(signatures) > MAX_SIGNATURES:
            raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
        return cls(text, signatures)


def _parse_signature(line: str, number: int) -> NoteSignature:
    if not line.startswith(_DASH):
        raise NoteError(f"signature line {number} does not start with an em dash and space")
    name, sep, sig = line[len(_DASH):].partition(" ")
    if not sep:
        raise NoteError(f"signature line {number} has no signature")
    check_key_name(name)
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"signature line {number}: bad base64") from e
    if len(raw) < 5:
        raise NoteError(f"signature line {number}: too short")
    return NoteSignature(name, raw[:4], raw[4:])


@dataclass(frozen=True)
class Ed25519Verifier:
    """A note verifier key: an Ed25519 public key under a name (type 0x01).

    >>> v = Ed25519Verifier.from_vkey(
    ...     "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    >>> v.name
    'example.com/foo'
    """

    name: str
    public: bytes  # 32 bytes

    sig_type = SIG_ED25519

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public) != 32:
            raise NoteError(f"{self.name}: an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.sig_type]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Ed25519Verifier:
        parts = vkey.split("+")
        if len(parts) != 3:
            raise NoteError(f"verifier key {vkey!r}: needs name+keyid+key")
        name, kid, material = parts
        try:
            raw = base64.b64decode(material, validate=True)
            kid_bytes = bytes.fromhex(kid)
        except (binascii.Error, ValueError) as e:
            raise NoteError(f"verifier key {name!r}: bad hex or base64") from e
        if not raw or raw[0] != cls.sig_type:
            raise NoteError(f"verifier key {name!r}: not signature type {cls.sig_type:#04x}")
        verifier = cls(name, raw[1:])
        if verifier.key_id != kid_bytes:
            raise NoteError(f"verifier key {name!r}: key id does not match the key")
        return verifier

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, text: str, sig: NoteSignature) -> bool:
        return ed25519_ok(self.public, sig.signature, text.encode())


def ed25519_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Ed25519NoteSigner:
    """Signs note text under a name (type 0x01)."""

    name: str
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, raw_public(self.private.public_key()))

    def sign(self, text: str) -> NoteSignature:
        if not text.endswith("\n"):
            raise NoteError("note text must end in a newline")
        return NoteSignature(self.name, self.verifier.key_id, self.private.sign(text.encode()))


def verify_note(note: Note, verifiers: list[Ed25519Verifier]) -> list[str]:
    """The names of the known keys whose signatures verify.

    Signatures by unknown keys are ignored; any signature by a known key that
    fails, or no verified signature at all, raises :class:`NoteError`.
    """
    verified = []
    for sig in note.signatures:
        for v in verifiers:
            if v.matches(sig):
                if not v.verify(note.text, sig):
                    raise NoteError(f"the signature by {sig.name} does not verify")
                verified.append(sig.name)
    if not verified:
        raise NoteError("the note is not signed by any known key")
    return verified
