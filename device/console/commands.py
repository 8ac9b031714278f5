"""The console's commands, console side: parse, ask the recorder or read the store, print.

Each command prints its lines and returns the result line (``OK ...``); a refusal
raises :class:`CommandError` (or the recorder's ``ControlError``), which becomes
``ERR <reason>``. Commands marked ``changes`` are carried out and signed by the
recorder (``device/console/maintenance.py``), so they need it running; the rest
read the store, the trust file and the device log and work while it is down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.console.devicelog import last_lines
from device.console.selftest import run_selftest
from device.console.session import CommandError, ConsoleSession, Logout
from device.console.terminal import LineRejected
from device.control import ControlError
from device.ledger_state import LedgerState
from protocol.entries import FORMAT_VERSION
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, StoreError, read_store, read_trust
from protocol.verify import INTACT, VerificationPolicy, verify

log = logging.getLogger("custody.console")

MAX_COUNT = 1000
PASTE_LINE, PASTE_TOTAL = 64 * 1024, 256 * 1024


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    details: str
    run: Callable[[ConsoleSession, list[str], str], str]
    changes: bool = False


def run_line(session: ConsoleSession, line: str) -> str:
    """Run one command line; the result line to print (``OK ...`` or ``ERR ...``)."""
    words = line.split()
    command = COMMANDS.get(words[0].lower())
    if command is None:
        return f"ERR unknown command {words[0][:32]!r}; 'help' lists the commands"
    try:
        message = command.run(session, words[1:], line)
        result = f"OK {message}".rstrip()
    except (CommandError, ControlError) as e:
        result = f"ERR {e}"
    except LineRejected as e:  # inside a command's question
        result = f"ERR {e}"
    except Logout:
        raise
    except Exception as e:  # a bug must not end the console
        log.exception("console command %r failed", line)
        result = f"ERR internal error: {type(e).__name__}: {e}"
    log.info("%s: %r -> %s", session.technician, line, result)
    return result


# --- helpers ---------------------------------------------------------------------------------


def _count(args: list[str], default: int) -> int:
    if not args:
        return default
    if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= MAX_COUNT:
        raise CommandError(f"N must be a whole number from 1 to {MAX_COUNT}")
    return int(args[0])


def _no_args(args: list[str], name: str) -> None:
    if args:
        raise CommandError(f"{name} takes no arguments; see 'help {name}'")


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _table(session: ConsoleSession, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        session.out(f"{key:<{width}}  {value}")


def _store(session: ConsoleSession) -> Path:
    if session.config.store is None:
        raise CommandError("no store is configured (setting store)")
    return session.config.store


def _entries(session: ConsoleSession) -> list:
    path = _store(session) / LEDGER_NAME
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror}") from e
    out = []
    for line in split_lines(data):
        try:
            out.append(parse_line(line))
        except ProtocolError as e:
            out.append(e)
    return out


def _recorder_status(session: ConsoleSession) -> tuple[dict | None, str]:
    try:
        return session.call("console_status"), ""
    except ControlError as e:
        return None, str(e)


def _refuse_without_recorder(session: ConsoleSession, what: str) -> None:
    status, why = _recorder_status(session)
    if status is None:
        raise CommandError(f"the recorder is not running, and {what} must be signed into its "
                           f"ledger ({why})")


# --- commands ----------------------------------------------------------------------------------


def cmd_help(session: ConsoleSession, args: list[str], line: str) -> str:
    if args:
        command = COMMANDS.get(args[0].lower())
        if command is None:
            raise CommandError(f"no command {args[0][:32]!r}; 'help' lists them")
        session.out(f"usage: {command.usage}")
        session.out(command.summary)
        for text in command.details.splitlines():
            session.out(f"  {text}")
        if command.changes:
            session.out("  (a change: needs the recorder; signed into the ledger as "
                        "console_action)")
        return ""
    width = max(len(c.usage) for c in COMMANDS.values())
    for command in COMMANDS.values():
        if command.name in ("exit", "quit"):
            continue
        mark = "*" if command.changes else " "
        session.out(f"{mark} {command.usage:<{width}}  {command.summary}")
    session.out("* changes the device: signed into the ledger. 'help CMD' for more.")
    return ""


def cmd_logout(session: ConsoleSession, args: list[str], line: str) -> str:
    raise Logout


def cmd_status(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "status")
    status, why = _recorder_status(session)
    store = _store(session)
    state = LedgerState.read(store)
    entries = [e for e in _entries(session) if not isinstance(e, Exception)]
    rows: list[tuple[str, str]] = [("device", session.config.device_id)]
    if status is None:
        rows.append(("recorder", f"NOT RUNNING ({why})"))
    else:
        text = status["state"]
        if status.get("recording") is not None:
            text += f" (recording {status['recording']})"
        rows.append(("recorder", text))
    rows.append(("officer", state.officer or "nobody assigned"))
    if status is not None and "battery" in status:
        rows.append(("battery", status["battery"]["text"]))
    if status is not None and "storage" in status:
        st = status["storage"]
        rows.append(("storage", f"{_size(st['free_bytes'])} free of {_size(st['total_bytes'])}"
                     f" (reserve {_size(st['reserve_bytes'])}){' LOW' if st['low'] else ''}"))
    else:
        vfs = os.statvfs(store)
        rows.append(("storage", f"{_size(vfs.f_bavail * vfs.f_frsize)} free of "
                     f"{_size(vfs.f_blocks * vfs.f_frsize)}"))
    if status is not None:
        clock = status["clock"]
        source = "never set" if clock["source"] == "never_set" else f"set from {clock['source']}"
        rows.append(("clock", f"{_utc(clock['utc_ns'])} ({source}; "
                     f"{'synced to a reference' if clock['synced'] else 'NOT synced'})"))
    else:
        rows.append(("clock", f"{_utc(int(datetime.now(UTC).timestamp() * 1e9))} "
                     "(system clock; sync state: ask the recorder)"))
    waiting = state.unarchived_recordings()
    if waiting:
        now_ns = status["clock"]["utc_ns"] if status else int(datetime.now(UTC).timestamp() * 1e9)
        hours = (now_ns - waiting[0].start_utc_ns) / 3.6e12
        rows.append(("not offloaded", f"{len(waiting)} recordings, the oldest {hours:.1f} h old"
                     f" (recording {waiting[0].seq})"))
    else:
        rows.append(("not offloaded", "nothing"))
    receipts = [e for e in entries if e.entry.kind == "offload_receipt"]
    docked = "" if status is None else (" (docked now)" if status["docked"] else "")
    rows.append(("last docking", (f"{_utc(receipts[-1].entry.time.utc_ns)} (receipt seq "
                                  f"{receipts[-1].entry.seq})" if receipts else "never") + docked))
    if status is not None and status.get("unexplained"):
        rows.append(("unexplained", "interruptions " + ", ".join(map(str, status["unexplained"]))))
    rows.append(("ledger", f"{len(entries)} entries"))
    _table(session, rows)
    return ""


def cmd_log(session: ConsoleSession, args: list[str], line: str) -> str:
    count = _count(args, 20)
    path = session.config.log_file
    try:
        lines = last_lines(path, count)
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror}") from e
    for text in lines:
        session.out(text[:300])
    return f"{len(lines)} lines of {path}"


def _describe(body: dict[str, Any], kind: str) -> str:
    match kind:
        case "segment":
            return (f"recording {body['recording']} #{body['index']} span {body['span']} "
                    f"{body['media']['file']} {body['frames']} frames")
        case "console_action":
            return f"{body['technician']}: {body['command']!r} -> {body['result']}"
        case "assigned":
            return f"officer {body['officer'] or '(none)'} by {body.get('by') or '?'}"
        case "time_sync":
            return (f"{_utc(body['old_utc_ns'])} -> {_utc(body['new_utc_ns'])} "
                    f"({body['source']})")
        case "offload_receipt":
            return "receipt from a dock"
    text = " ".join(f"{k}={v}" for k, v in body.items() if not isinstance(v, dict | list))
    return text[:160]


def cmd_ledger(session: ConsoleSession, args: list[str], line: str) -> str:
    if args and args[0].lower() == "verify":
        _no_args(args[1:], "ledger verify")
        return _ledger_verify(session)
    count = _count(args, 10)
    entries = _entries(session)
    for item in entries[-count:]:
        if isinstance(item, Exception):
            session.out(f"  ?  unreadable entry: {item}")
            continue
        e = item.entry
        session.out(f"{e.seq:>5}  {_utc(e.time.utc_ns)}  {e.kind:<15} "
                    f"{_describe(e.body.to_dict(), e.kind)}")
    return f"{min(count, len(entries))} of {len(entries)} entries"


def _ledger_verify(session: ConsoleSession) -> str:
    store = _store(session)
    try:
        trust = read_trust(session.config.trust_file)  # type: ignore[arg-type]
        contents = read_store(store)
    except (StoreError, TypeError) as e:
        raise CommandError(str(e)) from e
    report = verify(contents.ledger, contents.media, trust,
                    VerificationPolicy(receipts=contents.receipts))
    session.out(f"verdict   {report.verdict}")
    session.out(f"entries   {report.entries}, head {(report.head or '-')[:16]}")
    session.out(f"recordings {len(report.recordings)}, gaps {len(report.gaps)}, "
                f"interruptions {len(report.interruptions)}")
    for finding in report.findings[:10]:
        session.out(f"  {finding.severity:<11} seq {finding.seq}: {finding.kind}: "
                    f"{finding.message}")
    if len(report.findings) > 10:
        session.out(f"  ... {len(report.findings) - 10} more ('custody verify' lists all)")
    if report.verdict != INTACT:
        raise CommandError(f"ledger {report.verdict}: {len(report.errors)} errors, "
                           f"{len(report.findings)} findings")
    return "ledger intact"


def cmd_clock(session: ConsoleSession, args: list[str], line: str) -> str:
    if not args:
        status, why = _recorder_status(session)
        if status is None:
            raise CommandError(f"the recorder keeps the clock's sync state and is not "
                               f"running ({why})")
        clock = status["clock"]
        session.out(f"time    {_utc(clock['utc_ns'])}")
        session.out(f"source  {clock['source']}")
        session.out(f"synced  {'yes' if clock['synced'] else 'no'}")
        return ""
    if args[0].lower() != "set" or len(args) != 2:
        raise CommandError("usage: clock set 2026-12-01T08:30:00Z")
    try:
        when = datetime.fromisoformat(args[1])
    except ValueError:
        raise CommandError(f"{args[1]!r} is not an ISO-8601 time like 2026-12-01T08:30:00Z") \
            from None
    if when.tzinfo is None:
        raise CommandError("give the time zone: Z for UTC, or an offset like +08:00")
    _refuse_without_recorder(session, "setting the clock")
    reply = session.audited("console_clock_set", line, utc_ns=int(when.timestamp() * 10**9))
    return f"{reply['result']} (console_action seq {reply['seq']})"


def cmd_assign(session: ConsoleSession, args: list[str], line: str) -> str:
    if len(args) != 1:
        raise CommandError("usage: assign OFFICER_ID")
    _refuse_without_recorder(session, "an assignment")
    reply = session.audited("console_assign", line, officer=args[0])
    return f"{reply['result']} (console_action seq {reply['seq']})"


def device_public_key(session: ConsoleSession) -> tuple[str | None, str]:
    """(public key hex, problem) from the device's key file."""
    path = session.config.key_file
    if path is None:
        return None, "no key_file configured"
    # The key on the card is wrapped by the board's OTP secret (device/key_custody.py):
    # the check is that it unwraps on this board and is the one the trust file lists.
    from device.key_custody import KeyCustodyError, load_signing_key
    from hardware.factory import factory_class

    try:
        otp = factory_class(session.config.hardware).otp_secret(session.config.otp_state_dir)
        key = load_signing_key(Path(path), otp, session.config.device_id)
    except (KeyCustodyError, ValueError) as e:
        return None, str(e)
    return key.public_hex, ""


def cmd_keys(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "keys")
    public, problem = device_public_key(session)
    try:
        data = Path(session.config.trust_file).read_bytes()  # type: ignore[arg-type]
        trust = read_trust(session.config.trust_file)  # type: ignore[arg-type]
    except (StoreError, OSError, TypeError) as e:
        raise CommandError(f"trust file: {e}") from e
    keyid = hashlib.sha256(bytes.fromhex(public)).hexdigest() if public else None
    listed = trust.device_keys(session.config.device_id)
    session.out(f"device key   {public or 'MISSING: ' + problem}")
    if keyid:
        session.out(f"  key id     {keyid}")
        trusted = "yes" if keyid in listed else "NO: not listed for this device"
        session.out(f"  in trust   {trusted}")
    session.out(f"trust file   sha256 {hashlib.sha256(data).hexdigest()} (unit {trust.unit})")
    session.out(f"archive enc  {trust.archive_encryption_key}")
    for k in trust.archive.keys:
        session.out(f"archive sig  {k}")
    for name, holder in sorted(trust.docks.items()):
        for k in holder.keys:
            session.out(f"dock {name:<7} {k}")
    if not keyid or keyid not in listed:
        raise CommandError("the device key is missing or not in the trust file")
    return ""


def cmd_enroll(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "enroll")
    _refuse_without_recorder(session, "a trust-file update")
    session.out("Paste the signed trust update (custody console --sign-trust-update), "
                "then a line with a single '.':")
    lines, total = [], 0
    while True:
        text = session.ask("", max_line=PASTE_LINE, echo=False)  # not echoed back: it is long
        if text.strip() == ".":
            break
        total += len(text)
        if total > PASTE_TOTAL:
            raise CommandError(f"the update is larger than {PASTE_TOTAL // 1024} KiB")
        lines.append(text)
    session.out(f"received {len(lines)} lines, {total} characters")
    try:
        update = json.loads("\n".join(lines))
    except ValueError as e:
        raise CommandError(f"not JSON: {e}") from e
    summary = session.call("console_enroll", technician=session.technician, command="enroll",
                           update=update)
    session.out(f"unit         {summary['unit']}")
    session.out(f"docks        {', '.join(summary['docks']) or '-'}")
    session.out(f"added        {', '.join(summary['added_docks']) or '-'}")
    session.out(f"removed      {', '.join(summary['removed_docks']) or '-'}")
    session.out(f"fingerprint  {summary['fingerprint']}")
    typed = session.ask("Compare with the fingerprint the unit published; type its first 16 "
                        "hex digits to install it: ").strip().lower()
    confirm = summary["fingerprint"] if typed == summary["fingerprint"][:16] else "not confirmed"
    reply = session.call("console_enroll", technician=session.technician,
                         command=f"enroll {summary['fingerprint'][:16]}", update=update,
                         confirm=confirm)
    return f"{reply['result']} (console_action seq {reply['seq']})"


def cmd_storage(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "storage")
    store = _store(session)
    vfs = os.statvfs(store)
    state = LedgerState.read(store)
    media = store / MEDIA_DIR
    files = [p for p in media.iterdir() if p.is_file()] if media.is_dir() else []
    stored = sum(p.stat().st_size for p in files)
    waiting = [f for f, h in state.sealed.items() if state.archived.get(f) != h]
    _table(session, [
        ("store", str(store)),
        ("volume", f"{_size(vfs.f_bavail * vfs.f_frsize)} free of "
                   f"{_size(vfs.f_blocks * vfs.f_frsize)}"),
        ("media", f"{len(files)} files, {_size(stored)}"),
        ("not offloaded", f"{len(waiting)} files"),
        ("offloaded", f"{len(state.archived)} files (freed only against dock receipts)"),
    ])
    return ""


def cmd_version(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "version")
    c = session.config
    _table(session, [("software", f"custody {session.version}"),
                     ("format", f"ledger format {FORMAT_VERSION}"),
                     ("python", platform.python_version()),
                     ("system", f"{platform.system()} {platform.release()} {platform.machine()}"),
                     ("hardware", f"{c.hardware}, board {c.board}"),
                     ("device", c.device_id)])
    return ""


def _power(session: ConsoleSession, args: list[str], line: str, which: str, setting: str) -> str:
    if args not in ([], ["--force"]):
        raise CommandError(f"usage: {which} [--force]")
    _refuse_without_recorder(session, f"a {which}")
    reply = session.audited("console_power", line, force=args == ["--force"])
    argv = shlex.split(setting)
    session.out(f"{reply['result']}; running {' '.join(argv)}")
    runner = session.run_command or (lambda a: subprocess.run(a, timeout=60).returncode)
    try:
        code = runner(argv)
    except (OSError, subprocess.SubprocessError) as e:
        raise CommandError(f"{argv[0]}: {e}") from e
    if code != 0:
        raise CommandError(f"{' '.join(argv)} exited with {code}")
    return f"{which} requested"


def cmd_reboot(session: ConsoleSession, args: list[str], line: str) -> str:
    return _power(session, args, line, "reboot", session.config.reboot_command)


def cmd_shutdown(session: ConsoleSession, args: list[str], line: str) -> str:
    return _power(session, args, line, "shutdown", session.config.poweroff_command)


def cmd_factory_reset(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "factory-reset")
    _refuse_without_recorder(session, "a factory reset")
    typed = session.ask(f"Type the device id ({session.config.device_id}) to confirm: ").strip()
    if typed != session.config.device_id:
        raise CommandError("not confirmed: that is not this device's id")
    reply = session.audited("console_factory_reset", line)
    session.throttle.succeeded()
    return f"{reply['result']} (console_action seq {reply['seq']})"


def cmd_selftest(session: ConsoleSession, args: list[str], line: str) -> str:
    _no_args(args, "selftest")
    return run_selftest(session, device_public_key(session))


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("help", "help [CMD]", "list the commands, or explain one", "", cmd_help),
    Command("status", "status", "recording state, battery, storage, clock, officer, offload",
            "Works while the recorder is down (then from the store).", cmd_status),
    Command("selftest", "selftest", "check every part of the device, one line each",
            "Camera frame, microphone level, speaker prompt, each button (press within\n"
            "10 s), LEDs/buzzer/vibration, battery gauge, RTC, storage write/read, keys\n"
            "present and matching the trust file. The summary is signed into the ledger.",
            cmd_selftest, changes=True),
    Command("log", "log [N]", "the last N lines of the device's log (default 20)", "",
            cmd_log),
    Command("ledger", "ledger [N] | ledger verify", "the last N ledger entries (default 10), "
            "or verify the whole store", "'ledger verify' checks every signature, the chain\n"
            "and every media file against the trust file, as 'custody verify' does.",
            cmd_ledger),
    Command("clock", "clock | clock set ISO-8601", "show the clock, or set it",
            "clock set 2026-12-01T08:30:00Z (a time zone is required). Refused while\n"
            "recording. Signed as time_sync (old and new time) and console_action.",
            cmd_clock, changes=True),
    Command("assign", "assign OFFICER_ID", "assign the device to an officer (Art. 6)",
            "Refused while recording. Signed as assigned and console_action.", cmd_assign,
            changes=True),
    Command("keys", "keys", "the device's public key and the trusted dock and archive keys",
            "", cmd_keys),
    Command("enroll", "enroll", "install a signed trust-file update, confirmed by fingerprint",
            "Paste the update made by 'custody console --sign-trust-update KEYS' and end\n"
            "with a line holding a single '.'. It must be signed by the unit's archive key.",
            cmd_enroll, changes=True),
    Command("storage", "storage", "free space, media files, what is not offloaded", "",
            cmd_storage),
    Command("version", "version", "software and format versions", "", cmd_version),
    Command("reboot", "reboot [--force]", "restart the device",
            "Refused while recording unless --force, which stops and seals the recording\n"
            "first.", cmd_reboot, changes=True),
    Command("shutdown", "shutdown [--force]", "power the device off",
            "Refused while recording unless --force, which stops and seals the recording\n"
            "first.", cmd_shutdown, changes=True),
    Command("factory-reset", "factory-reset", "unassign the device for re-issue",
            "Refused while any media is not offloaded; asks for the device id. The ledger\n"
            "and the keys stay: no command deletes or edits evidence.", cmd_factory_reset,
            changes=True),
    Command("logout", "logout", "end the session (also: exit, quit, Ctrl-D)", "", cmd_logout),
    Command("exit", "exit", "end the session", "", cmd_logout),
    Command("quit", "quit", "end the session", "", cmd_logout),
)}
