"""``custody otp``: the board's OTP secret, and the device keys wrapped by it.

Run on the device, as root, when it is provisioned (docs/hardware.md, "Key custody")::

    custody otp program --dry-run     # what would be written where; nothing is
    custody otp program               # asks for "yes", then writes 256 random bits, once
    custody otp wrap --key DEV.key --device DEV-0001 --out /etc/custody/device.key
    custody otp wrap --purpose tls --key DEV-tls.key --device DEV-0001 \
        --out /etc/custody/tls.key    # the TLS client key (tls/devices/DEV-0001.key)
    shred -u DEV.key DEV-tls.key      # the unwrapped keys must not stay on the card

``--otp-state DIR`` uses a simulated board whose OTP lives in DIR instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from device.key_custody import (
    PURPOSES,
    KeyCustodyError,
    wrap_signing_key,
    wrap_tls_key,
    write_wrapped_key,
)
from hardware.factory import factory_class
from hardware.otp import OtpError, OtpSecret
from protocol.errors import ProtocolError
from protocol.keys import SigningKey


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True)
    program = sub.add_parser("program", help="write the board's OTP secret (once, for good)")
    program.add_argument("--dry-run", action="store_true",
                         help="say what would be done; do nothing")
    program.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    wrap = sub.add_parser("wrap", help="wrap a device key (PEM) with the OTP secret")
    wrap.add_argument("--key", type=Path, required=True, help="the device's PEM private key")
    wrap.add_argument("--purpose", choices=PURPOSES, default="signing",
                      help="signing: the ledger key (key_file); tls: the TLS client key "
                           "(tls_key_file)")
    wrap.add_argument("--device", required=True, help="the device id the key is for")
    wrap.add_argument("--out", type=Path, required=True, help="the wrapped key file to write")
    for p in (program, wrap):
        p.add_argument("--otp-state", type=Path,
                       help="a simulated board's OTP folder (default: this Pi's OTP)")


def board(args: argparse.Namespace) -> OtpSecret:
    """This Pi's OTP, or with ``--otp-state`` a simulated board's (the backend table's)."""
    backend = "sim" if args.otp_state is not None else "pi"
    return factory_class(backend).otp_secret(args.otp_state)


def program_otp(otp: OtpSecret, *, dry_run: bool, confirm) -> str:
    """Write a fresh secret into ``otp`` once. ``confirm(question) -> bool`` must say yes."""
    if otp.programmed:
        raise OtpError(f"{otp}: a secret is programmed already; nothing to do (OTP is "
                       "written once)")
    if dry_run:
        return f"dry run: would write 256 random bits into {otp}, permanently; nothing written"
    if not confirm(f"Write 256 random bits into {otp}? This cannot be undone. Type yes: "):
        return "not confirmed; nothing written"
    otp.program(os.urandom(32))
    return f"{otp}: programmed"


def _ask(question: str) -> bool:
    try:
        return input(question).strip() == "yes"
    except EOFError:  # no terminal: no confirmation
        return False


def run(args: argparse.Namespace) -> int:
    try:
        otp = board(args)
        if args.what == "program":
            print(program_otp(otp, dry_run=args.dry_run,
                              confirm=lambda q: args.yes or _ask(q)))
            return 0
        secret = otp.read()
        if secret is None:
            raise OtpError(f"{otp}: no secret programmed yet (custody otp program)")
        pem = args.key.read_bytes()
        if args.purpose == "tls":
            write_wrapped_key(args.out, wrap_tls_key(pem, secret, args.device))
            what = "TLS key"
        else:
            key = SigningKey.from_pem(pem)
            write_wrapped_key(args.out, wrap_signing_key(key, secret, args.device))
            what = f"signing key {key.keyid[:16]}…"
        print(f"{args.out}: {what} wrapped for {otp}; remove {args.key} from this device")
        return 0
    except (OtpError, KeyCustodyError, ProtocolError, OSError) as e:
        print(f"custody otp: {e}", file=sys.stderr)
        return 2
