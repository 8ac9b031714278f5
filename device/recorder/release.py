"""Freeing media against a dock's verified receipt: the only way evidence leaves the card.

>>> # release = MediaRelease(config, appender, stats, trust)
>>> # release.accept_receipt(envelope)  # -> the names of the files freed
"""

from __future__ import annotations

import logging
from typing import Any

from device.config import RecorderConfig
from device.receipts import ReceiptRefused, check_receipt
from device.recorder.appender import EntryAppender
from device.recorder.stats import RecorderStats
from hardware.host.durable import fsync_dir
from protocol.entries import OffloadReceiptEntry
from protocol.trust import TrustFile

log = logging.getLogger("device.recorder")


class MediaRelease:
    """Checks a dock's receipt, records it in the ledger, then frees what it covers."""

    def __init__(self, config: RecorderConfig, appender: EntryAppender, stats: RecorderStats,
                 trust: TrustFile | None):
        self.config, self.appender, self.stats, self.trust = config, appender, stats, trust

    def accept_receipt(self, envelope: Any) -> list[str]:
        """Free the media a dock's verified receipt covers. Raises ReceiptRefused."""
        if self.trust is None:
            raise ReceiptRefused("no trust file: cannot check a dock's signature")
        check = check_receipt(envelope, self.trust, self.config.device_id, self.appender.known,
                              self.appender.store)
        # The receipt is in the ledger before any byte goes: a cut leaves it said.
        self.appender.append(OffloadReceiptEntry(receipt=envelope))
        freed = []
        for path in check.files:
            path.unlink()
            freed.append(path.name)
        if freed:
            fsync_dir(check.files[0].parent)
        self.stats.freed_files += len(freed)
        log.info("receipt from %s: freed %d files", check.receipt.dock, len(freed))
        return freed
