"""Keys: Ed25519 signing keys and the archive's X25519 encryption key.

A key id is the lowercase hex SHA-256 of the raw 32-byte public key, so an
expert can recompute it with ``openssl`` and ``sha256sum`` alone (docs/format.md).
Private keys are serialised as unencrypted PKCS#8 PEM; whoever writes them to a
file makes it 0600 (see ``daemon/provision.py``). Nothing here logs key bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from protocol.errors import ProtocolError


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_raw: bytes) -> str:
    """Key id / fingerprint of a raw public key: hex SHA-256 of its 32 bytes."""
    return hashlib.sha256(public_raw).hexdigest()


def verification_key(public_hex: str) -> SSlibKey:
    """A DSSE verification key for an Ed25519 public key given in hex."""
    try:
        raw = bytes.fromhex(public_hex)
    except ValueError as e:
        raise ProtocolError(f"public key is not hex: {public_hex!r}") from e
    if len(raw) != 32:
        raise ProtocolError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return SSlibKey(fingerprint(raw), "ed25519", "ed25519", {"public": public_hex})


class _PrivateKey:
    """What both private keys share: made fresh, kept as PKCS#8 PEM, a raw public half.

    A subclass is a frozen dataclass with one field, ``private``, and names
    its algorithm; the PEM it loads must be of that algorithm.
    """

    _algorithm: ClassVar[type[Ed25519PrivateKey] | type[X25519PrivateKey]]
    _algorithm_name: ClassVar[str]
    private: Ed25519PrivateKey | X25519PrivateKey

    @classmethod
    def generate(cls) -> Self:
        return cls(cls._algorithm.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> Self:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise ProtocolError("not a PEM private key") from e
        if not isinstance(key, cls._algorithm):
            raise ProtocolError(f"not an {cls._algorithm_name} private key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    @property
    def public_raw(self) -> bytes:
        return raw_public(self.private.public_key())


@dataclass(frozen=True)
class SigningKey(_PrivateKey):
    """An Ed25519 private key with its key id; signs DSSE envelopes.

    >>> key = SigningKey.generate()
    >>> len(key.keyid)
    64
    """

    _algorithm = Ed25519PrivateKey
    _algorithm_name = "Ed25519"
    private: Ed25519PrivateKey

    @property
    def public_hex(self) -> str:
        return self.public_raw.hex()

    @property
    def keyid(self) -> str:
        return fingerprint(self.public_raw)

    def signer(self) -> CryptoSigner:
        return CryptoSigner(self.private, verification_key(self.public_hex))

    def __repr__(self) -> str:  # never show key material
        return f"SigningKey(keyid={self.keyid[:16]}…)"


@dataclass(frozen=True)
class ArchiveSecretKey(_PrivateKey):
    """The archive's X25519 private key: the only key that decrypts segments."""

    _algorithm = X25519PrivateKey
    _algorithm_name = "X25519"
    private: X25519PrivateKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_raw)

    def __repr__(self) -> str:
        return f"ArchiveSecretKey(fingerprint={self.fingerprint[:16]}…)"
