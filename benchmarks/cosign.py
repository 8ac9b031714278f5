"""Benchmark: the device's cosigning at a docking, with and without its Merkle frontier.

    .venv/bin/python benchmarks/cosign.py [--sizes 10000 100000] [--new 1000] [--rounds 5]

For each ledger size ``n`` (signed ``marker`` entries after a real enrolment, as
the device's ledger holds them), the device holds a checkpoint it cosigned of
its first ``n - new`` entries and the dock proposes one of all ``n``, with its
consistency proof. Timed: :meth:`device.checkpoint_keeper.CheckpointKeeper.cosign`
as the offloader calls it (ledger lines already split), which checks the
dock's signature and proof, computes the root of its own first ``n`` entries,
cosigns and keeps the note (and frontier) durably:

- ``frontier_ms``: with ``checkpoint.frontier`` beside the held note (ADR
  0069): only the ``new`` entries are parsed and hashed;
- ``full_ms``: with the frontier gone, as before it existed: every entry is
  parsed and hashed (the work was 649 ms for 10 000 entries under load here).

The limit measured in the same run is ``full_ms``; ``ratio`` is
``frontier_ms / full_ms``. ``floor_ms`` is the least work of the frontier
path: parsing and hashing the ``new`` lines alone, nothing else. Best of
``--rounds``, the two taking turns. The store is a temporary directory under
``$BENCH_DIR`` (default: the system's temp dir). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from daemon.provision import (
    ARCHIVE_SIGNING,
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,
)
from device.checkpoint_keeper import CHECKPOINT_NAME, FRONTIER_NAME, CheckpointKeeper
from device.ledger import system_clock
from protocol.archive_log import LineLeaves, ledger_leaves, log_signer, tree_of
from protocol.checkpoint import Checkpoint
from protocol.entries import Entry, EntryTime, Marker
from protocol.envelope import parse_line, sign_entry, split_lines
from protocol.keys import SigningKey
from protocol.merkle import leaf_hash
from protocol.note import Note
from protocol.store_reader import LEDGER_NAME, read_trust

DEVICE = "BENCH-1"


def make_ledger(root: Path, size: int) -> tuple[Path, Path, list[bytes]]:
    """A store whose ledger is an enrolment and then markers, ``size`` lines in all."""
    keys, store = root / "keys", root / "device"
    create_unit(keys, "bench", ["DOCK-01"])
    enrol_device(keys, DEVICE, store, system_clock(), officer="PC-1")
    lines = split_lines((store / LEDGER_NAME).read_bytes())
    signer = load_signing_key(device_key_path(keys, DEVICE)).signer()
    last = parse_line(lines[-1])
    prev, seq, t = last.digest, last.entry.seq, last.entry.time
    for i in range(size - len(lines)):
        seq += 1
        when = EntryTime(utc_ns=t.utc_ns + i * 10**9, clock_source=t.clock_source,
                         clock_synced=t.clock_synced, monotonic_ns=t.monotonic_ns + i * 10**9,
                         boot_id=t.boot_id)
        signed = sign_entry(Entry(device=DEVICE, seq=seq, prev=prev, time=when,
                                  body=Marker(phase="site")), signer)
        lines.append(signed.to_line().rstrip(b"\n"))
        prev = signed.digest
    (store / LEDGER_NAME).write_bytes(b"".join(line + b"\n" for line in lines))
    return keys, store, lines


def measure(root: Path, size: int, new: int, rounds: int) -> dict[str, float]:
    keys, store, lines = make_ledger(root, size)
    trust = read_trust(keys / "trust.json")
    key = load_signing_key(device_key_path(keys, DEVICE))
    signer = log_signer(trust, DEVICE, SigningKey.from_pem((keys / ARCHIVE_SIGNING).read_bytes()))
    tree = tree_of(ledger_leaves((store / LEDGER_NAME).read_bytes()))

    def proposal(n: int) -> bytes:
        text = Checkpoint(signer.name, n, tree.root(n)).to_text()
        return Note(text, [signer.sign(text)]).to_bytes()

    keeper = CheckpointKeeper(store, DEVICE, key, trust)
    keeper.cosign(proposal(size - new), [], lines, 1)  # the checkpoint held before docking
    held = {name: (store / name).read_bytes() for name in (CHECKPOINT_NAME, FRONTIER_NAME)}
    note, proof = proposal(size), tree.consistency_proof(size - new, size)

    def docking(with_frontier: bool) -> float:
        for name, data in held.items():
            (store / name).write_bytes(data)
        if not with_frontier:
            (store / FRONTIER_NAME).unlink()
        start = time.perf_counter()
        keeper.cosign(note, proof, lines, 2)
        return time.perf_counter() - start

    def floor() -> float:
        start = time.perf_counter()
        leaves = LineLeaves(lines)[size - new:]
        [leaf_hash(p) for p in leaves]
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"frontier": [], "full": [], "floor": []}
    for _ in range(rounds):
        times["frontier"].append(docking(True))
        times["full"].append(docking(False))
        times["floor"].append(floor())
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {"frontier_ms": round(best["frontier"], 2), "full_ms": round(best["full"], 2),
            "ratio": round(best["frontier"] / best["full"], 4),
            "floor_ms": round(best["floor"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--new", type=int, default=1000, help="entries new since the last "
                        "docking")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # The keeper warns at each run without the frontier, as it should: not news here.
    logging.getLogger("custody.checkpoint").setLevel(logging.ERROR)
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            results[str(size)] = measure(Path(tmp), size, args.new, args.rounds)
        print(f"{size} entries: {results[str(size)]}", file=sys.stderr)
    largest = results[str(max(args.sizes))]
    print(json.dumps({"figure": largest["frontier_ms"], "limit": largest["full_ms"],
                      "ratio": largest["ratio"], "unit": "ms", "new_entries": args.new,
                      "by_size": results}))


if __name__ == "__main__":
    main()
