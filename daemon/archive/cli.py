"""``custody archive``: the custodian's command line.

    custody archive search [--case TEXT] [--party TEXT] [--officer ID] [--device ID]
                           [--category NAME] [--recorded-from DATE] [--recorded-to DATE]
                           [--stored-from DATE] [--stored-to DATE] [--text TEXT]
                           [--not-classified] [--late] [--json]
    custody archive show RECORDING [--json]
    custody archive annotate RECORDING (--case TEXT | --party TEXT | --category NAME
                                        | --note TEXT | --paper-files-until DATE)
    custody archive hold|release RECORDING --why TEXT
    custody archive export RECORDING --out DIR --key ARCHIVE_SECRET_KEY [--clip SEQ ...]
    custody archive delete RECORDING --why TEXT --key ARCHIVE_SIGNING_KEY
    custody archive ingest [DEVICE ...] [--key ARCHIVE_SIGNING_KEY]
    custody archive audit     (the chain, and the heads the signed checkpoints anchor)
    custody archive user NAME --role custodian|unit_head|auditor   (password on stdin)
    custody archive web [--key ARCHIVE_SECRET_KEY] [--host H] [--port N]

Every subcommand takes ``--archive DIR`` (default ``$CUSTODY_ARCHIVE``) and
``--as WHO`` (default ``$CUSTODY_USER``): who acts is written to the audit
log with everything they do. RECORDING is ``DEVICE/SEQ`` (seq of its
record_start), e.g. ``DEV-0001/2``. Exit codes: 0 done, 1 refused (e.g. a
deletion before its time), 2 usage or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from daemon.archive.archive import Archive, ArchiveError, RecordingView
from daemon.archive.audit import AuditError, verify_audit
from daemon.archive.index import Query, RecordingRow
from daemon.archive.package import export_recording
from daemon.archive.retention import RetentionConfigError
from daemon.archive.tlog import LogError
from daemon.archive.users import USERS_NAME, Users, UsersError
from daemon.provision import ProvisionError, load_signing_key
from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey
from protocol.store_reader import StoreError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _date(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD or ISO 8601)") \
            from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--archive", type=Path, default=os.environ.get("CUSTODY_ARCHIVE"),
                        help="the archive folder (default $CUSTODY_ARCHIVE)")
    common.add_argument("--as", dest="who", default=os.environ.get("CUSTODY_USER"),
                        help="who is acting, for the audit log (default $CUSTODY_USER)")
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("search", parents=[common], help="search the index")
    for name in ("case", "party", "officer", "device", "category", "text"):
        p.add_argument(f"--{name}")
    for name in ("recorded-from", "recorded-to", "stored-from", "stored-to"):
        p.add_argument(f"--{name}", type=_date, metavar="DATE")
    p.add_argument("--not-classified", action="store_true", help="no case annotation yet")
    p.add_argument("--late", action="store_true", help="handed in more than 24 h after start")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("show", parents=[common], help="a recording, its annotations and audit")
    p.add_argument("recording")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("annotate", parents=[common], help="add a case, party, category or note")
    p.add_argument("recording")
    group = p.add_mutually_exclusive_group(required=True)
    for name in ("case", "party", "category", "note"):
        group.add_argument(f"--{name}")
    group.add_argument("--paper-files-until", type=_date, metavar="DATE",
                       help="when the case's paper file is disposed of (retention)")

    for name, text in (("hold", "put a legal hold on a recording"),
                       ("release", "release a legal hold")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("recording")
        p.add_argument("--why", required=True)

    p = sub.add_parser("export", parents=[common], help="write an evidence package")
    p.add_argument("recording")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="the archive's secret key")
    p.add_argument("--clip", type=int, action="append", help="only this segment (seq; repeat)")

    p = sub.add_parser("delete", parents=[common], help="delete media at the end of retention")
    p.add_argument("recording")
    p.add_argument("--why", required=True)
    p.add_argument("--key", type=Path, required=True, help="the archive's signing key")

    p = sub.add_parser("ingest", parents=[common], help="index archived device stores")
    p.add_argument("devices", nargs="*", help="default: every device in the archive")
    p.add_argument("--key", type=Path, help="the archive's signing key: also sign checkpoints")

    sub.add_parser("audit", parents=[common], help="verify the audit log's chain")

    p = sub.add_parser("user", parents=[common], help="add a web view user (password on stdin)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("custodian", "unit_head", "auditor"))

    p = sub.add_parser("web", parents=[common], help="serve the web view")
    p.add_argument("--key", type=Path, help="the archive's secret key (for playback)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8480)


def run(args: argparse.Namespace) -> int:
    if args.archive is None:
        return _usage("give --archive DIR (or set CUSTODY_ARCHIVE)")
    if args.action == "audit":
        try:
            count = verify_audit(args.archive / "audit.jsonl")
        except AuditError as e:
            print(f"custody archive: audit log BROKEN: {e}", file=sys.stderr)
            return EXIT_REFUSED
        try:
            with Archive.open(args.archive) as archive:
                anchored, findings = archive.audit_anchors()
        except ArchiveError:
            anchored, findings = 0, []  # no trust file: the chain is all there is to check
        for f in findings:
            print(f"custody archive: audit log BROKEN: {f.message}", file=sys.stderr)
        if findings:
            return EXIT_REFUSED
        print(f"audit log intact: {count} records, its head anchored in {anchored} "
              "signed checkpoints")
        return EXIT_OK
    if args.action in ("user", "web"):
        try:
            return _user(args) if args.action == "user" else _web(args)
        except (UsersError, ArchiveError, ProtocolError, OSError) as e:
            return _usage(str(e))
    if not args.who:
        return _usage("say who you are with --as NAME (or set CUSTODY_USER): it is audited")
    try:
        with Archive.open(args.archive) as archive:
            return _ACTIONS[args.action](archive, args)
    except (ArchiveError, LogError) as e:
        print(f"custody archive: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except (StoreError, ProvisionError, ProtocolError, RetentionConfigError, OSError) as e:
        return _usage(str(e))


def _usage(message: str) -> int:
    print(f"custody archive: {message}", file=sys.stderr)
    return EXIT_USAGE


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row_dict(row: RecordingRow) -> dict:
    d = dict(row.__dict__)
    d["late"] = row.late
    return d


def _search(archive: Archive, args: argparse.Namespace) -> int:
    q = Query(text=args.text, case=args.case, party=args.party, officer=args.officer,
              device=args.device, category=args.category, recorded_from_ns=args.recorded_from,
              recorded_to_ns=args.recorded_to, stored_from_ns=args.stored_from,
              stored_to_ns=args.stored_to, not_classified=args.not_classified, late=args.late,
              limit=args.limit)
    rows = archive.search(q, args.who)
    if args.json:
        print(json.dumps([_row_dict(r) for r in rows], indent=2))
        return EXIT_OK
    for r in rows:
        flags = " LATE" if r.late else ""
        flags += " DELETED" if r.deleted else ""
        print(f"{r.id:<20} {r.officer:<10} {r.category:<10} recorded {_utc(r.start_utc_ns)}  "
              f"stored {_utc(r.stored_utc_ns)}  {r.segments} segments {r.seconds:.0f} s{flags}")
    print(f"{len(rows)} recordings")
    return EXIT_OK


def _show(archive: Archive, args: argparse.Namespace) -> int:
    view: RecordingView = archive.view(args.recording, args.who)
    if args.json:
        print(json.dumps({
            "recording": _row_dict(view.row), "on_hold": view.on_hold,
            "retention_until_utc_ns": view.retention_until_ns,
            "annotations": [a.__dict__ for a in view.annotations],
            "entries": [s.entry.to_dict() for s in view.entries],
            "audit": [r.__dict__ for r in view.audit]}, indent=2))
        return EXIT_OK
    r = view.row
    print(f"recording {r.id}: officer {r.officer}, category {r.category} (device said "
          f"{r.device_category})")
    print(f"  recorded {_utc(r.start_utc_ns)} .. {_utc(r.stop_utc_ns)}, stored "
          f"{_utc(r.stored_utc_ns)}{' (LATE)' if r.late else ''}")
    print(f"  {r.segments} segments, {r.seconds:.1f} s; retention until "
          f"{_utc(view.retention_until_ns) if view.retention_until_ns else 'not known yet'}"
          f"{'; ON HOLD' if view.on_hold else ''}{'; MEDIA DELETED' if r.deleted else ''}")
    for a in view.annotations:
        print(f"  {a.kind}: {a.value}  ({a.who}, {_utc(a.utc_ns)})")
    print("  entries:")
    for s in view.entries:
        print(f"    {s.entry.seq:>6} {_utc(s.entry.time.utc_ns)} {s.entry.kind}")
    print("  audit:")
    for rec in view.audit:
        print(f"    {_utc(rec.utc_ns)} {rec.who} {rec.action}")
    return EXIT_OK


def _annotate(archive: Archive, args: argparse.Namespace) -> int:
    if args.paper_files_until is not None:
        archive.set_paper_files_until(args.recording, args.paper_files_until, args.who)
        print(f"{args.recording}: paper files kept until {_utc(args.paper_files_until)}")
        return EXIT_OK
    for kind in ("case", "party", "category", "note"):
        value = getattr(args, kind)
        if value is not None:
            archive.annotate(args.recording, kind, value, args.who)
            print(f"{args.recording}: {kind} {value!r} recorded")
    return EXIT_OK


def _hold(archive: Archive, args: argparse.Namespace) -> int:
    archive.hold(args.recording, args.who, args.why)
    print(f"{args.recording}: on legal hold")
    return EXIT_OK


def _release(archive: Archive, args: argparse.Namespace) -> int:
    archive.release(args.recording, args.who, args.why)
    print(f"{args.recording}: hold released")
    return EXIT_OK


def _export(archive: Archive, args: argparse.Namespace) -> int:
    secret = ArchiveSecretKey.from_pem(args.key.read_bytes())
    result = export_recording(archive, args.recording, args.out, args.who, secret, args.clip)
    print(f"evidence package {result.out}: {len(result.entries)} entries, "
          f"{len(result.media)} media files; check it with: custody verify {result.out}")
    return EXIT_OK


def _delete(archive: Archive, args: argparse.Namespace) -> int:
    tombstone = archive.delete(args.recording, args.who, args.why, load_signing_key(args.key))
    print(f"{args.recording}: {len(tombstone.media)} media files deleted; tombstone kept")
    return EXIT_OK


def _ingest(archive: Archive, args: argparse.Namespace) -> int:
    key = load_signing_key(args.key) if args.key else None
    for device in args.devices or archive.store.devices():
        ids = archive.ingest(device, args.who, key)
        print(f"{device}: {len(ids)} recordings indexed"
              + ("; checkpoint signed" if key else ""))
    return EXIT_OK


def _user(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    Users(args.archive / USERS_NAME).add(args.name, args.role, password)
    print(f"user {args.name} ({args.role}) added to {args.archive / USERS_NAME}")
    return EXIT_OK


def _web(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from daemon.archive.web import WebView, serve

    secret = ArchiveSecretKey.from_pem(args.key.read_bytes()) if args.key else None
    users = Users(args.archive / USERS_NAME)
    if not users.entries:
        return _usage(f"no users in {args.archive / USERS_NAME}: add one with "
                      "custody archive user NAME --role ROLE")

    async def main() -> None:
        with Archive.open(args.archive) as archive, tempfile.TemporaryDirectory() as cache:
            runner = await serve(WebView(archive, users, secret, Path(cache)), args.host,
                                 args.port)
            print(f"archive web view on http://{args.host}:{args.port}/", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

    asyncio.run(main())
    return EXIT_OK


_ACTIONS = {"search": _search, "show": _show, "annotate": _annotate, "hold": _hold,
            "release": _release, "export": _export, "delete": _delete, "ingest": _ingest}
