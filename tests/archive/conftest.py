"""An archive in the dock's layout (ARCHIVE/devices/<id>/ + trust.json), made by
copying a unit's device store, with receipts the dock would have written, until
the dock (issue 14) fills archives itself."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.archive.archive import Archive
from daemon.provision import ARCHIVE_SIGNING, load_signing_key
from protocol.archive_log import cosign_if_consistent, ledger_leaves
from protocol.keys import SigningKey
from protocol.store_reader import TRUST_NAME
from tests.conftest import DEVICE, Unit

DAY_NS = 86_400 * 10**9


class ManualClock:
    def __init__(self, utc_ns: int):
        self.utc_ns = utc_ns

    def __call__(self) -> int:
        self.utc_ns += 1_000_000
        return self.utc_ns


@dataclass
class ArchiveSetup:
    root: Path
    unit: Unit
    clock: ManualClock
    archive: Archive

    @property
    def archive_key(self) -> SigningKey:
        return load_signing_key(self.unit.keys / ARCHIVE_SIGNING)

    @property
    def store(self) -> Path:
        return self.root / "devices" / DEVICE

    def copy_store(self) -> None:
        """What the dock does at offload: the device's new entries, media and a receipt."""
        self.store.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.unit.ledger_path, self.store / "ledger.jsonl")
        (self.store / "media").mkdir(exist_ok=True)
        for f in (self.unit.store / "media").iterdir():
            if not (self.store / "media" / f.name).exists():
                shutil.copyfile(f, self.store / "media" / f.name)
        receipts = self.store / "receipts"
        receipts.mkdir(exist_ok=True)
        n = len(list(receipts.glob("*.json")))
        (receipts / f"{n:06d}.json").write_text(json.dumps(self.unit.receipt()))

    def dock(self) -> bytes:
        """One docking: offload, index, sign a checkpoint, the device cosigns it."""
        self.copy_store()
        self.archive.ingest(DEVICE, "dock:DOCK-01", self.archive_key)
        log = self.archive.log(DEVICE)
        held = self.unit.store / "checkpoint"
        old = held.read_bytes() if held.exists() else None
        old_size = int(old.split(b"\n")[1]) if old else None
        note, proof = log.proposal(old_size)
        cosigned = cosign_if_consistent(
            old, note, proof, self.unit.device_key, trust=self.unit.trust, device=DEVICE,
            timestamp=self.clock.utc_ns // 10**9,
            ledger_payloads=ledger_leaves(self.unit.ledger_path.read_bytes()))
        held.write_bytes(cosigned.note)
        log.accept_cosigned(cosigned.note)
        return cosigned.note


@pytest.fixture
def setup(unit: Unit, tmp_path: Path) -> ArchiveSetup:
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copyfile(unit.keys / TRUST_NAME, root / TRUST_NAME)
    clock = ManualClock(unit.clock.utc_ns + 3600 * 10**9)
    s = ArchiveSetup(root, unit, clock, Archive.open(root, clock))
    s.dock()
    yield s
    s.archive.close()
