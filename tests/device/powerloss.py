"""``custody sim`` with its store behind the LazyFS-like layer: power cuts that lose the page cache.

Shared by ``tests/device/test_powerloss.py`` and ``benchmarks/powerloss.py``.
:class:`LayeredSimRunner` is the simulator's runner whose ``power_cut`` first
cuts the layer (every write not yet fsynced is gone, later ones fail), then
kills the recorder's process group, notes what was durable at that instant,
and restores the power. :func:`sealed_lost` then counts what was durable at a
cut but is gone (or changed) at the end: entries and their media.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from device.scenario import Scenario
from device.sim import SimRunner
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR
from tests.fuselayer import LazyLayer


@dataclass
class Durable:
    """What a cut left on the medium: ledger entries (seq -> digest) and sealed media."""

    entries: dict[int, str] = field(default_factory=dict)
    media: dict[str, str] = field(default_factory=dict)  # file -> sha256 its entry names


def durable_state(store: Path) -> Durable:
    state = Durable()
    ledger = store / LEDGER_NAME
    for line in split_lines(ledger.read_bytes()) if ledger.exists() else []:
        try:
            signed = parse_line(line)
        except Exception:  # noqa: BLE001 - a torn line is not an entry
            continue
        state.entries[signed.entry.seq] = signed.digest
        state.media.update((m.file, m.sha256) for m in signed.entry.media())
    return state


class LayeredSimRunner(SimRunner):
    """A scenario run whose device store sits behind a :class:`LazyLayer`."""

    def __init__(self, scenario: Scenario, out: Path, backing: Path):
        super().__init__(scenario, out)  # provisions out/device: the genesis
        shutil.move(self.store, backing)  # the card's bytes, now behind the layer
        self.backing = backing
        self.layer = LazyLayer(backing, self.store)
        self.at_cuts: list[Durable] = []
        self.status_at_cuts: list[dict] = []  # the recorder's status just before each cut

    def power_cut(self) -> None:
        asked = time.monotonic()
        try:  # what the recorder had seen of this span, just before its power goes
            status = self.client.call("status") if self.client is not None else {}
        except Exception:  # noqa: BLE001 - already off (a battery shutdown), or busy
            status = {}
        # how long the asking took: the cut comes that much after its step's time
        self.status_at_cuts.append({**status, "status_call_s": time.monotonic() - asked})
        self.layer.cut()  # the instant of the cut: the page cache is gone
        super().power_cut()  # and the recorder with it
        self.at_cuts.append(durable_state(self.backing))
        self.layer.restore()

    def run(self) -> int:
        try:
            return super().run()
        finally:
            self.layer.close()
            self.store.rmdir()  # the empty mount point
            shutil.move(self.backing, self.store)


def sealed_lost(store: Path, at_cuts: list[Durable]) -> int:
    """Entries and sealed media durable at some cut that the store no longer has intact."""
    final = durable_state(store)
    entries = {(seq, digest) for d in at_cuts for seq, digest in d.entries.items()}
    media = {(file, sha256) for d in at_cuts for file, sha256 in d.media.items()}
    lost = sum(final.entries.get(seq) != digest for seq, digest in entries)
    for file, sha256 in media:
        path = store / MEDIA_DIR / file
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            lost += 1
    return lost
