"""``custody demo --out DIR``: a demo unit, a sample recording, its verification.

Lays out DIR as ``custody sim`` does: ``keys/`` (the unit; ``trust.json`` and,
for the demo only, the archive's secret key), ``device/`` (the device store)
and ``export/`` (the decrypted segments).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.export import export_store
from daemon.provision import (
    ARCHIVE_SECRET,
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,
)
from device.ledger import LedgerWriter, system_clock
from device.sample import record_sample
from protocol.keys import ArchiveSecretKey
from protocol.store_reader import TRUST_NAME, read_store, read_trust
from protocol.verify import VerificationPolicy, verify
from protocol.verify_cli import EXIT_CODES, render

DEVICE, OFFICER, TECHNICIAN, UNIT = "DEV-DEMO-0001", "PC-0042", "TECH-01", "demo-unit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="an empty folder to fill")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    keys, store = out / "keys", out / "device"
    clock = system_clock()
    create_unit(keys, UNIT, ["DOCK-01"])
    enrol_device(keys, DEVICE, store, clock, officer=OFFICER, by=TECHNICIAN)
    print(f"provisioned unit {UNIT!r} in {keys}, device {DEVICE} assigned to {OFFICER}")
    trust = read_trust(keys / TRUST_NAME)
    archive_public = bytes.fromhex(trust.keys[trust.archive_encryption_key].public)
    with LedgerWriter(store, DEVICE, load_signing_key(device_key_path(keys, DEVICE)),
                      clock) as ledger:
        entries = record_sample(ledger, store, archive_public, OFFICER)
    print(f"recorded a sample: {len(entries)} entries, sealed into {store}")
    contents = read_store(store)
    report = verify(contents.ledger, contents.media, trust, VerificationPolicy())
    print(render(store, report))
    archive = ArchiveSecretKey.from_pem((keys / ARCHIVE_SECRET).read_bytes())
    exported = [r.out for r in export_store(store, trust, archive, out / "export") if r.out]
    print(f"exported {len(exported)} playable segments to {out / 'export'}")
    print(f"check it yourself: custody verify {store}")
    return EXIT_CODES[report.verdict]
