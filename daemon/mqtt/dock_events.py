"""What the dock's offload tells the unit: the MQTT side of the dock's events.

The offload (``custody dock``) reports through :class:`DockEvents`; this
module's :class:`MqttDockEvents` turns each report into a dock-signed
attestation of the newly archived range and the alerts it calls for:

- ``integrity_failure`` when the verdict is broken (with the error findings),
- ``unexplained_gap`` for gaps no voice note explains,
- ``overdue_handover`` for recordings handed in after the limit (Art. 10).

Other alerts (``unknown_device``, ``archive_nearly_full``, a failed upload)
come from the dock itself through :meth:`DockEvents.alert`.

    events = MqttDockEvents(publisher)
    events.offloaded("CAM-1", archive / "devices" / "CAM-1", report, offset_ns)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

from daemon.mqtt.publisher import DockPublisher
from protocol.attestation import Attestation, build_attestation
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.store_reader import LEDGER_NAME
from protocol.verify import BROKEN, ERROR, ContinuityReport

log = logging.getLogger("custody.mqtt.events")


class DockEvents(Protocol):
    """What the dock reports; the offload side depends only on this."""

    def offloaded(self, device_id: str, store: Path, report: ContinuityReport,
                  offset_ns: int | None) -> None:
        """``device_id``'s archive store at ``store`` was verified: ``report``."""

    def alert(self, kind: str, device: str | None, detail: dict[str, Any]) -> None:
        """Something the unit must see now (see protocol.alert.ALERT_KINDS)."""


def _range_of(store: Path, after: int | None) -> tuple[int, int, int | None]:
    """(first_seq, last_seq, time of entry first_seq) of what follows seq ``after``.

    The archive store's ledger is the dock's own verified copy, where entry n
    is line n; only if it is not (a broken ledger) is every line read.
    """
    first = (after + 1) if after is not None else 0
    lines = split_lines((store / LEDGER_NAME).read_bytes())

    def seq_time(i: int) -> tuple[int, int] | None:
        try:
            entry = parse_line(lines[i]).entry
        except (ProtocolError, IndexError):
            return None  # the report has said so already
        return entry.seq, entry.time.utc_ns

    tail, at = seq_time(len(lines) - 1), seq_time(first)
    if tail is not None and tail[0] == len(lines) - 1 and (at is None or at[0] == first):
        return first, tail[0], at[1] if at else None
    known = [st for st in map(seq_time, range(len(lines))) if st is not None]
    last = max((seq for seq, _ in known), default=-1)
    since = next((t for seq, t in known if seq == first), None)
    return first, last, since


class MqttDockEvents:
    """:class:`DockEvents` published over MQTT through a :class:`DockPublisher`."""

    def __init__(self, publisher: DockPublisher, clock: Any = time.time_ns):
        self.publisher, self.clock = publisher, clock

    def offloaded(self, device_id: str, store: Path, report: ContinuityReport,
                  offset_ns: int | None) -> Attestation | None:
        if report.device not in (None, device_id):
            self.alert("integrity_failure", device_id, {
                "problem": f"the archived ledger is of device {report.device!r}"})
            return None
        previous = self.publisher.outbox.last_attested(device_id)
        first, last, since = _range_of(Path(store), previous)
        if last < first - 1:
            # The archive copy is write-once: a ledger shorter than what was attested
            # means it was replaced or cut behind the dock's back.
            self.alert("integrity_failure", device_id, {
                "problem": f"the archived ledger ends at entry {last}, but entries up to "
                           f"{previous} were attested", "store": str(store)})
            return None
        if last < first:
            log.info("%s: nothing new since entry %s to attest", device_id, previous)
            return None
        now = self.clock()
        attestation = build_attestation(report, dock=self.publisher.dock, first_seq=first,
                                        last_seq=last, archived_utc_ns=now, attested_utc_ns=now,
                                        clock_offset_ns=offset_ns, since_utc_ns=since)
        self.publisher.attest(attestation)
        self._alerts_for(attestation)
        return attestation

    def _alerts_for(self, att: Attestation) -> None:
        base = {"attestation": att.id, "first_seq": att.first_seq, "last_seq": att.last_seq}
        if att.verdict == BROKEN:
            errors = [f.to_dict() for f in att.findings if f.severity == ERROR]
            self.alert("integrity_failure", att.device, {**base, "findings": errors[:20]})
        if att.unexplained_gaps:
            self.alert("unexplained_gap", att.device, {**base, "gaps": [
                {"recording": g.recording, "start_utc_ns": g.start_utc_ns,
                 "seconds": g.seconds, "reason": g.reason} for g in att.unexplained_gaps]})
        if att.overdue:
            self.alert("overdue_handover", att.device, {**base, "recordings": [
                {"recording": r.recording, "officer": r.officer, "handover_s": r.handover_s}
                for r in att.overdue]})

    def alert(self, kind: str, device: str | None, detail: dict[str, Any]) -> None:
        self.publisher.alert(kind, device, detail, utc_ns=self.clock())
