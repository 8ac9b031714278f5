"""What the dock's offload tells the unit: the MQTT side of the dock's events.

The dock's offload server reports through the two methods of
``daemon.events.DockEvents`` — ``on_offloaded(device, store, report)`` and
``alert(kind, detail)``; :class:`MqttDockEvents` implements them. Each
offload becomes a dock-signed attestation of the newly archived range, and
the alerts it calls for:

- ``integrity_failure`` when the verdict is broken (with the error findings),
- ``unexplained_gap`` for gaps no voice note explains,
- ``overdue_handover`` for recordings handed in after the limit (Art. 10).

Other alerts (``unknown_device``, ``archive_full``, a failed upload) come from
the dock itself through :meth:`MqttDockEvents.alert`.

``on_offloaded`` returns at once: a worker thread verifies the archive copy's
ledger (chain, signatures, continuity; each file's size from the medium and
SHA-256 as sealed — the dock re-read every archived file from the medium
before it signed the receipt), builds, signs and commits the attestation to
the outbox. If the dock dies in between, :meth:`MqttDockEvents.catch_up` at
its next start attests whatever the archive holds beyond the last attested
entry.

    events = MqttDockEvents(publisher, trust)
    events.catch_up(archive_root)                       # at start
    events.on_offloaded("CAM-1", archive / "devices" / "CAM-1", offload_report)
    events.offloaded("CAM-1", store, continuity_report, offset_ns)   # in the caller's thread
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from daemon.mqtt.publisher import DockPublisher
from protocol.attestation import Attestation, build_attestation
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR
from protocol.trust import TrustFile
from protocol.verify import BROKEN, ERROR, ContinuityReport, MediaDigest, verify

log = logging.getLogger("custody.mqtt.events")


class OffloadFacts(Protocol):
    """What the dock's offload report gives (``daemon.events.OffloadReport``)."""

    first_seq: int
    last_seq: int
    archived_utc_ns: int
    clock_offset_ns: int | None


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


def verify_archived(store: Path, trust: TrustFile) -> ContinuityReport:
    """The continuity report of an archive copy, without re-hashing its media.

    Sizes are read from the medium; SHA-256s are taken as sealed, because the
    dock re-read every archived file from the medium before it signed its
    receipt and the files are read-only since. The chain is checked in full.
    """
    ledger = (store / LEDGER_NAME).read_bytes()
    sealed: dict[str, str] = {}
    for line in split_lines(ledger):
        try:
            for ref in parse_line(line).entry.media():
                sealed[ref.file] = ref.sha256
        except ProtocolError:
            continue  # verify reports it
    media: dict[str, MediaDigest] = {}
    media_dir = store / MEDIA_DIR
    if media_dir.is_dir():
        for path in media_dir.iterdir():
            if path.is_file():
                media[path.name] = MediaDigest(path.stat().st_size, sealed.get(path.name, ""))
    return verify(ledger, media, trust)


class MqttDockEvents:
    """The dock's events published over MQTT through a :class:`DockPublisher`."""

    def __init__(self, publisher: DockPublisher, trust: TrustFile | None = None,
                 clock: Any = time.time_ns):
        self.publisher, self.trust, self.clock = publisher, trust, clock
        self._jobs: queue.SimpleQueue[tuple[str, Path, OffloadFacts] | None] = (
            queue.SimpleQueue())
        self._worker: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0

    # --- daemon.events.DockEvents -------------------------------------------------

    def on_offloaded(self, device: str, store: Path, report: OffloadFacts) -> None:
        """Queue the attestation of the range ``report`` archived; returns at once."""
        if self.trust is None:
            raise RuntimeError("MqttDockEvents needs the trust file to attest offloads")
        with self._idle:
            self._busy += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="mqtt-attest",
                                                daemon=True)
                self._worker.start()
        self._jobs.put((device, Path(store), report))

    def alert(self, kind: str, detail: dict[str, Any]) -> None:
        self._raise(kind, detail.get("device"), detail)

    def _raise(self, kind: str, device: str | None, detail: dict[str, Any]) -> None:
        self.publisher.alert(kind, device, detail, utc_ns=self.clock())

    # --- attesting ----------------------------------------------------------------

    def offloaded(self, device_id: str, store: Path, report: ContinuityReport,
                  offset_ns: int | None, archived_utc_ns: int | None = None,
                  ) -> Attestation | None:
        """Attest what ``store`` holds beyond the device's last attestation; the alerts."""
        if report.device not in (None, device_id):
            self._raise("integrity_failure", device_id, {
                "device": device_id,
                "problem": f"the archived ledger is of device {report.device!r}"})
            return None
        previous = self.publisher.outbox.last_attested(device_id)
        first, last, since = _range_of(Path(store), previous)
        if last < first - 1:
            # The archive copy is write-once: a ledger shorter than what was attested
            # means it was replaced or cut behind the dock's back.
            self._raise("integrity_failure", device_id, {
                "device": device_id, "store": str(store),
                "problem": f"the archived ledger ends at entry {last}, but entries up to "
                           f"{previous} were attested"})
            return None
        if last < first:
            log.info("%s: nothing new since entry %s to attest", device_id, previous)
            return None
        now = self.clock()
        attestation = build_attestation(
            report, dock=self.publisher.dock, first_seq=first, last_seq=last,
            archived_utc_ns=now if archived_utc_ns is None else archived_utc_ns,
            attested_utc_ns=now, clock_offset_ns=offset_ns, since_utc_ns=since)
        self.publisher.attest(attestation)
        self._alerts_for(attestation)
        return attestation

    def attest_store(self, device: str, store: Path, offset_ns: int | None = None,
                     archived_utc_ns: int | None = None) -> Attestation | None:
        if self.trust is None:
            raise RuntimeError("MqttDockEvents needs the trust file to verify a store")
        return self.offloaded(device, store, verify_archived(Path(store), self.trust),
                              offset_ns, archived_utc_ns)

    def catch_up(self, archive_root: Path) -> list[Attestation]:
        """Attest every archived device whose ledger goes beyond its last attestation."""
        done = []
        devices = Path(archive_root) / "devices"
        for store in sorted(devices.iterdir()) if devices.is_dir() else []:
            if (store / LEDGER_NAME).is_file():
                att = self.attest_store(store.name, store)
                if att is not None:
                    done.append(att)
        return done

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued offload is attested (in the outbox)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            device, store, facts = job
            try:
                self.attest_store(device, store, facts.clock_offset_ns, facts.archived_utc_ns)
            except Exception:  # noqa: BLE001 — logged; catch_up attests it at the next start
                log.exception("attesting the offload of %s failed", device)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _alerts_for(self, att: Attestation) -> None:
        base = {"device": att.device, "attestation": att.id, "first_seq": att.first_seq,
                "last_seq": att.last_seq}
        if att.verdict == BROKEN:
            errors = [f.to_dict() for f in att.findings if f.severity == ERROR]
            self._raise("integrity_failure", att.device, {**base, "findings": errors[:20]})
        if att.unexplained_gaps:
            self._raise("unexplained_gap", att.device, {**base, "gaps": [
                {"recording": g.recording, "start_utc_ns": g.start_utc_ns,
                 "seconds": g.seconds, "reason": g.reason} for g in att.unexplained_gaps]})
        if att.overdue:
            self._raise("overdue_handover", att.device, {**base, "recordings": [
                {"recording": r.recording, "officer": r.officer, "handover_s": r.handover_s}
                for r in att.overdue]})
