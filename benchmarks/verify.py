"""Benchmark: verification throughput of a ≥ 1 GiB device store.

    .venv/bin/python benchmarks/verify.py [--gib 1.0]

Generates a store (a recording of 32 MiB sealed segments), then measures
``custody verify``'s work — reading the store, hashing all media and checking
the ledger — against the limit measured in the same run: plain
``hashlib.file_digest(f, "sha256")`` over the same files. Both run with a warm
page cache, taking turns, best of five. The last line is JSON: figure, limit, ratio (MB/s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from daemon.provision import (
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,
)
from device.ledger import LedgerWriter, system_clock
from device.sealer import SegmentSealer
from protocol.entries import RecordStart, RecordStop, Segment
from protocol.store_reader import MEDIA_DIR, read_store, read_trust
from protocol.verify import INTACT, verify

SEGMENT = 32 << 20
PERIOD = 33_333_333


def make_store(root: Path, total: int) -> Path:
    keys, store = root / "keys", root / "device"
    clock = system_clock()
    create_unit(keys, "bench", ["DOCK-01"])
    enrol_device(keys, "BENCH-1", store, clock, officer="PC-1")
    trust = read_trust(keys / "trust.json")
    archive = bytes.fromhex(trust.keys[trust.archive_encryption_key].public)
    block = os.urandom(SEGMENT)
    with LedgerWriter(store, "BENCH-1", load_signing_key(device_key_path(keys, "BENCH-1")),
                      clock) as ledger:
        rec = ledger.append(RecordStart(trigger="button", category="scene", officer="PC-1",
                                        pre_record_seconds=0)).entry.seq
        count = -(-total // SEGMENT)
        # Captured before it is sealed: no segment may claim capture after its entry.
        t0 = time.time_ns() - count * 1800 * PERIOD
        for i in range(count):
            sealer = SegmentSealer(store, f"seg-{i:05d}.cseg", archive)
            sealer.write(block)
            media = sealer.close()
            first = t0 + i * 1800 * PERIOD
            ledger.append(Segment(recording=rec, span=0, index=i, media=media,
                                  first_capture_utc_ns=first,
                                  last_capture_utc_ns=first + 1799 * PERIOD,
                                  frame_period_ns=PERIOD, frames=1800,
                                  audio_samples=48_000 * 60, audio_rate=48_000))
        ledger.append(RecordStop(recording=rec, trigger="button"))
    return store


def best_of_interleaved(n: int, *fns) -> list[float]:
    """Best time of each function over ``n`` rounds, the functions taking turns,
    so a machine shared with other work slows both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        store = make_store(Path(tmp), int(args.gib * (1 << 30)))
        trust = read_trust(Path(tmp) / "keys" / "trust.json")
        files = sorted((store / MEDIA_DIR).iterdir())
        size = sum(f.stat().st_size for f in files)

        def raw_sha256() -> None:
            for f in files:
                with open(f, "rb") as fh:
                    hashlib.file_digest(fh, "sha256")

        def custody_verify() -> None:
            contents = read_store(store)
            report = verify(contents.ledger, contents.media, trust)
            assert report.verdict == INTACT, report.findings

        raw_sha256()  # warm the page cache
        raw, ours = best_of_interleaved(5, raw_sha256, custody_verify)
        limit, figure = size / raw / 1e6, size / ours / 1e6
    print(f"verified {size / 1e6:.0f} MB in {len(files)} segments", file=sys.stderr)
    print(json.dumps({"figure": round(figure, 1), "limit": round(limit, 1),
                      "ratio": round(figure / limit, 3), "unit": "MB/s", "bytes": size}))


if __name__ == "__main__":
    main()
