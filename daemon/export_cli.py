"""``custody export STORE --key ARCHIVE_SECRET_KEY --out DIR``.

Exit 0 when every media file was exported; 1 when any was refused (each is
named); 2 on usage errors or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daemon.export import export_store
from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey
from protocol.store_reader import StoreError, find_stores, find_trust


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="a device store")
    parser.add_argument("--key", type=Path, required=True, help="the archive's secret key")
    parser.add_argument("--out", type=Path, required=True, help="folder for the plaintext media")
    parser.add_argument("--trust", type=Path, help="the unit's trust file (default: beside STORE)")


def run(args: argparse.Namespace) -> int:
    try:
        archive = ArchiveSecretKey.from_pem(args.key.read_bytes())
    except OSError as e:
        print(f"custody export: {args.key}: {e.strerror}", file=sys.stderr)
        return 2
    except ProtocolError as e:
        print(f"custody export: {args.key}: {e}", file=sys.stderr)
        return 2
    try:
        trust = find_trust(args.store, args.trust)
        stores = find_stores(args.store)
        results = [r for s in stores for r in export_store(s, trust, archive,
                                                           args.out / s.name if len(stores) > 1
                                                           else args.out)]
    except StoreError as e:
        print(f"custody export: {e}", file=sys.stderr)
        return 2
    refused = [r for r in results if r.out is None and not r.offloaded]
    for r in results:
        if r.out is not None:
            print(f"exported  {r.seq:>6}  {r.file} -> {r.out}")
    for r in refused:
        print(f"REFUSED   {r.seq:>6}  {r.file}: {r.problem}", file=sys.stderr)
    exported = sum(r.out is not None for r in results)
    offloaded = sum(r.offloaded for r in results)
    print(f"{exported} exported, {offloaded} offloaded earlier, {len(refused)} refused")
    return 1 if refused else 0
