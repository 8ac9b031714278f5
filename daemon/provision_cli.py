"""``custody provision``: create a unit, enrol devices."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from daemon import pki_cli
from daemon.pki import PKIError
from daemon.provision import ProvisionError, create_unit, enrol_device, provisioning_clock
from protocol.errors import ProtocolError
from protocol.store_reader import TRUST_NAME, StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True)
    unit = sub.add_parser("unit", help="create a unit's archive and dock keys and trust file")
    unit.add_argument("--keys", type=Path, required=True, help="folder for the unit's keys")
    unit.add_argument("--unit", required=True, help="the unit's name")
    unit.add_argument("--dock", action="append", default=[], help="a dock id (repeatable)")
    unit.add_argument("--dock-host", action="append", default=[],
                      help="a host name or address devices reach the docks at, for their TLS "
                      "certificates (repeatable; localhost is always included)")
    dev = sub.add_parser("device", help="enrol a device: key, trust entry, genesis entry")
    dev.add_argument("--keys", type=Path, required=True, help="the unit's key folder")
    dev.add_argument("--device", required=True, help="the device id (its serial)")
    dev.add_argument("--store", type=Path, required=True, help="the device's evidence folder")
    dev.add_argument("--officer", help="assign the device to this officer id")
    dev.add_argument("--by", default="", help="who provisions (technician id)")
    pki_cli.add_parsers(sub)


def run(args: argparse.Namespace) -> int:
    try:
        if args.what in pki_cli.COMMANDS:
            pki_cli.run(args)
            return 0
        if args.what == "unit":
            docks = args.dock or ["DOCK-01"]
            create_unit(args.keys, args.unit, docks, tuple(args.dock_host))
            pki_cli.provision_unit_tls(args.keys, docks)
        else:
            enrol_device(args.keys, args.device, args.store, provisioning_clock(), args.officer,
                         args.by)
            pki_cli.provision_device_tls(args.keys, args.device)
    except (ProvisionError, StoreError, ProtocolError, PKIError) as e:
        print(f"custody provision: {e}", file=sys.stderr)
        return 2
    trust = args.keys / TRUST_NAME
    print(f"trust file: {trust}  sha256 {hashlib.sha256(trust.read_bytes()).hexdigest()}")
    return 0
