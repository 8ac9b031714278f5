"""The device's private keys on the SD card, wrapped by the board's OTP secret.

A key file on the card is useless without the board it was made for: the
signing key is stored as a *wrapped key*, AES-256-GCM under a key derived with
HKDF-SHA256 from the board's 256-bit OTP secret (``hardware/otp.py``), which
never leaves the board. Copy the card into another machine, or another
board, and what you have does not decrypt; the recorder refuses to start and
signs nothing (:class:`KeyCustodyError`).

A wrapped key file is JSON::

    {"format": "custody-wrapped-key/1", "device": "DEV-0001", "purpose": "signing",
     "kdf": "hkdf-sha256", "aead": "aes-256-gcm", "nonce": "<hex>", "ciphertext": "<hex>"}

The wrapping key is HKDF-SHA256(OTP secret, salt none, info
``custody key wrap/1`` || NUL || device || NUL || purpose), so each purpose
(``signing``, ``tls``) gets a wrapping key of its own; the two private keys
are different keys too (the TLS key only connects as the device, it signs no
evidence; ADR 0046). The associated data is
the canonical JSON of every field but ``nonce`` and ``ciphertext``: a file
cannot be relabelled for another device or purpose. The plaintext is the
key's PKCS#8 PEM. What this protects and what not: docs/hardware.md, "Key custody".

>>> import os
>>> from protocol.keys import SigningKey
>>> secret, key = os.urandom(32), SigningKey.generate()
>>> blob = wrap_signing_key(key, secret, "DEV-1")
>>> unwrap_signing_key(blob, secret, "DEV-1").keyid == key.keyid
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardware.host.durable import write_new
from hardware.otp import OtpError, OtpSecret
from protocol.errors import ProtocolError
from protocol.keys import SigningKey

WRAPPED_FORMAT = "custody-wrapped-key/1"
_INFO = b"custody key wrap/1"


class KeyCustodyError(Exception):
    """The device's key cannot be had here; the message names the file and why."""


def _wrapping_key(otp_secret: bytes, device: str, purpose: str) -> bytes:
    info = b"\0".join((_INFO, device.encode(), purpose.encode()))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(otp_secret)


def _associated(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def wrap_key(pem: bytes, otp_secret: bytes, device: str, purpose: str) -> bytes:
    """A wrapped key file's bytes for a private key given as PEM."""
    fields = {"format": WRAPPED_FORMAT, "device": device, "purpose": purpose,
              "kdf": "hkdf-sha256", "aead": "aes-256-gcm"}
    nonce = os.urandom(12)
    sealed = AESGCM(_wrapping_key(otp_secret, device, purpose)).encrypt(
        nonce, pem, _associated(fields))
    return json.dumps({**fields, "nonce": nonce.hex(), "ciphertext": sealed.hex()},
                      indent=1, sort_keys=True).encode() + b"\n"


def unwrap_key(data: bytes, otp_secret: bytes, device: str, purpose: str,
               where: str = "wrapped key") -> bytes:
    """The PEM inside a wrapped key file; :class:`KeyCustodyError` if it is not ours."""
    if data.lstrip().startswith(b"-----BEGIN"):
        raise KeyCustodyError(f"{where}: an unwrapped private key; the recorder uses only a "
                              "key wrapped by its board's OTP secret (custody provision device "
                              "--wrapped-key)")
    try:
        record = json.loads(data)
        fields = {k: record[k] for k in ("format", "device", "purpose", "kdf", "aead")}
        nonce, sealed = bytes.fromhex(record["nonce"]), bytes.fromhex(record["ciphertext"])
    except (ValueError, KeyError, TypeError) as e:
        raise KeyCustodyError(f"{where}: not a wrapped key file ({WRAPPED_FORMAT})") from e
    if fields["format"] != WRAPPED_FORMAT or (fields["kdf"], fields["aead"]) != (
            "hkdf-sha256", "aes-256-gcm"):
        raise KeyCustodyError(f"{where}: unsupported wrapping {fields}")
    if fields["device"] != device or fields["purpose"] != purpose:
        raise KeyCustodyError(f"{where}: the {fields['purpose']} key of device "
                              f"{fields['device']!r}, not the {purpose} key of {device!r}")
    try:
        return AESGCM(_wrapping_key(otp_secret, device, purpose)).decrypt(
            nonce, sealed, _associated(fields))
    except InvalidTag:
        raise KeyCustodyError(f"{where}: does not unwrap with this board's OTP secret: it was "
                              "wrapped on another board (a copied card?) or altered; refusing "
                              "to start, nothing is signed") from None


def wrap_signing_key(key: SigningKey, otp_secret: bytes, device: str) -> bytes:
    return wrap_key(key.to_pem(), otp_secret, device, "signing")


def unwrap_signing_key(data: bytes, otp_secret: bytes, device: str,
                       where: str = "wrapped key") -> SigningKey:
    pem = unwrap_key(data, otp_secret, device, "signing", where)
    try:
        return SigningKey.from_pem(pem)
    except ProtocolError as e:
        raise KeyCustodyError(f"{where}: {e}") from e


PURPOSES = ("signing", "tls")


def wrap_tls_key(pem: bytes, otp_secret: bytes, device: str) -> bytes:
    """A wrapped key file for the device's TLS client key (a PEM private key)."""
    _tls_private_key(pem, "TLS key")
    return wrap_key(pem, otp_secret, device, "tls")


def _tls_private_key(pem: bytes, where: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KeyCustodyError(f"{where}: not an unencrypted PEM private key ({e})") from e


def _secret_and_file(key_file: Path, otp: OtpSecret) -> tuple[bytes, bytes]:
    try:
        secret = otp.read()
    except OtpError as e:
        raise KeyCustodyError(f"{key_file}: cannot read the OTP secret: {e}") from e
    if secret is None:
        raise KeyCustodyError(f"{key_file}: {otp} holds no secret; this board was never "
                              "provisioned (custody provision otp)")
    try:
        data = Path(key_file).read_bytes()
    except OSError as e:
        raise KeyCustodyError(f"{key_file}: {e.strerror}") from e
    return secret, data


def load_signing_key(key_file: Path, otp: OtpSecret, device: str) -> SigningKey:
    """The device's signing key, unwrapped with the board's OTP secret."""
    secret, data = _secret_and_file(key_file, otp)
    return unwrap_signing_key(data, secret, device, str(key_file))


def load_tls_key(key_file: Path, otp: OtpSecret, device: str) -> bytes:
    """The device's TLS client key as PEM, unwrapped in memory with the board's OTP
    secret (hand it to :func:`device.tls_identity.load_client_identity`, never to a file)."""
    secret, data = _secret_and_file(key_file, otp)
    pem = unwrap_key(data, secret, device, "tls", str(key_file))
    _tls_private_key(pem, str(key_file))
    return pem


def public_key_bytes(pem: bytes) -> bytes:
    """The raw public key of a PEM private key: to tell two keys apart."""
    return _tls_private_key(pem, "key").public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_wrapped_key(path: Path, data: bytes) -> None:
    """Write a wrapped key file 0600; never over an existing one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new(path, data, mode=0o600)
    except FileExistsError as e:
        raise KeyCustodyError(f"{path}: a key is already there; refusing to replace it") from e
