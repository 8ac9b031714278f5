"""The dock's side of the cosigned checkpoint at each docking (ADR 0040).

After a verified commit the dock indexes the device's archived ledger
(:meth:`daemon.archive.archive.Archive.ingest`, so the custodian's search sees
it) and signs a new checkpoint of the device's Merkle log with the dock key.
The device then fetches the proposal (that checkpoint and the consistency
proof from the size of the checkpoint it holds), checks it against what it
holds and its own ledger, and either sends back its cosignature, which is
kept, or reports a refusal, which raises a ``checkpoint_refused`` alert.
Nothing is freed or kept back because of a refusal: receipts are separate.

Every step is in the archive's audit log (action ``checkpoint``). Methods
block (hashing the ledger, SQLite, fsync): the server calls them from worker
threads; one lock serialises them, they take milliseconds.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from daemon.archive.archive import Archive
from daemon.archive.tlog import LogError
from daemon.events import CHECKPOINT_REFUSED, INTEGRITY_FAILURE, DockEvents
from protocol.archive_log import open_device_checkpoint
from protocol.checkpoint import CheckpointError
from protocol.keys import SigningKey
from protocol.note import Note, NoteError

log = logging.getLogger("custody.dock.checkpoints")


class CheckpointConflict(Exception):
    """The dock cannot make or keep a checkpoint; the message says why."""


class DockCheckpoints:
    """The checkpoints of every device's log in one dock's archive.

    >>> # checkpoints = DockCheckpoints(archive_root, "DOCK-01", dock_key, events)
    >>> # checkpoints.after_commit("DEV-0001")              # index, sign
    >>> # note, proof = checkpoints.proposal("DEV-0001", 12)
    >>> # checkpoints.accept("DEV-0001", cosigned_note)
    """

    def __init__(self, root: Path, dock: str, key: SigningKey, events: DockEvents):
        self.archive = Archive.open(root)
        self.dock, self.key, self.events = dock, key, events
        self.who = f"dock:{dock}"
        self._lock = threading.Lock()
        # device -> archived entries at which signing was refused (alerted once, not per poll)
        self._unsigned: dict[str, int] = {}

    def close(self) -> None:
        self.archive.close()

    def after_commit(self, device: str) -> int | None:
        """Index the device's archived ledger and sign a checkpoint of its log; the
        checkpoint's size, or None if the dock refuses to sign (alert raised)."""
        with self._lock:
            return self._sign(device)

    def _sign(self, device: str) -> int | None:
        try:
            self.archive.ingest(device, self.who, self.key)
        except LogError as e:
            self._unsigned[device] = self.archive.log(device).tree().size
            # The archived copy no longer matches a checkpoint signed before: someone
            # changed it. The receipt already given stands; nothing is signed over it.
            self.events.alert(INTEGRITY_FAILURE, {
                "device": device, "dock": self.dock, "reason": "archived_ledger_rewritten",
                "message": str(e)})
            log.error("%s", e)
            return None
        latest = self.archive.log(device).latest()
        return _size(latest) if latest else None

    def status(self, device: str, archived_entries: int) -> dict[str, Any]:
        """The newest checkpoint's size and whether the device has cosigned it; one is
        signed first if the archive holds more entries than it covers (a dock that
        stopped between a commit and its checkpoint)."""
        with self._lock:
            latest = self.archive.log(device).latest()
            behind = archived_entries and (latest is None or _size(latest) < archived_entries)
            if behind and self._unsigned.get(device) != archived_entries:
                self._sign(device)
                latest = self.archive.log(device).latest()
            if latest is None:
                return {"checkpoint_size": None, "checkpoint_cosigned": False}
            try:
                opened = open_device_checkpoint(latest, self.archive.trust, device)
            except CheckpointError:
                return {"checkpoint_size": _size(latest), "checkpoint_cosigned": False}
            return {"checkpoint_size": opened.checkpoint.size,
                    "checkpoint_cosigned": bool(opened.cosigned_by)}

    def proposal(self, device: str, device_size: int | None) -> tuple[bytes, list[bytes]]:
        """The newest checkpoint (signed now if the archive has grown past it, e.g. a
        dock restarted between a commit and its checkpoint) and the consistency
        proof from ``device_size``."""
        with self._lock:
            dlog = self.archive.log(device)
            latest = dlog.latest()
            if latest is None or _size(latest) < dlog.tree().size:
                self._sign(device)
            try:
                return dlog.proposal(device_size)
            except LogError as e:
                raise CheckpointConflict(str(e)) from e

    def accept(self, device: str, note: bytes, size: int) -> None:
        """Keep the device's cosignature on the checkpoint of ``size`` entries."""
        with self._lock:
            try:
                if _size(note) != size:
                    raise CheckpointConflict(f"the note is a checkpoint of {_size(note)} "
                                             f"entries, not {size}")
                self.archive.log(device).accept_cosigned(note)
            except (ValueError, IndexError, NoteError) as e:
                raise CheckpointConflict(f"not a checkpoint note: {e}") from e
            except LogError as e:
                raise CheckpointConflict(str(e)) from e
            self.archive.audit.append(f"device:{device}", "checkpoint", device, size=size,
                                      cosigned=True)
            log.info("%s: checkpoint of %d entries cosigned by the device", device, size)

    def refused(self, device: str, note: bytes | None, reason: str) -> None:
        """The device would not cosign ``note``: an alert, and a line in the audit log."""
        size = None
        if note:
            try:
                size = _size(note)
            except (ValueError, IndexError, NoteError):
                size = None
        detail = {"device": device, "dock": self.dock, "size": size, "message": reason[:500]}
        self.events.alert(CHECKPOINT_REFUSED, detail)
        log.error("%s refused to cosign checkpoint of %s entries: %s", device, size, reason)
        with self._lock:
            self.archive.audit.append(f"device:{device}", "checkpoint", device, size=size,
                                      refused=reason[:500])


def _size(note: bytes) -> int:
    lines = Note.from_bytes(note).text.split("\n")
    return int(lines[1])
