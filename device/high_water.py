"""The ledger's high-water mark: the last seq and head the device ever wrote, kept apart.

Someone with the card can cut the ledger back to before a recording and
delete its media while the device is off; the device would then append from
there with the same seq numbers, and the chain would show no trace. So after
every append the :class:`~device.ledger.LedgerWriter` also records ``seq`` and
``head`` (the entry's payload SHA-256) in a file of its own beside the ledger,
authenticated with the device's journal key (``protocol/journal_auth.py``). At
the next start a ledger that ends before the mark is declared in a signed
``ledger_gap`` entry naming the missing range, placed *after* the mark (its
``seq`` is the mark's + 1, its ``prev`` the mark's head): no seq, and so no
file name (``r<recording seq>-<index>``), is ever used twice.

Two files, ``ledger.mark.a`` and ``ledger.mark.b``, take turns, so a cut while
one is being rewritten leaves the other. The newest one that verifies counts.

>>> import tempfile
>>> from protocol.keys import SigningKey
>>> from protocol.journal_auth import JournalKey
>>> store = Path(tempfile.mkdtemp())
>>> marks = HighWaterMark(store, "DEV-1", JournalKey.derive(SigningKey.generate()))
>>> marks.read() is None
True
>>> marks.write(4, "ab" * 32)
>>> marks.read().seq
4
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hardware.host.durable import overwrite_durably
from protocol.journal_auth import MARK_FILES, MARK_FORMAT, JournalKey, high_water_record

log = logging.getLogger(__name__)

__all__ = ["MARK_FILES", "MARK_FORMAT", "HighWaterMark", "Mark"]


@dataclass(frozen=True)
class Mark:
    seq: int
    head: str
    writes: int  # which write this was: the newer of the two files has the higher count


class HighWaterMark:
    """The two mark files of a store, read and written with the device's journal key."""

    def __init__(self, store: Path, device: str, key: JournalKey):
        self.store, self.device, self._key = Path(store), device, key
        self._writes = 0

    def read(self) -> Mark | None:
        """The newest mark that is the device's own, or None if there is none."""
        best: Mark | None = None
        for name in MARK_FILES:
            path = self.store / name
            try:
                record = json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                log.error("%s: unreadable high-water mark ignored", path)
                continue
            if not (self._key.verify(record) and record.get("format") == MARK_FORMAT
                    and record.get("device") == self.device
                    and all(isinstance(record.get(k), int) for k in ("seq", "writes"))
                    and isinstance(record.get("head"), str)):
                log.error("%s: a high-water mark that is not this device's; ignored", path)
                continue
            mark = Mark(record["seq"], record["head"], record["writes"])
            if best is None or mark.writes > best.writes:
                best = mark
        if best is not None:
            self._writes = best.writes
        return best

    def exists(self) -> bool:
        return any((self.store / name).exists() for name in MARK_FILES)

    def claims(self) -> set[tuple[int, str]]:
        """(seq, head) of every mark file, verified or not: after a key rotation the old
        key's mark no longer verifies, but may still agree with the ledger."""
        out = set()
        for name in MARK_FILES:
            try:
                record = json.loads((self.store / name).read_bytes())
                out.add((int(record["seq"]), str(record["head"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def write(self, seq: int, head: str) -> None:
        """Record that entry ``seq`` (payload SHA-256 ``head``) is on the medium."""
        self._writes += 1
        data = high_water_record(self._key, self.device, seq, head, self._writes)
        # In place, not renamed: the two files take turns, so a torn one leaves the other.
        overwrite_durably(self.store / MARK_FILES[self._writes % 2], data)
