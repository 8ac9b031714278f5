"""Tombstones: the archive's signed record that a recording's media were deleted.

A deletion at the end of retention (Art. 11) removes media files, never ledger
entries: the entries stay as the evidence that the recording existed. The
tombstone, a DSSE envelope signed by an archive signing key, names the files
(with the SHA-256 the device sealed), who deleted them and why, so that
verification of the archive tells a deleted file from a lost one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.receipt import ArchivedMedia
from protocol.trust import TrustFile

TOMBSTONE_PAYLOAD_TYPE = "application/vnd.custody.tombstone+json"


@dataclass
class Tombstone(Record):
    unit: str
    device: str
    recording: int  # seq of its record_start
    media: list[ArchivedMedia]  # the stored files deleted, with their sealed SHA-256
    deleted_by: str
    reason: str
    deleted_utc_ns: int
    retention_until_utc_ns: int  # the end of retention the deletion relied on
    category: str
    kind: str = "tombstone"
    format: int = 1

    def validate(self, where: str) -> None:
        if self.kind != "tombstone":
            raise ProtocolError(f"{where}.kind: not a tombstone")
        if not self.deleted_by or not self.reason:
            raise ProtocolError(f"{where}: a deletion must name who and why")


def sign_tombstone(tombstone: Tombstone, archive_signer: Signer) -> dict[str, Any]:
    return sign_payload(encode_json(tombstone.to_dict()), TOMBSTONE_PAYLOAD_TYPE,
                        [archive_signer]).to_dict()


def open_tombstone(envelope_json: Any, trust: TrustFile) -> Tombstone:
    """Check a tombstone's archive signature and parse it; raises :class:`ProtocolError`."""
    envelope = envelope_from_dict(envelope_json, "tombstone")
    if envelope.payload_type != TOMBSTONE_PAYLOAD_TYPE:
        raise ProtocolError(f"tombstone: payloadType {envelope.payload_type!r}")
    tombstone = Tombstone.from_dict(decode_json(envelope.payload, "tombstone"), "tombstone")
    keys = [k for k in (trust.signing_key(i) for i in trust.archive.keys) if k is not None]
    if not keys:
        raise ProtocolError("tombstone: the trust file names no archive signing key")
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        raise ProtocolError("tombstone: no valid signature by an archive key") from e
    if tombstone.unit != trust.unit:
        raise ProtocolError(f"tombstone: for unit {tombstone.unit!r}, not {trust.unit!r}")
    return tombstone
