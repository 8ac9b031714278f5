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
from protocol.archive_log import CheckpointRefused, cosign_if_consistent, ledger_leaves
from protocol.keys import SigningKey
from protocol.note import Note, NoteError
from protocol.trust import TrustFile

log = logging.getLogger("custody.checkpoint")

CHECKPOINT_NAME = "checkpoint.note"


class CheckpointKeeper:
    """The device's cosigned checkpoint of its log, in ``store/checkpoint.note``."""

    def __init__(self, store: Path, device: str, key: SigningKey, trust: TrustFile):
        self.path = Path(store) / CHECKPOINT_NAME
        self.device, self.key, self.trust = device, key, trust
        # Its own writes a cut interrupted: the checkpoint held is the one before.
        remove_temporaries(self.path.parent, targets={CHECKPOINT_NAME})

    def held(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def held_size(self) -> int | None:
        held = self.held()
        if held is None:
            return None
        try:
            return int(Note.from_bytes(held).text.split("\n")[1])
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
        cosigned = cosign_if_consistent(
            held, note, proof, self.key, trust=self.trust, device=self.device,
            timestamp=now_s, ledger_payloads=ledger_leaves(b"".join(
                line + b"\n" for line in ledger_lines)))
        if held is not None and _size(held) > cosigned.checkpoint.size:
            raise CheckpointRefused(f"the dock proposes {cosigned.checkpoint.size} entries; "
                                    f"this device already holds a checkpoint of {_size(held)}")
        self._keep(cosigned.note)
        return cosigned.note

    def _keep(self, data: bytes) -> None:
        replace_atomically(self.path, data)


def _size(note: bytes) -> int:
    return int(Note.from_bytes(note).text.split("\n")[1])
