"""The recorder's façade: its states and what the officer's buttons do.

States (docs/recorder.md has the diagram)::

    booting ──► standby ◄──► recording
        │          │             │
        └──────────┴─────────────┴──► shutting_down

A press decides what it does from the recorder's own session at the moment
of the press (a recording opened and closed by presses), never from how far
the seal stage has got: a stop and a start a few milliseconds apart are two
recordings, in that order. The work goes through the stages (router → mux →
seal) as messages; the seal stage appends, through the one
:class:`~device.recorder.appender.EntryAppender`, in the order things happened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from device.config import RecorderConfig
from device.ledger import LedgerWriter
from device.recorder.appender import EntryAppender
from device.recorder.boot import recover_cut
from device.recorder.memo import VoiceNotes
from device.recorder.menu import FunctionMenu
from device.recorder.messages import Barrier, End, Interrupt, Mark, Session, Stop
from device.recorder.mux import MuxStage
from device.recorder.release import MediaRelease
from device.recorder.router import CaptureRouter
from device.recorder.seal import SealQueue, SealStage
from device.recorder.selfcheck import SelfChecks
from device.recorder.stats import RecorderStats
from device.recorder.status import status_report
from device.sealer import SegmentSealer
from hardware.camera import Camera, monotonic_us
from hardware.clock import Clock
from hardware.controls import ControlEvent, Controls
from hardware.factory import HardwareFactory
from hardware.indicators import Indicators
from hardware.microphone import Microphone
from protocol.entries import (
    EXEMPTION_REASONS,
    MARKER_PHASES,
    Body,
    Marker,
    RecordStart,
)
from protocol.envelope import SignedEntry
from protocol.trust import TrustFile

log = logging.getLogger("device.recorder")

OFFICER_REASONS = ("weather", "location_change", "other")  # what an officer may declare


class State(StrEnum):
    BOOTING = "booting"
    STANDBY = "standby"
    RECORDING = "recording"
    SHUTTING_DOWN = "shutting_down"


ALLOWED = {
    State.BOOTING: {State.STANDBY, State.SHUTTING_DOWN},
    State.STANDBY: {State.RECORDING, State.SHUTTING_DOWN},
    State.RECORDING: {State.STANDBY, State.SHUTTING_DOWN},
    State.SHUTTING_DOWN: set(),
}


class Recorder:
    """The recording agent on the officer's device.

    >>> # recorder = Recorder(config, hardware, ledger, archive_public, trust=trust)
    >>> # recorder.start()          # booting -> standby, capture into the pre-record buffer
    >>> # recorder.press_record()   # standby -> recording (what the record button does)
    >>> # recorder.press_record()   # recording -> standby; record_stop after the last segment
    >>> # recorder.close()

    Hook points: ``appender`` sees every entry (``appender.on_appended``);
    the officer's actions, ``status``, ``accept_receipt`` and ``close`` are what a
    control socket, a console or an offload client call.
    """

    def __init__(self, config: RecorderConfig, hardware: HardwareFactory, ledger: LedgerWriter,
                 archive_public: bytes, *, clock: Clock | None = None,
                 trust: TrustFile | None = None, prompts: Any = None):
        self.config = config
        self.hardware = hardware
        self.ledger = ledger
        self.archive_public = archive_public
        self.trust = trust
        self.clock = clock or hardware.clock()
        self.store = ledger.path.parent
        self.state = State.BOOTING
        self.stats = RecorderStats()
        self.appender = EntryAppender(ledger, self.clock)
        self.docked = False
        #: Called (once) when the recorder must power the device down (battery).
        self.on_power_down: Callable[[], None] | None = None
        #: What a segment is written into; a test may swap in a slower one.
        self.sealer_class: type[SegmentSealer] = SegmentSealer

        media_bytes_per_s = config.video_bitrate // 8 + config.audio_rate * 2
        self._seal_q = SealQueue(int(config.queue_seconds * media_bytes_per_s))
        self.voice_notes = VoiceNotes(config, self.appender, self.stats, self._signal, prompts)
        self.router = CaptureRouter(config, self.stats, self.voice_notes,
                                    audio_block=hardware.microphone_config().block)
        self.voice_notes.capture = self.router.queue  # a note's audio goes to the mux stage
        self.mux = MuxStage(config, self.stats, self.store, self.appender.known,
                            self.router.queue, self._seal_q, self._signal)
        self.seal = SealStage(config, self.stats, self.appender, self._seal_q,
                              self.router.feedback.put, self.voice_notes, archive_public,
                              lambda: self.sealer_class, self._signal)
        self._session: Session | None = None  # the recording the presses left open
        self._menu: FunctionMenu | None = None
        self._interrupt_reason: str | None = None  # armed by the officer (function button)
        self._next_phase = 0
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.checks = SelfChecks(config, self.appender, self.router, self, self._signal)
        self.release = MediaRelease(config, self.appender, self.stats, trust)

        self.camera: Camera | None = None
        self.microphone: Microphone | None = None
        self.controls: Controls | None = None
        self.indicators: Indicators | None = None
        self.speaker: Any = None
        self.battery: Any = None
        self.storage: Any = None

    @property
    def known(self):  # noqa: ANN201 - a LedgerState
        """What the device knows from its ledger (kept by the appender)."""
        return self.appender.known

    @property
    def officer(self) -> str:
        return self.known.officer

    @property
    def recording(self) -> int | None:
        """The seq of the recording being captured (once its record_start is appended)."""
        session = self._session
        if self.state != State.RECORDING or session is None or not session.seq.done():
            return None
        return session.seq.result() if session.seq.exception() is None else None

    def append(self, body: Body) -> SignedEntry:
        """Append an entry (through the appender: the only place entries are appended)."""
        return self.appender.append(body)

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Open the devices, seal what a cut left behind, start capture: standby."""
        c, hw = self.config, self.hardware
        self.camera = hw.camera(
            width=c.width, height=c.height, fps=c.fps, bitrate=c.video_bitrate,
            keyframe_interval=c.effective_keyframe_interval, overlay=c.overlay,
            device_id=c.device_id, officer_id=self.officer)
        # The board's [audio] settings (input device, block), at the recorder's rate.
        self.microphone = hw.microphone(replace(hw.microphone_config(), rate=c.audio_rate))
        self.router.camera, self.router.microphone = self.camera, self.microphone
        self.controls = hw.controls()
        self.controls.when_event = self._on_control_event
        self.indicators = hw.indicators()
        self.speaker = self.voice_notes.speaker = hw.speaker()
        self.battery = self.checks.battery = hw.battery()
        self.storage = self.checks.storage = hw.storage(str(self.store))
        self.checks.battery_watch.low_percent = hw.board.battery.low_percent
        self.recover_cut()
        open_ = self.known.open_recording
        if open_ is not None:  # a cut left it open: the next press resumes it
            self._session = Session(interrupted=True, span=open_.span,
                                    next_index=open_.segments)
            self._session.seq.set_result(open_.seq)
        stopping = self._stopping
        for name, target in (("mux", self.mux.run), ("seal", self.seal.run),
                             ("video", lambda: self.router.video_loop(stopping)),
                             ("audio", lambda: self.router.audio_loop(stopping)),
                             ("watch", lambda: self.checks.run(stopping))):
            self._threads.append(threading.Thread(target=target, name=f"recorder-{name}",
                                                  daemon=True))
        self.microphone.start()
        self.camera.start()
        for t in self._threads:
            t.start()
        self._transition(State.STANDBY)

    def close(self, trigger: str = "shutdown") -> None:
        """Stop any recording (sealing it), then stop capture and the threads."""
        if self.state == State.RECORDING:
            self.stop_recording(trigger)
        self.router.settle_ending()
        if not self._transition(State.SHUTTING_DOWN):
            return
        self.router.queue.put(End())
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=60)
        for device in (self.camera, self.microphone, self.controls, self.indicators,
                       self.speaker):
            if device is not None:
                device.close()

    def healthy(self) -> bool:
        """For the systemd watchdog: every thread alive and the pipeline not wedged."""
        return self.state != State.SHUTTING_DOWN and self._running()

    def _running(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until everything captured so far is muxed and sealed (tests, shutdown).

        A barrier goes through both queues behind what is already in them; when
        the seal stage reaches it, all before it is sealed and in the ledger.
        """
        if not self._running():
            return True  # no pipeline running: nothing is in flight
        self.router.settle_ending()
        barrier = Barrier()
        try:
            self.router.queue.put(barrier, timeout=timeout)
        except Exception:
            return False
        return barrier.passed.wait(timeout)

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        """A dock's signed time statement (device/offload.py): see
        :meth:`EntryAppender.apply_time_statement`."""
        self.appender.apply_time_statement(statement, step_ns)

    def recover_cut(self) -> None:
        """After a power cut or crash: seal what it left, declare the cut (boot.py)."""
        recover_cut(self.appender, self.clock)

    # --- officer actions ----------------------------------------------------------

    def _on_control_event(self, event: ControlEvent) -> None:
        try:
            match event:
                case ControlEvent.RECORD:
                    self.press_record()
                case ControlEvent.MARKER:
                    self.mark(None)
                case ControlEvent.FUNCTION_MARKER:
                    self.mark("other")
                case ControlEvent.FUNCTION:
                    self.press_function()
                case ControlEvent.FUNCTION_LONG:
                    self.hold_function()
                case ControlEvent.DOCKED | ControlEvent.UNDOCKED:
                    self.docked = event == ControlEvent.DOCKED
                    if self.docked and self.overdue_warning:
                        log.warning("docked with overdue recordings: %s", self.overdue())
        except Exception:  # a button must never take the recorder down
            log.exception("handling %s failed", event)

    def press_record(self) -> str:
        """What one short press of the record button does: start, resume or stop."""
        if self.state == State.RECORDING:
            reason, self._interrupt_reason = self._interrupt_reason, None
            if self._menu is not None and self._menu.choices == OFFICER_REASONS:
                reason = self._menu.cancel()  # the choice so far counts
                self._menu = None
            if reason is not None:  # armed with the function button: a declared stop
                self.interrupt(reason, "officer")
            else:
                self.stop_recording("button")
        else:
            self.start_recording("button")
        if self.overdue_warning:
            self._signal("overdue")
        return self.state

    def start_recording(self, trigger: str) -> int | None:
        """Start a recording — or resume the interrupted one as a new span.

        Returns the recording's seq once its ``record_start`` (or ``resume``) is
        in the ledger, after whatever was pressed before it; None if refused.
        """
        press_us = monotonic_us()
        if self.state != State.STANDBY:
            self._refuse(State.RECORDING)
            return None
        if not self.checks.can_start():
            self.stats.refused_transitions += 1
            log.error("refused: storage full, no recording starts (nothing is overwritten)")
            self._signal("storage_low")
            return None
        assert self.camera is not None
        self.camera.request_keyframe()  # with no pre-record, start at once
        self.voice_notes.end()  # an exemption memo in progress ends here
        session = self._session
        resume = session is not None and session.interrupted
        start = None
        if session is None or not resume:
            session = Session()
            start = RecordStart(
                trigger=trigger, category=self.config.category, officer=self.officer,
                pre_record_seconds=round(self.router.prerecord.seconds, 3),
                pre_record_audio=self.config.pre_record_audio)
            self._next_phase = 0
        session.interrupted = False
        with self.router.lock:
            self._transition(State.RECORDING)
            self._session = session
            begun = self.router.begin(session, resume, start, self.appender.utc_offset_ns,
                                      press_us)
        self._signal("recording_started", red=True)
        try:
            seq = session.seq.result(timeout=30)
        except Exception:
            log.exception("the recording's start could not be appended")
            return None
        log.info("recording %d %s (%d pre-record frames)", seq,
                 "resumed" if resume else "started", len(begun.frames))
        return seq

    def stop_recording(self, trigger: str) -> None:
        """End the recording at this moment's capture time (``record_stop`` once sealed)."""
        cut_us = monotonic_us()
        if self.state != State.RECORDING:
            self._refuse(State.STANDBY)
            return
        self.voice_notes.end()
        with self.router.lock:
            self._transition(State.STANDBY)
            self.router.end(Stop(trigger), cut_us)
            self._session = None  # the officer closed it: the next press starts anew
        self._signal("recording_stopped", red=False)

    def interrupt(self, reason: str, detected_by: str) -> None:
        """Stop capture for a reason: the recording stays open, the next press resumes it."""
        if self.state != State.RECORDING:
            return
        cut = Interrupt(reason, detected_by, monotonic_us())
        self.voice_notes.end()
        with self.router.lock:
            self._transition(State.STANDBY)
            self.router.end(cut, cut.cut_us)
            if self._session is not None:
                self._session.interrupted = True  # the next press resumes it
        self._signal("recording_stopped", red=False)
        log.warning("recording interrupted: %s (%s)", reason, detected_by)

    def mark(self, phase: str | None) -> SignedEntry:
        """Tag a key moment. ``None``: the next Art. 7 phase of this recording, in order.

        Appended in the order of presses: after the record_start (or the stop)
        pressed before it.
        """
        if phase is None:
            order = MARKER_PHASES[:-1]  # "other" is the chord's
            phase = order[min(self._next_phase, len(order) - 1)]
            self._next_phase += 1
        if not self._running():
            entry = self.append(Marker(phase=phase, recording=None))
        else:
            mark = Mark(phase)
            self.router.put_in_order(mark)
            entry = mark.entry.result(timeout=60)
        self._signal("marker")
        return entry

    def press_function(self) -> bool:
        """Short press: ends a voice note, or makes a choice in the function menu.

        False (refused, and logged) when there is neither to act on.
        """
        if self.voice_notes.listening and self._menu is None:
            self.voice_notes.end()
        elif self._menu is not None:
            self._menu.press()
        else:
            return self._refuse_press("function", "no menu and no voice note to end")
        return True

    def hold_function(self) -> bool:
        """Long press. Recording: arm a declared interruption (the reason is chosen by
        short presses: weather, location change, other; the next record press stops).
        Standby: an exemption (Art. 5; short presses choose the reason, then a memo).
        False (refused, and logged) in any other state."""
        if self.state == State.RECORDING:
            self._interrupt_reason = OFFICER_REASONS[0]
            self._menu = FunctionMenu(OFFICER_REASONS, self._choose_interrupt_reason)
        elif self.state == State.STANDBY:
            self._menu = FunctionMenu(EXEMPTION_REASONS, self._exemption_chosen)
        else:
            return self._refuse_press("function (held)", f"nothing to do while {self.state}")
        self._signal("marker")
        return True

    def _choose_interrupt_reason(self, reason: str) -> None:
        self._menu = None
        if self.state == State.RECORDING:
            self._interrupt_reason = reason
            self._signal("marker")

    def _exemption_chosen(self, reason: str) -> None:
        self._menu = None
        self._signal("prompt")
        self.voice_notes.begin(exemption=reason)

    # --- receipts, self-checks --------------------------------------------------------

    def accept_receipt(self, envelope: Any) -> list[str]:
        """Free the media a dock's verified receipt covers. Raises ReceiptRefused."""
        return self.release.accept_receipt(envelope)

    def overdue(self) -> list[int]:
        return sorted(self.known.overdue_declared)

    @property
    def overdue_warning(self) -> bool:
        return self.checks.overdue_warning

    # What the self-checks may ask (selfcheck.RecorderControl).

    @property
    def recording_now(self) -> bool:
        return self.state == State.RECORDING

    @property
    def shutting_down(self) -> bool:
        return self.state == State.SHUTTING_DOWN

    def power_down(self) -> None:
        """Battery critical: everything sealed, the threads stop, the agent powers off."""
        self.wait_idle(60)
        self._stopping.set()
        if self.on_power_down is not None:
            self.on_power_down()

    # --- indicators and helpers -------------------------------------------------------

    def _signal(self, pattern: str, red: bool | None = None) -> None:
        if self.indicators is None:
            return
        try:
            if red is not None:
                self.indicators.recording = red
            self.indicators.signal(pattern)
        except Exception:
            log.exception("indicators")

    def _transition(self, to: State) -> bool:
        if to not in ALLOWED[self.state]:
            self._refuse(to)
            return False
        log.info("state %s -> %s", self.state, to)
        self.state = to
        return True

    def _refuse(self, to: State) -> None:
        self.stats.refused_transitions += 1
        log.warning("refused: %s -> %s is not allowed", self.state, to)

    def _refuse_press(self, button: str, why: str) -> bool:
        self.stats.refused_presses += 1
        log.warning("refused: a %s press (%s)", button, why)
        return False

    def status(self) -> dict[str, Any]:
        return status_report(
            state=str(self.state), device=self.config.device_id, recording=self.recording,
            stats=self.stats, router=self.router, seal_queue=self.mux.seal.qsize(),
            next_seq=self.ledger.next_seq, known=self.known, voice_notes=self.voice_notes,
            checks=self.checks, docked=self.docked)
