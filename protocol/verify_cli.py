"""``custody verify PATH``: check a device store or an archive.

Exit codes: 0 intact and every interruption explained; 1 integrity broken;
2 usage error or unreadable input; 3 intact but some interruption lacks a
voice note.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from protocol.archive_check import ArchiveReport, check_archive
from protocol.archive_check_cli import check_archived_store
from protocol.package_check_cli import is_package, read_and_check
from protocol.package_check_cli import render as render_package
from protocol.report import worst
from protocol.store_reader import (
    Location,
    StoreError,
    TrustSource,
    find_trust_source,
    locate,
    read_receipt_file,
    read_store,
)
from protocol.verify import (
    BROKEN,
    INTACT,
    INTACT_UNEXPLAINED_GAPS,
    ContinuityReport,
    KeptReceipt,
    VerificationPolicy,
    verify,
)

EXIT_INTACT, EXIT_BROKEN, EXIT_USAGE, EXIT_UNEXPLAINED = 0, 1, 2, 3
EXIT_CODES = {INTACT: EXIT_INTACT, BROKEN: EXIT_BROKEN, INTACT_UNEXPLAINED_GAPS: EXIT_UNEXPLAINED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a device store or an archive")
    parser.add_argument("--trust", type=Path, help="the unit's trust file (default: trust.json "
                        "beside PATH — never one inside a store)")
    parser.add_argument("--receipt", type=Path, action="append", default=[],
                        help="a dock-signed receipt kept elsewhere (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report(s) as JSON")


def _verify_store(store: Path, source: TrustSource, extra: list[KeptReceipt],
                  location: Location) -> ContinuityReport:
    tty = sys.stderr.isatty()
    contents = read_store(store, _progress_bar(store) if tty else None,
                          follow=not location.archive)
    if tty:
        sys.stderr.write("\r\x1b[K")
    policy = VerificationPolicy(receipts=[*contents.receipts, *extra])
    report = verify(contents.ledger, contents.media, source.trust, policy, contents.findings)
    if location.archive:  # its log's checkpoints and cosignatures, tombstones
        check_archived_store(location.path, source.trust, contents, report)
    report.trust_file = source.describe()
    return report


def run(args: argparse.Namespace) -> int:
    # JSON strings may hold lone surrogates ("\\ud800"): shown escaped, never a crash.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if is_package(args.path):  # an evidence package (docs/archive.md)
        return run_package(args)
    try:
        source = find_trust_source(args.path, args.trust)
        location = locate(args.path)
        extra = [read_receipt_file(p) for p in args.receipt]
        reports = [(store, _verify_store(store, source, extra, location))
                   for store in location.stores]
    except StoreError as e:
        print(f"custody verify: {e}", file=sys.stderr)
        return EXIT_USAGE
    if location.archive:
        archive = check_archive(str(args.path), [(p.name, r) for p, r in reports],
                                location.findings)
        archive.trust_file = source.describe()
        if not reports and not archive.findings:
            print(f"custody verify: {args.path}: an archive with no store", file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(archive.to_dict(), indent=2) if args.json else render_archive(archive))
        return EXIT_CODES[archive.verdict]
    [(store, report)] = reports
    if args.json:
        print(json.dumps(dict(store=str(store), **report.to_dict()), indent=2))
    else:
        print(render(store, report))
    return EXIT_CODES[worst([report.verdict])]


def run_package(args: argparse.Namespace) -> int:
    try:
        report = read_and_check(args.path, args.trust)
    except StoreError as e:
        print(f"custody verify: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(dict(store=str(args.path), **asdict(report)), indent=2))
    else:
        print(render_package(args.path, report))
    return EXIT_CODES[report.verdict]


def _progress_bar(store: Path):
    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\rhashing {store.name}: {pct:3d}% of {total / 1e6:.0f} MB")
        sys.stderr.flush()

    return show


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds: show the number
        return f"{ns} ns"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def render(store: Path, report: ContinuityReport) -> str:
    """The short human report."""
    lines = [
        f"{store}: device {report.device or '?'} of unit {report.unit}",
        f"verdict: {report.verdict.upper()}  ({report.entries} entries, head "
        f"{(report.head or '-')[:16]})",
    ]
    if report.trust_file:
        lines.append(f"trust file: {report.trust_file['path']}  sha256 "
                     f"{report.trust_file['sha256']}")
    if report.recordings:
        lines.append("recordings:")
        lines += _table(
            ["rec", "officer", "category", "start (UTC)", "stop (UTC)", "captured", "segs",
             "spans"],
            [[str(r.recording), r.officer, r.category, _utc(r.start_utc_ns), _utc(r.stop_utc_ns),
              f"{r.duration_s:.1f} s", str(r.segments), str(r.spans)]
             for r in report.recordings])
    if report.gaps:
        lines.append("gaps:")
        lines += _table(
            ["rec", "from (UTC)", "length", "declared", "reason", "voice note"],
            [[str(g.recording), _utc(g.start_utc_ns), f"{g.seconds:.3f} s",
              "yes" if g.declared else "NO", g.reason or "-",
              str(g.voice_note) if g.explained else "MISSING"] for g in report.gaps])
    if report.audio_gaps:  # sound missing inside a segment (where in it, the ledger cannot say)
        lines.append("audio gaps:")
        lines += _table(
            ["rec", "segment", "from (UTC)", "missing", "declared", "by"],
            [[str(g.recording), str(g.seq), _utc(g.start_utc_ns), f"{g.seconds:.3f} s",
              "yes" if g.declared else "NO", str(g.interruption or "-")]
             for g in report.audio_gaps])
    if report.interruptions:
        lines.append("interruptions:")
        lines += _table(
            ["seq", "reason", "detected by", "cut at (UTC)", "resumed by", "voice note"],
            [[str(i.seq), i.reason, i.detected_by, _utc(i.cut_utc_ns), str(i.resumed_by or "-"),
              str(i.voice_note) if i.explained else "MISSING"] for i in report.interruptions])
    if report.between_recordings:
        lines.append("between recordings:")
        lines += _table(["after", "before", "time", "clock"],
                        [[str(b["after"]), str(b["before"]), f"{b['seconds']:.3f} s",
                          b["clock"]] for b in report.between_recordings])
    if report.time_syncs:
        lines.append("time_sync steps:")
        lines += _table(["seq", "from (UTC)", "to (UTC)", "step", "source", "statement"],
                        [[str(t.seq), _utc(t.old_utc_ns), _utc(t.new_utc_ns),
                          f"{t.step_s:+.3f} s", t.source,
                          t.statement + (f" ({t.dock})" if t.dock else "")]
                         for t in report.time_syncs])
    if len(report.clock_sources) > 1 or len(report.boots) > 1:
        lines.append("clock sources: " + ", ".join(
            f"{c['to']} from {c['seq']}" for c in report.clock_sources))
        lines.append("boots: " + ", ".join(f"{b['boot_id'][:12]} from {b['seq']}"
                                           for b in report.boots))
    for name in ("exemptions", "markers", "overdue"):
        items = getattr(report, name)
        if items:
            lines.append(f"{name}: " + ", ".join(
                f"{x.get('reason') or x.get('phase') or 'recording ' + str(x.get('recording'))}"
                f" at {_utc(x['utc_ns'])}" for x in items))
    if report.console_actions:
        lines.append("console actions:")
        lines += _table(["seq", "time (UTC)", "technician", "command", "result"],
                        [[str(a["seq"]), _utc(a["utc_ns"]), a["technician"], a["command"],
                          a["result"]] for a in report.console_actions])
    if report.findings:
        lines.append("findings:")
        lines += _findings_table(report.findings)
    return "\n".join(lines)


def _findings_table(findings: list) -> list[str]:
    return _table(["seq", "severity", "kind", "where", "message"],
                  [[str(f.seq) if f.seq is not None else "-", f.severity, f.kind,
                    (f.file or "-") + (f":{f.line}" if f.line else ""), f.message]
                   for f in findings])


def render_archive(archive: ArchiveReport) -> str:
    lines = [f"{archive.path}: archive of {len(archive.stores)} store(s)",
             f"verdict: {archive.verdict.upper()}"]
    if archive.trust_file:
        lines.append(f"trust file: {archive.trust_file['path']}  sha256 "
                     f"{archive.trust_file['sha256']}")
    if archive.findings:
        lines.append("archive findings:")
        lines += _findings_table(archive.findings)
    for name, report in archive.stores:
        lines += ["", render(Path(archive.path) / "devices" / name, report)]
    return "\n".join(lines)
