"""The ``custody`` command: the dispatcher above every package.

It sits outside protocol/, hardware/, device/ and daemon/ because it names
all of them. Each subcommand lives with the package that owns it and is
imported only when it is called, so that ``custody verify`` needs nothing but
protocol/ and the recorder on a Pi never imports the dock's code (and vice versa).

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "provision": ("daemon.provision_cli", "create a unit's keys and trust file; enrol devices"),
    "verify": ("protocol.verify_cli", "verify a device store or archive and report continuity"),
    "watch": ("daemon.watch_cli", "watch the unit's devices: signed attestations and alerts "
              "over MQTT"),
    "export": ("daemon.export_cli", "decrypt segments for review (needs the archive key)"),
    "archive": ("daemon.archive.cli", "the custodian's archive: search, show, annotate, export, "
                "delete"),
    "recorder": ("device.agent", "run the recorder service (systemd runs this on the device)"),
    "dock": ("daemon.dock.service", "run the dock service: offload, verify, archive, receipts"),
    "sim": ("device.sim", "run the recorder on simulated hardware through a scenario"),
    "demo": ("device.demo", "the whole shift of two devices with a dock and MQTT, narrated"),
    "console": ("device.console.cli", "the technicians' serial maintenance console"),
    "otp": ("device.otp_cli", "the board's OTP secret and the device keys it wraps"),
    "hw": ("hardware.cli", "hardware checks for technicians (capture, ...)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="custody",
        description="Custody: sealed, verifiable body-worn recordings.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (and only it can
        # describe its own arguments).
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
