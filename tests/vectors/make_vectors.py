"""Write the test vectors in tests/vectors/ (run again only to replace them).

    .venv/bin/python tests/vectors/make_vectors.py

intact/ is a small complete device store that verifies clean: a provisioned
device assigned to an officer, one recording of three real sealed segments
(H.264 + FLAC, fragmented MP4, encrypted with custody-seg/1), markers, an
exemption, the unit's trust.json and — because these are test vectors and
nothing else — the archive's secret key, so export can be checked too.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from daemon.provision import (
    ARCHIVE_SECRET,
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,
)
from device.ledger import LedgerWriter
from device.sample import record_sample
from protocol.entries import EntryTime, Exemption
from protocol.store_reader import TRUST_NAME, read_trust

HERE = Path(__file__).parent
DEVICE = "DEV-VECTOR-01"


def vector_clock():
    # 2026-01-01T08:00:00Z, 100 ms per entry, one boot
    utc = itertools.count(1_767_254_400_000_000_000, 100_000_000)
    mono = itertools.count(5_000_000_000, 100_000_000)
    return lambda: EntryTime(utc_ns=next(utc), clock_source="rtc", clock_synced=True,
                             monotonic_ns=next(mono), boot_id="vector-boot-1")


def make_intact(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        clock = vector_clock()
        create_unit(keys, "vector-unit", ["DOCK-01"])
        enrol_device(keys, DEVICE, out, clock, officer="PC-0042", by="TECH-01")
        trust = read_trust(keys / TRUST_NAME)
        archive_public = bytes.fromhex(trust.keys[trust.archive_encryption_key].public)
        with LedgerWriter(out, DEVICE, load_signing_key(device_key_path(keys, DEVICE)),
                          clock) as ledger:
            record_sample(ledger, out, archive_public, "PC-0042")
            ledger.append(Exemption(reason="privacy", note="vector: an example exemption"))
        shutil.copy(keys / TRUST_NAME, out / TRUST_NAME)
        shutil.copy(keys / ARCHIVE_SECRET, out / ARCHIVE_SECRET)


if __name__ == "__main__":
    target = HERE / "intact"
    shutil.rmtree(target, ignore_errors=True)
    make_intact(target)
    print(f"wrote {target}")
