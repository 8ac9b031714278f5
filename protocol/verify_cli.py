"""``custody verify PATH``: check a device store or an archive.

Exit codes: 0 intact and every interruption explained; 1 integrity broken;
2 usage error or unreadable input; 3 intact but some interruption lacks a
voice note.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from protocol.store_reader import StoreError, find_stores, find_trust, read_store
from protocol.verify import (
    BROKEN,
    INTACT,
    INTACT_UNEXPLAINED_GAPS,
    ContinuityReport,
    VerificationPolicy,
    verify,
)

EXIT_INTACT, EXIT_BROKEN, EXIT_USAGE, EXIT_UNEXPLAINED = 0, 1, 2, 3
EXIT_CODES = {INTACT: EXIT_INTACT, BROKEN: EXIT_BROKEN, INTACT_UNEXPLAINED_GAPS: EXIT_UNEXPLAINED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a device store or an archive")
    parser.add_argument("--trust", type=Path, help="the unit's trust file (default: trust.json "
                        "in or beside PATH)")
    parser.add_argument("--receipt", type=Path, action="append", default=[],
                        help="a dock-signed receipt kept elsewhere (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report(s) as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        trust = find_trust(args.path, args.trust)
        stores = find_stores(args.path)
        extra = []
        for p in args.receipt:
            try:
                extra.append(json.loads(p.read_bytes()))
            except (OSError, ValueError) as e:
                raise StoreError(f"{p}: unreadable receipt ({e})") from e
        reports = []
        for store in stores:
            contents = read_store(store, _progress_bar(store) if sys.stderr.isatty() else None)
            if sys.stderr.isatty():
                sys.stderr.write("\r\x1b[K")
            policy = VerificationPolicy(receipts=[*contents.receipts, *extra])
            reports.append((store, verify(contents.ledger, contents.media, trust, policy)))
    except StoreError as e:
        print(f"custody verify: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        out = [dict(store=str(s), **r.to_dict()) for s, r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for store, report in reports:
            print(render(store, report))
    return max(EXIT_CODES[r.verdict] for _, r in reports) if reports else EXIT_USAGE


def _progress_bar(store: Path):
    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\rhashing {store.name}: {pct:3d}% of {total / 1e6:.0f} MB")
        sys.stderr.flush()

    return show


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


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
    if report.interruptions:
        lines.append("interruptions:")
        lines += _table(
            ["seq", "reason", "detected by", "cut at (UTC)", "resumed by", "voice note"],
            [[str(i.seq), i.reason, i.detected_by, _utc(i.cut_utc_ns), str(i.resumed_by or "-"),
              str(i.voice_note) if i.explained else "MISSING"] for i in report.interruptions])
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
        lines += _table(["seq", "severity", "kind", "message"],
                        [[str(f.seq) if f.seq is not None else "-", f.severity, f.kind,
                          f.message] for f in report.findings])
    return "\n".join(lines)
