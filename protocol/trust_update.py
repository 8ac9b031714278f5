"""Trust-file updates for a device: the new trust file, signed by the unit's archive key.

A device's trust file decides which docks may sign the receipts that free its
space, so replacing it is as strong as forging a receipt. A technician's
console therefore accepts a new trust file only inside a DSSE envelope signed
by an archive signing key of the trust file the device already holds, and only
if the new file keeps what a device cannot change under itself: the unit, the
archive's encryption key, and this device's own signing key::

    update = sign_trust_update(new_trust, archive_signer)       # the custodian, offline
    accepted = open_trust_update(update, current_trust, "DEV-1", device_keyid)
    accepted.fingerprint                                         # what the technician confirms

The fingerprint is the SHA-256 of the new trust file's bytes, the same number
``custody provision`` prints and a court checks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.envelope import envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

TRUST_UPDATE_PAYLOAD_TYPE = "application/vnd.custody.trust+json"


@dataclass(frozen=True)
class TrustUpdate:
    """An accepted update: the new trust file, its exact bytes and their SHA-256."""

    trust: TrustFile
    data: bytes
    fingerprint: str
    added_docks: tuple[str, ...]
    removed_docks: tuple[str, ...]


def sign_trust_update(trust_bytes: bytes, signer: Signer) -> dict[str, Any]:
    """The trust file's exact bytes in a DSSE envelope signed by an archive key."""
    TrustFile.from_bytes(trust_bytes)  # never sign what a device would refuse to read
    return sign_payload(trust_bytes, TRUST_UPDATE_PAYLOAD_TYPE, [signer]).to_dict()


def open_trust_update(envelope_json: Any, current: TrustFile, device: str,
                      device_keyid: str) -> TrustUpdate:
    """Check an update against the trust file the device holds; raises ProtocolError."""
    envelope = envelope_from_dict(envelope_json, "trust update")
    if envelope.payload_type != TRUST_UPDATE_PAYLOAD_TYPE:
        raise ProtocolError(f"trust update: payloadType {envelope.payload_type!r} is not "
                            f"{TRUST_UPDATE_PAYLOAD_TYPE}")
    keys = [k for k in (current.signing_key(keyid) for keyid in current.archive.keys) if k]
    if not keys:
        raise ProtocolError("trust update: the current trust file names no archive signing key")
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        raise ProtocolError("trust update: not signed by an archive key of the current "
                            "trust file") from e
    new = TrustFile.from_bytes(envelope.payload)
    if new.unit != current.unit:
        raise ProtocolError(f"trust update: for unit {new.unit!r}, not {current.unit!r}")
    if new.archive_encryption_key != current.archive_encryption_key:
        raise ProtocolError("trust update: changes the archive's encryption key "
                            "(a device is re-provisioned for that, not updated)")
    if device_keyid not in new.device_keys(device):
        raise ProtocolError(f"trust update: does not list device {device!r} with its key "
                            f"{device_keyid[:16]}")
    return TrustUpdate(
        trust=new, data=envelope.payload,
        fingerprint=hashlib.sha256(envelope.payload).hexdigest(),
        added_docks=tuple(sorted(set(new.docks) - set(current.docks))),
        removed_docks=tuple(sorted(set(current.docks) - set(new.docks))))
