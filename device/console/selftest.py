"""The console's ``selftest``: one line per check, then a summary signed into the ledger.

The hardware checks run in the recorder (it owns the devices, see
``maintenance.py``); storage and keys are checked here, so they work while the
recorder is down. A check that cannot run (recorder down, a device missing)
fails, naming why: a self-test never passes what it did not see.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from typing import TYPE_CHECKING

from device.control import ControlError
from protocol.store_reader import StoreError, read_trust

if TYPE_CHECKING:
    from device.console.session import ConsoleSession

HARDWARE_CHECKS = (("camera", "camera frame"), ("microphone", "microphone level"),
                   ("speaker", "speaker prompt"))
AFTER_BUTTONS = (("indicators", "LEDs/buzzer/vibration"), ("battery", "battery gauge"),
                 ("rtc", "RTC"))
BUTTONS = ("record", "marker", "function")
BUTTON_SECONDS = 10.0
PROBE_BYTES = 1 << 20


def run_selftest(session: ConsoleSession, device_key: tuple[str | None, str]) -> str:
    from device.console.session import CommandError

    results: list[tuple[str, bool]] = []

    def line(label: str, passed: bool, detail: str) -> None:
        results.append((label, passed))
        session.out(f"{label:<22} {'PASS' if passed else 'FAIL'}  {detail}")

    try:
        session.call("console_status")
        recorder_up, why = True, ""
    except ControlError as e:
        recorder_up, why = False, f"recorder not running ({e})"

    def hardware(name: str, label: str) -> None:
        if not recorder_up:
            line(label, False, why)
            return
        try:
            reply = session.call("console_check", name=name)
            line(label, reply["passed"], reply["detail"])
        except ControlError as e:
            line(label, False, str(e))

    for name, label in HARDWARE_CHECKS:
        hardware(name, label)
    for button in BUTTONS:
        label = f"{button} button"
        if not recorder_up:
            line(label, False, why)
            continue
        session.out(f"press the {button.upper()} button within {BUTTON_SECONDS:g} s ...")
        try:
            reply = session.call("console_button", button=button, timeout=BUTTON_SECONDS)
            line(label, reply["passed"], reply["detail"])
        except ControlError as e:
            line(label, False, str(e))
    for name, label in AFTER_BUTTONS:
        hardware(name, label)
    line("storage write/read", *_storage(session))
    line("keys", *_keys(session, device_key))

    failed = [label for label, passed in results if not passed]
    summary = (f"{len(results) - len(failed)} of {len(results)} checks passed"
               + (f"; failed: {', '.join(failed)}" if failed else ""))
    session.out(f"selftest: {summary}")
    if recorder_up:
        session.audited("console_action", "selftest",
                        result=("OK " if not failed else "ERR ") + summary)
    if failed:
        raise CommandError(summary)
    return summary


def _storage(session: ConsoleSession) -> tuple[bool, str]:
    """Write, fsync, read back and remove a probe file on the store's volume."""
    store = session.config.store
    if store is None:
        return False, "no store configured"
    probe = store / f".selftest-{os.getpid()}"
    data = secrets.token_bytes(PROBE_BYTES)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        back = probe.read_bytes()
    except OSError as e:
        return False, f"{probe}: {e.strerror}"
    finally:
        # The probe is ours, never evidence: nothing in media/ or the ledger is touched.
        with contextlib.suppress(OSError):
            probe.unlink()
    if hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
        return False, "read back differs from what was written"
    return True, f"{PROBE_BYTES // 1024} KiB written, synced and read back"


def _keys(session: ConsoleSession, device_key: tuple[str | None, str]) -> tuple[bool, str]:
    public, problem = device_key
    if public is None:
        return False, f"device key: {problem}"
    try:
        trust = read_trust(session.config.trust_file)  # type: ignore[arg-type]
    except (StoreError, TypeError) as e:
        return False, f"trust file: {e}"
    keyid = hashlib.sha256(bytes.fromhex(public)).hexdigest()
    if keyid not in trust.device_keys(session.config.device_id):
        return False, f"device key {keyid[:16]} is not in the trust file for this device"
    if trust.archive_encryption_key not in trust.keys:
        return False, "the trust file has no archive encryption key"
    return True, (f"device key {keyid[:16]} trusted; {len(trust.docks)} docks, "
                  "archive key present")
