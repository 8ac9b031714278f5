"""The recorder's side of the maintenance console: the ``console_*`` control commands.

The console process cannot sign (the device key and the one ledger writer are
the recorder's), and must never take the recorder's hardware from under it. So
what the console changes, and the checks that need the camera, microphone,
speaker, buttons, indicators, battery gauge or RTC, run here, in the recorder
process, served on its control socket::

    commands = maintenance_commands(agent)   # merged into the agent's command table
    commands["console_assign"](technician="tech", command="assign PC-7", officer="PC-7")

Every changing command appends a signed ``console_action`` (technician, the
command as typed, its result) whether it was carried out or refused; a refused
one also raises :class:`~device.control.ControlError` with the reason. Nothing
here deletes or edits evidence.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.control import ControlError
from hardware.clock import SyncSource
from hardware.controls import ControlEvent
from hardware.host.durable import replace_atomically
from protocol.entries import Assigned, ConsoleAction, TimeSync
from protocol.errors import ProtocolError
from protocol.trust_update import open_trust_update

if TYPE_CHECKING:
    from device.agent import RecorderAgent
    from device.recorder import Recorder

log = logging.getLogger("custody.console")

OFFICER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A clock a technician types in must at least be this century's.
EARLIEST_UTC_NS, LATEST_UTC_NS = 1_577_836_800 * 10**9, 4_102_444_800 * 10**9  # 2020..2100
SMALL_STEP_NS = 1_000_000_000  # the recorder declares larger steps itself (CLOCK_JUMP_NS)
BUTTON_EVENTS = {"record": {ControlEvent.RECORD}, "marker": {ControlEvent.MARKER},
                 "function": {ControlEvent.FUNCTION, ControlEvent.FUNCTION_LONG}}
RTC_TOLERANCE_S = 2.0
TONE_SECONDS, TONE_HZ, TONE_RATE = 0.4, 880.0, 48_000


def maintenance_commands(agent: RecorderAgent) -> dict[str, Callable[..., dict]]:
    """The console's commands for the agent's control-socket table."""
    m = Maintenance(agent)
    return {
        "console_status": m.status,
        "console_action": m.action,
        "console_clock_set": m.clock_set,
        "console_assign": m.assign,
        "console_power": m.power,
        "console_factory_reset": m.factory_reset,
        "console_enroll": m.enroll,
        "console_check": m.check,
        "console_button": m.button,
    }


class Maintenance:
    def __init__(self, agent: RecorderAgent):
        self.agent = agent
        self._lock = threading.Lock()  # one change at a time, from whichever connection

    # --- helpers -------------------------------------------------------------------------

    def _recorder(self) -> Recorder:
        if self.agent.recorder is None:
            raise ControlError("the recorder is still booting")
        return self.agent.recorder

    def _audited(self, technician: str, command: str, do: Callable[[Recorder], str]) -> dict:
        """Run a change and sign what became of it, done or refused."""
        recorder = self._recorder()
        with self._lock:
            try:
                summary = do(recorder)
            except ControlError as refusal:
                self._sign(recorder, technician, command, f"ERR {refusal}")
                raise
            signed = self._sign(recorder, technician, command, f"OK {summary}".rstrip())
        return {"result": summary, "seq": signed.entry.seq}

    @staticmethod
    def _sign(recorder: Recorder, technician: str, command: str, result: str) -> Any:
        signed = recorder.append(ConsoleAction(technician=technician, command=command,
                                               result=result))
        log.info("console: %s: %r -> %s (seq %d)", technician, command, result,
                 signed.entry.seq)
        return signed

    @staticmethod
    def _refuse_while_recording(recorder: Recorder, what: str) -> None:
        status = recorder.status()
        if status["state"] == "recording":
            raise ControlError(f"refused while recording (recording {status['recording']}); "
                               f"the officer stops it first, then {what}")
        if status["voice_note"]:
            raise ControlError(f"refused while a voice note is being recorded; {what} after it")
        open_recording = recorder.known.open_recording
        if open_recording is not None:
            raise ControlError(f"refused while recording {open_recording.seq} is interrupted "
                               f"and open; the officer resumes and stops it first")

    # --- read-only ------------------------------------------------------------------------

    def status(self) -> dict:
        recorder = self.agent.recorder
        if recorder is None:
            return {"state": "booting", "device": self.agent.config.device_id}
        s = recorder.status()
        out: dict[str, Any] = {key: s[key] for key in (
            "state", "device", "officer", "recording", "docked", "overdue_warning", "overdue",
            "next_seq", "last_error", "unexplained", "segments_sealed", "free_bytes")}
        clock = recorder.clock
        out["clock"] = {"utc_ns": int(clock.now() * 1e9), "source": str(clock.sync.source),
                        "synced": clock.sync.is_reference}
        if recorder.battery is not None:
            b = recorder.battery.read()
            out["battery"] = {"text": str(b), "percent": b.percent, "error": b.error}
        if recorder.storage is not None:
            st = recorder.storage.status()
            out["storage"] = {"total_bytes": st.total_bytes, "free_bytes": st.free_bytes,
                              "reserve_bytes": st.reserve_bytes, "low": st.is_low}
        return out

    # --- changes -----------------------------------------------------------------------------

    def action(self, technician: str, command: str, result: str) -> dict:
        """Sign a console action the console carried out itself (a self-test's summary)."""
        recorder = self._recorder()
        with self._lock:
            signed = self._sign(recorder, technician, command, result)
        return {"seq": signed.entry.seq}

    def clock_set(self, technician: str, command: str, utc_ns: int) -> dict:
        def do(recorder: Recorder) -> str:
            self._refuse_while_recording(recorder, "sets the clock")
            if not EARLIEST_UTC_NS <= utc_ns <= LATEST_UTC_NS:
                raise ControlError("refused: the time must be between 2020 and 2100")
            old_ns = int(recorder.clock.now() * 1e9)
            recorder.clock.set_time(utc_ns / 1e9, SyncSource.TECHNICIAN)
            if abs(utc_ns - old_ns) <= SMALL_STEP_NS:
                # Too small for the recorder's own step detector: declare it here.
                recorder.append(TimeSync(old_utc_ns=old_ns, new_utc_ns=utc_ns,
                                         source=str(SyncSource.TECHNICIAN)))
            # A larger step is declared as time_sync by the recorder itself, on the
            # console_action's append at the latest (its clock watch may be first).
            return f"clock set from {_iso(old_ns)} to {_iso(utc_ns)}"

        return self._audited(technician, command, do)

    def assign(self, technician: str, command: str, officer: str) -> dict:
        def do(recorder: Recorder) -> str:
            self._refuse_while_recording(recorder, "assigns the device")
            if not OFFICER_ID.fullmatch(officer):
                raise ControlError(f"officer id {officer!r}: 1-64 letters, digits, '.', '_' "
                                   "or '-'")
            before = recorder.officer
            recorder.append(Assigned(officer=officer, by=technician))
            if recorder.camera is not None:
                recorder.camera.officer_id = officer  # the picture's overlay names them
            return f"assigned to {officer} (was {before or 'nobody'})"

        return self._audited(technician, command, do)

    def power(self, technician: str, command: str, force: bool = False) -> dict:
        """Make ready for a reboot or power-off: refused while recording unless forced,
        and a forced one seals the recording first. The console then runs the command."""
        def do(recorder: Recorder) -> str:
            status = recorder.status()
            if status["state"] != "recording":
                return "nothing recording"
            if not force:
                raise ControlError(f"refused while recording (recording {status['recording']});"
                                   " add --force to seal it and go on")
            recording = status["recording"]
            recorder.stop_recording("console")
            if not recorder.wait_idle(60):
                raise ControlError(f"recording {recording} is still sealing; try again")
            return f"recording {recording} stopped and sealed"

        return self._audited(technician, command, do)

    def factory_reset(self, technician: str, command: str) -> dict:
        def do(recorder: Recorder) -> str:
            self._refuse_while_recording(recorder, "resets it")
            known = recorder.known
            waiting = sorted(f for f, h in known.sealed.items() if known.archived.get(f) != h)
            if waiting:
                raise ControlError(f"refused: {len(waiting)} media files are not offloaded "
                                   f"(first {waiting[0]}); dock the device first")
            before = recorder.officer
            recorder.append(Assigned(officer="", by=technician))
            if recorder.camera is not None:
                recorder.camera.officer_id = ""
            return f"unassigned (was {before or 'nobody'}); the ledger and keys stay"

        return self._audited(technician, command, do)

    def enroll(self, technician: str, command: str, update: Any,
               confirm: str | None = None) -> dict:
        """Check a signed trust-file update; with ``confirm`` (its fingerprint) install it."""
        agent = self.agent
        try:
            accepted = open_trust_update(update, agent.trust, agent.config.device_id,
                                         agent.key.keyid)
        except ProtocolError as e:
            if confirm is None:
                raise ControlError(str(e)) from e
            accepted = None
            reason = str(e)
        summary = {} if accepted is None else {
            "fingerprint": accepted.fingerprint, "unit": accepted.trust.unit,
            "docks": sorted(accepted.trust.docks), "added_docks": list(accepted.added_docks),
            "removed_docks": list(accepted.removed_docks)}
        if confirm is None:
            return summary

        def do(recorder: Recorder) -> str:
            if accepted is None:
                raise ControlError(reason)
            if confirm != accepted.fingerprint:
                raise ControlError("refused: the fingerprint confirmed is not the update's")
            _replace_file(agent.config.trust_file, accepted.data)
            agent.trust = recorder.trust = accepted.trust
            return f"trust file {accepted.fingerprint} installed"

        return {**summary, **self._audited(technician, command, do)}

    # --- the self-test's hardware checks -------------------------------------------------------

    def check(self, name: str) -> dict:
        """One hardware check: ``{"passed": bool, "detail": str}``."""
        recorder = self._recorder()
        checks = {"camera": _camera, "microphone": _microphone, "speaker": _speaker,
                  "indicators": _indicators, "battery": _battery, "rtc": _rtc}
        if name not in checks:
            raise ControlError(f"no check {name!r}; checks: {', '.join(checks)}")
        if name in ("speaker", "indicators"):
            self._refuse_while_recording(recorder, "tests it")
        try:
            passed, detail = checks[name](recorder)
        except Exception as e:  # a broken device is a failed check, not a failed command
            passed, detail = False, f"{type(e).__name__}: {e}"
        return {"passed": passed, "detail": detail}

    def button(self, button: str, timeout: float = 10.0) -> dict:
        """Wait for one press of ``button``; meanwhile no button acts as the officer's."""
        recorder = self._recorder()
        if button not in BUTTON_EVENTS:
            raise ControlError(f"no button {button!r}; buttons: {', '.join(BUTTON_EVENTS)}")
        self._refuse_while_recording(recorder, "tests the buttons")
        controls = recorder.controls
        if controls is None:
            raise ControlError("the buttons are not open")
        wanted, pressed = BUTTON_EVENTS[button], threading.Event()
        officer_handler = controls.when_event
        others: list[str] = []

        def during_test(event: ControlEvent) -> None:
            if event in wanted:
                pressed.set()
            elif event in (ControlEvent.DOCKED, ControlEvent.UNDOCKED):
                if officer_handler is not None:
                    officer_handler(event)  # the dock still counts
            else:
                others.append(str(event))

        started = time.monotonic()
        controls.when_event = during_test
        try:
            got = pressed.wait(timeout)
        finally:
            controls.when_event = officer_handler
        if not got:
            extra = f" (other presses: {', '.join(others)})" if others else ""
            return {"passed": False, "detail": f"no press within {timeout:g} s{extra}"}
        return {"passed": True, "detail": f"pressed after {time.monotonic() - started:.1f} s"}


def _iso(utc_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(utc_ns / 1e9))


def _replace_file(path: Path | None, data: bytes) -> None:
    if path is None:
        raise ControlError("no trust_file is configured")
    replace_atomically(path, data)


def _camera(recorder: Recorder) -> tuple[bool, str]:
    camera = recorder.camera
    if camera is None:
        return False, "not open"
    before, t0 = camera.frames_delivered, time.monotonic()
    time.sleep(1.0)
    frames = camera.frames_delivered - before
    seconds = time.monotonic() - t0
    expected = recorder.config.fps * seconds
    return frames >= expected / 2, f"{frames} frames in {seconds:.1f} s (expected {expected:.0f})"


def _microphone(recorder: Recorder) -> tuple[bool, str]:
    mic = recorder.microphone
    if mic is None or not mic.is_active:
        return False, "not capturing"
    peak, deadline = 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        peak = max(peak, mic.peak)
        time.sleep(0.05)
    dbfs = 20 * math.log10(peak / 32768) if peak else float("-inf")
    return peak > 32, f"peak level {dbfs:.0f} dBFS over 1 s"  # > -60 dBFS: not dead


def _speaker(recorder: Recorder) -> tuple[bool, str]:
    if recorder.speaker is None:
        return False, "not open"
    t = np.arange(int(TONE_SECONDS * TONE_RATE)) / TONE_RATE
    started = time.monotonic()
    recorder.speaker.play(0.3 * np.sin(2 * np.pi * TONE_HZ * t), rate=TONE_RATE)
    return True, f"played a {TONE_HZ:.0f} Hz tone ({time.monotonic() - started:.1f} s)"


def _indicators(recorder: Recorder) -> tuple[bool, str]:
    indicators = recorder.indicators
    if indicators is None:
        return False, "not open"
    # The "error" pattern pulses the status LED, the buzzer and the vibration motor;
    # the red recording LED is never touched (it shows recording, nothing else).
    indicators.signal("error", wait=True)
    played = indicators.history[-1] if indicators.history else None
    if played is None or played.pattern != "error":
        return False, "the pattern did not play"
    return True, (f"status LED, buzzer and vibration pulsed "
                  f"({played.finished - played.started:.1f} s)")


def _battery(recorder: Recorder) -> tuple[bool, str]:
    if recorder.battery is None:
        return False, "not open"
    reading = recorder.battery.read()
    if not reading.known:
        return False, f"gauge unreadable: {reading.error or 'no reading'}"
    return True, str(reading)


def _rtc(recorder: Recorder) -> tuple[bool, str]:
    rtc = recorder.clock.read_rtc()
    if rtc is None:
        return False, "no readable RTC"
    off = rtc.timestamp() - recorder.clock.now()
    return abs(off) <= RTC_TOLERANCE_S, f"{rtc:%Y-%m-%dT%H:%M:%SZ}, {off:+.1f} s from the clock"
