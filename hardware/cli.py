"""``custody hw``: hardware checks for technicians.

    custody hw capture --seconds 5 --out check.mp4 [--backend sim|pi]
    custody hw board [NAME|PATH]        validate a board file and print it
    custody hw status [--backend sim|pi] battery, storage, clock and dock state
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from hardware.board import BoardError, board_names
from hardware.factory import BACKENDS, ENV_BACKEND


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="hw_command", metavar="CHECK")
    sub.required = True

    cap = sub.add_parser(
        "capture",
        help="record camera + microphone into one MP4",
        description="Record camera and microphone through the backends into one playable "
        "MP4 (H.264 as encoded, FLAC audio).",
    )
    cap.add_argument("--seconds", type=float, required=True, help="length to record")
    cap.add_argument("--out", required=True, help="MP4 file to write")
    _backend_args(cap)
    cap.add_argument("--size", metavar="WxH", help="override the board's video size")
    cap.add_argument("--fps", type=int, help="override the board's frame rate")
    cap.add_argument("--bitrate", type=int, help="override the board's bitrate (bit/s)")
    cap.add_argument(
        "--mic",
        choices=("default", "sim", "sounddevice", "pyaudio", "none"),
        default="default",
        help="microphone backend (default: the simulator on sim, the board's on pi)",
    )
    cap.add_argument("--device-id", default="", help="device id for the overlay")
    cap.add_argument("--officer-id", default="", help="officer id for the overlay")
    cap.add_argument("--no-overlay", action="store_true", help="no burned-in text")
    cap.add_argument("--json", action="store_true", help="print the report as JSON")

    brd = sub.add_parser("board", help="validate a board file and print it")
    brd.add_argument("board", nargs="?", help=f"shipped name ({', '.join(board_names())}) or path")

    st = sub.add_parser("status", help="battery, storage, clock and dock state")
    _backend_args(st)


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS, help=f"hardware backend (default: ${ENV_BACKEND} or pi)"
    )
    parser.add_argument("--board", help="board name or TOML path (default: $CUSTODY_BOARD)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.hw_command == "capture":
            return _capture(args)
        if args.hw_command == "board":
            return _board(args)
        return _status(args)
    except BoardError as exc:
        print(f"custody hw: board error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"custody hw: {exc}", file=sys.stderr)
        return 1


def _capture(args: argparse.Namespace) -> int:
    from hardware.capture import capture
    from hardware.factory import make_factory

    if args.seconds <= 0:
        raise ValueError("--seconds must be positive")
    with make_factory(args.backend, args.board) as factory:
        overrides: dict[str, object] = {
            "device_id": args.device_id,
            "officer_id": args.officer_id,
        }
        if args.size:
            width, _, height = args.size.lower().partition("x")
            overrides["width"], overrides["height"] = int(width), int(height)
        if args.fps:
            overrides["fps"] = args.fps
        if args.bitrate:
            overrides["bitrate"] = args.bitrate
        if args.no_overlay:
            overrides["overlay"] = False
        config = factory.camera_config(**overrides)
        mic = None if args.mic in ("default", "none") else args.mic
        report = capture(
            factory, args.seconds, args.out, camera_config=config, microphone=mic,
            audio=args.mic != "none",
        )
    if args.json:
        print(json.dumps(asdict(report) | {"seconds": report.seconds}))
    else:
        print(report.summary())
    return 0 if report.video_frames > 0 else 1


def _board(args: argparse.Namespace) -> int:
    from hardware.board import load_board

    board = load_board(args.board)
    print(json.dumps(asdict(board), indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    from hardware.factory import make_factory

    with make_factory(args.backend, args.board) as factory:
        battery = factory.battery()
        storage = factory.storage().status()
        clock = factory.clock()
        print(f"board:   {factory.board.name} ({factory.name})")
        print(f"battery: {battery.read()}")
        usable, total = storage.usable_bytes / 1e9, storage.total_bytes / 1e9
        level = "low" if storage.is_low else "ok"
        print(f"storage: {usable:.2f} GB usable of {total:.2f} GB ({level})")
        print(f"clock:   {clock.now_utc().isoformat()} (set from: {clock.sync.source.value})")
        battery.close()
    return 0
