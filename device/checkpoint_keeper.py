"""The checkpoint a device keeps of its own log in the archive, and its cosignature.

At each docking the dock proposes a new checkpoint of the device's Merkle log
(docs/archive.md) with a consistency proof from the one the device holds. The
:class:`CheckpointKeeper` checks it (the dock's signature, the proof, and that
its root is the root of the device's *own* first ``size`` ledger entries),
cosigns it with the device key, and keeps it as ``checkpoint.note`` in the
store before the cosignature leaves the device, so a dock can never hold a
cosignature the device does not also hold. The file is replaced atomically
(temporary name, fsync, rename, folder fsync): until the new one is durable
the previous one is what the device holds.

Beside it the keeper keeps ``checkpoint.frontier``: the frontier of that
checkpoint's tree (protocol/merkle_frontier.py), so the next docking hashes
only the entries after it instead of the whole ledger (ADR 0069). It is derived
data and the card may have been edited: it is used only if it folds to the
held checkpoint's root and that checkpoint bears this device's cosignature;
otherwise the tree is recomputed from the ledger and the frontier rewritten.

A checkpoint it will not cosign raises
:class:`protocol.archive_log.CheckpointRefused`; the offloader reports it to
the dock (an alert). The held checkpoint is left as it was.

    >>> # keeper = CheckpointKeeper(store, "DEV-0001", device_key, trust)
    >>> # keeper.held_size()                      # None before the first docking
    >>> # cosigned = keeper.cosign(note, proof, ledger_lines, now_s)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from hardware.host.durable import remove_temporaries, replace_atomically
from protocol.archive_log import CheckpointRefused, LineLeaves, cosign_if_consistent
from protocol.keys import SigningKey
from protocol.merkle_frontier import (
    Frontier,
    FrontierError,
    frontier_from_bytes,
    frontier_to_bytes,
)
from protocol.note import Note, NoteError
from protocol.store_reader import StoreError, read_file_if_present
from protocol.trust import TrustFile

log = logging.getLogger("custody.checkpoint")

CHECKPOINT_NAME = "checkpoint.note"
FRONTIER_NAME = "checkpoint.frontier"
MAX_KEPT_BYTES = 1 << 16  # either file is a few hundred bytes to a few KiB


class CheckpointKeeper:
    """The device's cosigned checkpoint of its log, in ``store/checkpoint.note``."""

    def __init__(self, store: Path, device: str, key: SigningKey, trust: TrustFile):
        self.path = Path(store) / CHECKPOINT_NAME
        self.frontier_path = Path(store) / FRONTIER_NAME
        self.device, self.key, self.trust = device, key, trust
        # Its own writes a cut interrupted: the checkpoint held is the one before.
        remove_temporaries(self.path.parent, targets={CHECKPOINT_NAME, FRONTIER_NAME})

    def held(self) -> bytes | None:
        return self._read(self.path)

    def held_size(self) -> int | None:
        held = self.held()
        if held is None:
            return None
        try:
            return _size(held)
        except (NoteError, ValueError, IndexError):
            # Not readable: treat as none held, and the proposal is checked against the
            # ledger alone (which still pins every entry); the old file is kept aside.
            log.error("%s is not a checkpoint note; kept as %s.bad", self.path, self.path.name)
            os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            return None

    def cosign(self, note: bytes, proof: Sequence[bytes], ledger_lines: Sequence[bytes],
               now_s: int) -> bytes:
        """Check the dock's proposal against what this device holds and its own
        ledger; cosign it, keep it, return it. Raises CheckpointRefused."""
        held = self.held()
        frontier = self.held_frontier() if held is not None else None
        cosigned = cosign_if_consistent(
            held, note, proof, self.key, trust=self.trust, device=self.device,
            timestamp=now_s, ledger_payloads=LineLeaves(ledger_lines), frontier=frontier)
        if held is not None and _size(held) > cosigned.checkpoint.size:
            raise CheckpointRefused(f"the dock proposes {cosigned.checkpoint.size} entries; "
                                    f"this device already holds a checkpoint of {_size(held)}")
        if held is not None and not cosigned.frontier_used:
            log.warning("%s: %s; the tree was recomputed from the whole ledger", self.frontier_path,
                        "missing" if frontier is None else "not the tree of the checkpoint held")
        assert cosigned.frontier is not None  # a ledger was given
        self._keep(cosigned.note, cosigned.frontier)
        return cosigned.note

    def held_frontier(self) -> Frontier | None:
        """The frontier kept beside the checkpoint, as read (not yet vouched for)."""
        data = self._read(self.frontier_path)
        try:
            return None if data is None else frontier_from_bytes(data)
        except FrontierError as e:
            log.warning("%s: %s", self.frontier_path, e)
            return None

    @staticmethod
    def _read(path: Path) -> bytes | None:
        """By the store reader's rules: someone with the card may have put a FIFO
        (a read would wait for ever) or a link there. Such a file counts as absent."""
        try:
            return read_file_if_present(path, MAX_KEPT_BYTES)
        except StoreError as e:
            log.error("%s; taken as absent", e)
            return None

    def _keep(self, note: bytes, frontier: Frontier) -> None:
        # The frontier first: a cut between the two leaves the new frontier beside the
        # old note; they do not match, so the next docking recomputes from the ledger.
        replace_atomically(self.frontier_path, frontier_to_bytes(frontier))
        replace_atomically(self.path, note)


def _size(note: bytes) -> int:
    return int(Note.from_bytes(note).text.split("\n")[1])
