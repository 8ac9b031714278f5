"""What the dock tells the rest of the unit: offloads done, and alerts.

The dock's offload server calls a :class:`DockEvents` after each archived
offload and whenever something must be seen by people (an integrity failure,
an unknown device, a full archive). The default, :class:`LoggingEvents`,
writes them to the dock's log; the MQTT publisher (attestations and alerts,
with its outbox) is another implementation of the same two methods.

    >>> events = LoggingEvents()
    >>> events.alert("unknown_device", {"device": "DEV-9", "reason": "not in the trust file"})

Both methods are called from the dock's threads (event loop or worker) and must return
quickly (queue, do not publish inline); an exception they raise is logged
and never stops an offload.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("custody.dock.events")

# Alert kinds the dock raises (the MQTT topic's last level: custody/<unit>/alert/<kind>).
INTEGRITY_FAILURE = "integrity_failure"  # detail.reason: bad_signature, media_hash, too_long, …
UNKNOWN_DEVICE = "unknown_device"  # reason: not_enrolled, revoked, impersonation, foreign_ca, …
ARCHIVE_FULL = "archive_full"
# the device would not cosign the checkpoint the dock proposed (docs/archive.md)
CHECKPOINT_REFUSED = "checkpoint_refused"


@dataclass
class OffloadReport:
    """One offload the dock archived and signed a receipt for."""

    dock: str
    device: str
    first_seq: int
    last_seq: int
    head: str  # SHA-256 of entry last_seq's payload
    media: list[str]  # files archived
    media_bytes: int
    seconds: float  # first byte received (or range staged) to receipt signed
    archived_utc_ns: int  # when the last byte was archived (the receipt's time)
    receipt: dict[str, Any]  # the dock-signed receipt envelope
    clock_offset_ns: int | None = None  # the device's clock offset measured at this docking
    findings: list[dict[str, Any]] = field(default_factory=list)  # warnings of the range check


class DockEvents(Protocol):
    def on_offloaded(self, device: str, store: Path, report: OffloadReport) -> None:
        """A device's new range is archived under ``store`` (``archive/devices/<id>``)."""

    def alert(self, kind: str, detail: dict[str, Any]) -> None:
        """Something people must see; ``detail`` has at least ``device`` (or None)."""


class LoggingEvents:
    """The default events: lines in the dock's log."""

    def on_offloaded(self, device: str, store: Path, report: OffloadReport) -> None:
        log.info("offloaded %s: entries %d..%d, %d files, %.1f MiB in %.2f s -> %s", device,
                 report.first_seq, report.last_seq, len(report.media),
                 report.media_bytes / 2**20, report.seconds, store)

    def alert(self, kind: str, detail: dict[str, Any]) -> None:
        log.warning("ALERT %s %s", kind, json.dumps(detail, sort_keys=True, default=str))


class GuardedEvents:
    """Passes events on; an exception in a consumer is logged, never raised into the dock."""

    def __init__(self, inner: DockEvents):
        self.inner = inner

    def on_offloaded(self, device: str, store: Path, report: OffloadReport) -> None:
        try:
            self.inner.on_offloaded(device, store, report)
        except Exception:
            log.exception("on_offloaded failed for %s", device)

    def alert(self, kind: str, detail: dict[str, Any]) -> None:
        try:
            self.inner.alert(kind, detail)
        except Exception:
            log.exception("alert %s failed: %s", kind, detail)


class RecordingEvents(LoggingEvents):
    """Logs, and keeps every event in lists (for a caller that waits on them)."""

    def __init__(self) -> None:
        self.offloads: list[OffloadReport] = []
        self.alerts: list[tuple[str, dict[str, Any]]] = []

    def on_offloaded(self, device: str, store: Path, report: OffloadReport) -> None:
        super().on_offloaded(device, store, report)
        self.offloads.append(report)

    def alert(self, kind: str, detail: dict[str, Any]) -> None:
        super().alert(kind, detail)
        self.alerts.append((kind, detail))
