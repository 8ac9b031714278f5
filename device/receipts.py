"""Freeing space: only against a dock-signed receipt the device has checked.

A receipt frees a media file only if all of this holds: the dock's signature
verifies against the trust file, the receipt is for this device, its head is
this ledger's own entry ``last_seq`` (so the dock archived *this* chain), the
file is sealed by one of this ledger's entries with the same SHA-256 the
receipt names, and the bytes on disk still hash to it. Anything else frees
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.ledger_state import LedgerState
from protocol.errors import ProtocolError
from protocol.receipt import OffloadReceipt, open_receipt
from protocol.store_reader import MEDIA_DIR, sha256_file
from protocol.trust import TrustFile


class ReceiptRefused(Exception):
    """The receipt does not let the device free anything; the message says why."""


@dataclass
class ReceiptCheck:
    receipt: OffloadReceipt
    files: list[Path]  # what it lets the device free


def check_receipt(envelope: Any, trust: TrustFile, device: str, state: LedgerState,
                  store: Path) -> ReceiptCheck:
    try:
        receipt = open_receipt(envelope, trust)
    except ProtocolError as e:
        raise ReceiptRefused(str(e)) from e
    if receipt.device != device:
        raise ReceiptRefused(f"receipt is for device {receipt.device!r}, not {device!r}")
    if state.digests.get(receipt.last_seq) != receipt.head:
        raise ReceiptRefused(f"receipt's head is not this ledger's entry {receipt.last_seq}")
    files = []
    for item in receipt.media:
        path = store / MEDIA_DIR / item.file
        if state.sealed.get(item.file) != item.sha256 or not path.is_file():
            continue
        if sha256_file(path).sha256 == item.sha256:
            files.append(path)
    return ReceiptCheck(receipt, files)
