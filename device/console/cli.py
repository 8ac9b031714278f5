"""``custody console --port DEVICE [--config FILE]``: the serial maintenance console.

systemd runs one per serial line (``custody-console@ttyS0.service``). Two
provisioning helpers share the command, since they make what the console reads:

- ``--add-technician NAME --technicians FILE``: add a technician (password on stdin);
- ``--sign-trust-update KEYS_DIR``: print the unit's trust file as an update signed
  by its archive key (``archive-signing.key``, kept offline), for ``enroll``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from device.config import ConfigError, RecorderConfig

DEFAULT_CONFIG = Path("/etc/custody/recorder.toml")
BAUDRATE = 115_200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help="the serial device, e.g. /dev/ttyS0 or ttyGS0")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"the device's settings (default {DEFAULT_CONFIG})")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--add-technician", metavar="NAME",
                        help="add a technician to --technicians FILE; password on stdin")
    parser.add_argument("--technicians", type=Path, help="the credentials file to add to")
    parser.add_argument("--sign-trust-update", type=Path, metavar="KEYS_DIR",
                        help="print KEYS_DIR/trust.json signed by KEYS_DIR/archive-signing.key")


def run(args: argparse.Namespace) -> int:
    if args.add_technician:
        return _add_technician(args)
    if args.sign_trust_update:
        return _sign_trust_update(args.sign_trust_update)
    if not args.port:
        print("custody console: --port DEVICE is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from device.console.credentials import CredentialsError, TechnicianStore
    from device.console.devicelog import log_to_device_log
    from device.console.session import ConsoleSession
    from hardware.serialport import SerialPort

    try:
        config = RecorderConfig.from_file(args.config)
        if config.technicians_file is None:
            raise ConfigError("technicians_file", "must be set for the console", str(args.config))
        technicians = TechnicianStore.load(config.technicians_file)
        port = SerialPort(args.port, BAUDRATE)  # pyserial's default framing: 8N1
    except (ConfigError, CredentialsError, OSError, ValueError) as e:
        print(f"custody console: {e}", file=sys.stderr)
        return 2
    log_to_device_log(config.log_file)
    logging.getLogger("custody.console").info("console on %s (%d technicians)", port.path,
                                              len(technicians.technicians))
    try:
        ConsoleSession(config, port, technicians, port_name=port.path).serve_forever()
    finally:
        port.close()
    return 1  # the line went away; systemd starts us again


def _add_technician(args: argparse.Namespace) -> int:
    from device.console.credentials import CredentialsError, add_technician

    if args.technicians is None:
        print("custody console: --add-technician needs --technicians FILE", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    try:
        add_technician(args.technicians, args.add_technician, password)
    except (CredentialsError, OSError) as e:
        print(f"custody console: {e}", file=sys.stderr)
        return 2
    print(f"technician {args.add_technician} added to {args.technicians}")
    return 0


def _sign_trust_update(keys: Path) -> int:
    # The unit's key folder as daemon/provision.py lays it out.
    from protocol.errors import ProtocolError
    from protocol.keys import SigningKey
    from protocol.trust_update import sign_trust_update

    try:
        key = SigningKey.from_pem((keys / "archive-signing.key").read_bytes())
        update = sign_trust_update((keys / "trust.json").read_bytes(), key.signer())
    except (OSError, ProtocolError) as e:
        print(f"custody console: {e}", file=sys.stderr)
        return 2
    print(json.dumps(update))
    return 0
