"""Offload receipts: a dock's signed word that it archived part of a ledger.

A receipt covers a device's entries ``first_seq``..``last_seq`` and names the
SHA-256 of entry ``last_seq`` (``head``), so it pins the whole chain up to
there, and lists the media files it archived. It is the only thing that lets a
device free space, and it is what makes a cut-off ledger tail detectable: a
receipt naming seq N proves the ledger had at least N + 1 entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

RECEIPT_PAYLOAD_TYPE = "application/vnd.custody.receipt+json"


@dataclass
class ArchivedMedia(Record):
    file: str
    sha256: str


@dataclass
class OffloadReceipt(Record):
    dock: str
    device: str
    first_seq: int
    last_seq: int
    head: str  # SHA-256 of entry last_seq's payload
    media: list[ArchivedMedia]
    archived_utc_ns: int
    kind: str = "offload_receipt"
    format: int = 1

    @property
    def media_files(self) -> set[str]:
        return {m.file for m in self.media}

    def validate(self, where: str) -> None:
        if self.kind != "offload_receipt":
            raise ProtocolError(f"{where}.kind: not an offload_receipt")
        if not 0 <= self.first_seq <= self.last_seq:
            raise ProtocolError(f"{where}: seq range {self.first_seq}..{self.last_seq} is empty")


def sign_receipt(receipt: OffloadReceipt, dock_signer: Signer) -> dict[str, Any]:
    """The receipt as a dock-signed DSSE envelope in JSON form."""
    payload = encode_json(receipt.to_dict())
    return sign_payload(payload, RECEIPT_PAYLOAD_TYPE, [dock_signer]).to_dict()


def open_receipt(envelope_json: Any, trust: TrustFile) -> OffloadReceipt:
    """Check a receipt's dock signature against the trust file and parse it.

    Raises :class:`ProtocolError` if it is malformed, not signed by a key of
    the dock it names, or the signature does not verify.
    """
    envelope: Envelope = envelope_from_dict(envelope_json, "receipt")
    if envelope.payload_type != RECEIPT_PAYLOAD_TYPE:
        raise ProtocolError(f"receipt: payloadType {envelope.payload_type!r}")
    receipt = OffloadReceipt.from_dict(decode_json(envelope.payload, "receipt"), "receipt")
    holder = trust.docks.get(receipt.dock)
    keys = [trust.signing_key(k) for k in (holder.keys if holder else [])]
    keys = [k for k in keys if k is not None]
    if not keys:
        raise ProtocolError(f"receipt: dock {receipt.dock!r} has no key in the trust file")
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        raise ProtocolError(f"receipt: no valid signature by dock {receipt.dock!r}") from e
    return receipt
