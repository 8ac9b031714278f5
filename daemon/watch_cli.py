"""``custody watch``: the unit's devices, live, from the dock's signed attestations.

    custody watch --broker mqtts://dock.local:8883 --trust trust.json \\
        --ca ca.crt --cert WATCH-01.crt --key WATCH-01.key

Subscribes to ``custody/<unit>/#`` (the unit is the trust file's), checks every
attestation and alert against the trust file and prints a table of devices
(last docking, verdict, gaps, overdue recordings, alerts, status) whenever it
changes; what fails the check is reported on stderr and left out of the table.

``--once``: print the table once the retained messages have arrived (no new
message for ``--quiet`` seconds) and exit. ``--count N``: exit after N
accepted attestations and alerts (exit 1 if ``--timeout`` passes first).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from daemon.mqtt.client import MqttConnection, MqttSettingsError
from daemon.mqtt.watch import REFUSED, UnitBoard, Watcher
from protocol.errors import ProtocolError
from protocol.store_reader import StoreError, read_trust

EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtts://HOST:PORT")
    parser.add_argument("--trust", type=Path, required=True, help="the unit's trust file")
    parser.add_argument("--ca", type=Path, required=True, help="the unit's CA certificate")
    parser.add_argument("--cert", type=Path, required=True, help="this watcher's certificate")
    parser.add_argument("--key", type=Path, required=True, help="this watcher's TLS key")
    parser.add_argument("--once", action="store_true",
                        help="print the table once the retained messages are in, then exit")
    parser.add_argument("--count", type=int, help="exit after N accepted attestations/alerts")
    parser.add_argument("--quiet", type=float, default=1.0,
                        help="with --once: seconds without a new message that end the wait "
                        "(default 1)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the final state as JSON")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="custody watch: %(message)s")
    try:
        trust = read_trust(args.trust)
        connection = MqttConnection.from_url(args.broker, args.ca, args.cert, args.key)
        connection.identity  # noqa: B018 — read the certificate now, to fail early
    except (StoreError, ProtocolError, MqttSettingsError) as e:
        print(f"custody watch: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.count is not None and args.count < 1:
        print("custody watch: --count must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    board = UnitBoard(trust)
    live = not args.once and not args.json
    printed = threading.Lock()

    def on_change(outcome: str, topic: str) -> None:
        if outcome == REFUSED:
            print(f"refused: {topic}: {board.refused[-1][1]}", file=sys.stderr, flush=True)
        elif live:
            with printed:
                clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
                print(f"{clear}{board.table()}\n", flush=True)

    watcher = Watcher(connection, board, on_change)
    watcher.start()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    code = EXIT_OK
    try:
        code = _wait(watcher, args, deadline)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
    if watcher.refusal:
        print(f"custody watch: the broker refused {connection.identity}: {watcher.refusal}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(board.to_json(), indent=2))
    elif not live or code != EXIT_OK:
        print(board.table())
    return code


def _wait(watcher: Watcher, args: argparse.Namespace, deadline: float | None) -> int:
    """Block until --once / --count / --timeout says stop (or for ever)."""
    last_count, quiet_since = -1, time.monotonic()
    with watcher.changed:
        while True:
            now = time.monotonic()
            if args.count is not None and watcher.board.accepted >= args.count:
                return EXIT_OK
            if deadline is not None and now >= deadline:
                return EXIT_TIMEOUT if args.count is not None else EXIT_OK
            if args.once and watcher.subscribed.is_set():
                if watcher.messages != last_count:
                    last_count, quiet_since = watcher.messages, now
                elif now - quiet_since >= args.quiet:
                    return EXIT_OK
            watcher.changed.wait(0.1)

