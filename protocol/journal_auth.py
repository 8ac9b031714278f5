"""Authenticating what the sealer writes for recovery: journal lines and fragment marks.

After a power cut the device seals what ``pending/`` holds on the strength of
its journal and fragment marks (``device/recovery.py``). Whoever can write the
store while the device is off can write those too, so each record carries a
``mac``: HMAC-SHA256 over the record's canonical JSON (sorted keys, no spaces,
without the ``mac`` key), under a :class:`JournalKey` that only the device
holds. Recovery trusts a record only if its MAC verifies, and then only for
what it says (see docs/recovery.md, "What a mark proves").

The key is derived with HKDF-SHA256 from the device's signing key (its raw
32 private bytes), so it is as hard to get as that key: never written
anywhere, gone with the process, and on a device with OTP key custody only
available once the OTP secret has unwrapped the signing key (docs/hardware.md).

>>> from protocol.keys import SigningKey
>>> key = JournalKey.derive(SigningKey.generate())
>>> record = key.seal({"fragment": 0, "stored_size": 78})
>>> key.verify(record)
True
>>> key.verify({**record, "stored_size": 79})
False
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.keys import SigningKey

MAC_FIELD = "mac"
_INFO = b"custody journal mac/1"


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's MAC is computed over: canonical JSON without ``mac``."""
    body = {k: v for k, v in record.items() if k != MAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class JournalKey:
    """The device's HMAC-SHA256 key for its recovery records. Never printed, never stored."""

    secret: bytes = field(repr=False)

    @classmethod
    def derive(cls, signing_key: SigningKey) -> JournalKey:
        raw = signing_key.private.private_bytes(serialization.Encoding.Raw,
                                                serialization.PrivateFormat.Raw,
                                                serialization.NoEncryption())
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
        return cls(hkdf.derive(raw))

    def mac(self, record: dict[str, Any]) -> str:
        h = crypto_hmac.HMAC(self.secret, hashes.SHA256())
        h.update(canonical(record))
        return h.finalize().hex()

    def seal(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with its ``mac`` (any old one replaced)."""
        body = {k: v for k, v in record.items() if k != MAC_FIELD}
        return {**body, MAC_FIELD: self.mac(body)}

    def verify(self, record: Any) -> bool:
        """True only if ``record`` is an object whose ``mac`` this key made for it."""
        if not isinstance(record, dict) or not isinstance(record.get(MAC_FIELD), str):
            return False
        try:
            tag = bytes.fromhex(record[MAC_FIELD])
        except ValueError:
            return False
        h = crypto_hmac.HMAC(self.secret, hashes.SHA256())
        h.update(canonical(record))
        try:
            h.verify(tag)  # in constant time
        except InvalidSignature:
            return False
        return True


# --- the ledger's high-water mark (device/high_water.py keeps it on the medium) -------

MARK_FORMAT = "custody-high-water/1"
MARK_FILES = ("ledger.mark.a", "ledger.mark.b")


def high_water_record(key: JournalKey, device: str, seq: int, head: str, writes: int) -> bytes:
    """The bytes of a high-water mark file: entry ``seq`` (payload SHA-256 ``head``) is
    on the medium; ``writes`` orders the two files. Written by the device after every
    append, and by provisioning with the genesis it writes (it holds the device's key
    then), so that a new ledger has its mark from the first entry on."""
    record = key.seal({"format": MARK_FORMAT, "device": device, "seq": seq, "head": head,
                       "writes": writes})
    return json.dumps(record, sort_keys=True).encode() + b"\n"
