"""The recorder: one press records continuous, segmented, sealed audio and video.

States (docs/recorder.md has the diagram)::

    booting ──► standby ◄──► recording
        │          │             │
        └──────────┴─────────────┴──► shutting_down

In *standby* the camera and microphone run into the pre-record buffer. A press
of the record button appends ``record_start`` (or, if a recording was
interrupted, ``resume``: a new span of the same recording) and hands the
buffer and all live capture to the pipeline; the next press appends
``record_stop`` after the last segment is sealed. A transition that is not
allowed is refused and logged; it never raises into the caller.

The pipeline has three stages joined by bounded queues, so a slow disk never
blocks capture::

    camera, microphone ─► capture queue ─► mux thread (Segmenter: fMP4, FLAC)
                                              │ bytes, fragment ends, segment ends
                                              ▼
                                          seal queue ─► seal thread (SegmentSealer,
                                                         ledger appends, in order)

Every stop that is not the officer's normal stop is an ``interruption`` with
its reason — a full capture queue (``other``, detected by ``queue_overflow``),
frames or audio the camera or microphone itself lost (``camera_fault`` /
``mic_fault``, detected by ``frame_index`` / ``audio_overflow``),
low battery, full storage, a power cut or crash found at the next start, or
one the officer declares — and the next start prompts for a voice note.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from device.config import RecorderConfig
from device.ledger import LedgerWriter, boot_id, fsync_dir
from device.ledger_state import LedgerState
from device.muxer import FragmentInfo, Segmenter, SegmentSummary
from device.prerecord import PreRecordBuffer
from device.receipts import ReceiptRefused, check_receipt
from device.sealer import SegmentSealer
from device.watch import BatteryWatch, OverdueWatch, StorageWatch, voice_note_reserve_bytes
from hardware.camera import Camera, monotonic_us
from hardware.clock import Clock
from hardware.controls import ControlEvent, Controls
from hardware.factory import HardwareFactory
from hardware.frames import AudioBlock, VideoFrame
from hardware.indicators import Indicators
from hardware.microphone import Microphone, MicrophoneConfig
from protocol.entries import (
    EXEMPTION_REASONS,
    MARKER_PHASES,
    MIN_SPEECH_SECONDS,
    Body,
    Exemption,
    Interruption,
    Marker,
    OffloadReceiptEntry,
    Overdue,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    TimeSync,
    VoiceNote,
)
from protocol.envelope import SignedEntry
from protocol.trust import TrustFile

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CLOCK_JUMP_NS = 1_000_000_000  # a wall-clock step larger than this is a signed time_sync
OFFICER_REASONS = ("weather", "location_change", "other")  # what an officer may declare
MENU_SECONDS = 3.0  # after the last press, a choice made with the function button is taken
EXEMPTION_MEMO_SECONDS = 20.0
CAMERA_TIMEOUT_S = 1.0  # no frame for this long while recording: a camera fault
MIC_TIMEOUT_S = 1.0  # no audio for this long while recording: a microphone fault
AUDIO_FOLLOWS_ON_US = 1_000  # a block this close to the last one's end follows on
ENDING_WAIT_S = 0.5  # how long a stop waits for capture from before it still on its way


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


# --- what travels through the capture queue ------------------------------------------


@dataclass
class _Session:
    """The recording the officer has open, as the presses left it.

    A press decides from this, at the moment of the press, what it does —
    never from how far the seal thread has got with the ledger. ``seq`` is
    resolved once ``record_start`` is appended (by the seal thread, in order).
    """

    seq: Future[int] = field(default_factory=Future)
    interrupted: bool = False  # ended by an interruption: the next press resumes it
    span: int = 0  # at boot, a recording a cut left open: its last span...
    next_index: int = 0  # ...and its next segment's index


@dataclass
class _Start:
    session: _Session
    resume: bool
    start: RecordStart | None  # a new recording's entry, as the press found it
    utc_offset_ns: int  # capture clock -> UTC, fixed for the span
    frames: list[VideoFrame]
    blocks: list[AudioBlock]
    press_us: int


@dataclass
class _Mark:
    """A marker, in capture order: after the record_start it belongs to."""

    phase: str
    entry: Future[SignedEntry] = field(default_factory=Future)


@dataclass
class _Stop:
    trigger: str


@dataclass
class _Interrupt:
    """End the span: the recording stays open, to be resumed by the next press."""

    reason: str
    detected_by: str
    cut_us: int


@dataclass
class _Overflow:
    """Capture lost before the mux thread saw it: end the span, declare the gap."""

    cut_us: int
    dropped_frames: int
    dropped_samples: int
    reason: str = "other"
    detected_by: str = "queue_overflow"  # our capture queue; or the source's own loss


@dataclass
class _CameraFault:
    """No frame for CAMERA_TIMEOUT_S: end the video span, go on with audio alone."""

    cut_us: int  # capture time of the last frame


@dataclass
class _Barrier:
    """Passed once everything queued before it is muxed and sealed (``wait_idle``)."""

    passed: threading.Event = field(default_factory=threading.Event)


@dataclass
class _CameraBack:
    pass


@dataclass
class _SegmentBreak:
    """The medium refused the open segment (the seal thread declared it): go on in a new file."""


@dataclass
class _MicFault:
    """No audio for MIC_TIMEOUT_S: video goes on; the silence is declared."""

    cut_us: int  # capture time just after the last sample


_END = object()


@dataclass
class _Ending:
    """A stop or interruption decided at ``cut_us`` (capture clock), not yet queued.

    Capture from before the cut that is still on its way (a busy moment, a
    source's own buffer) is the recording's, not the pre-record buffer's:
    routing goes on by capture time until every running source has delivered
    from after the cut, or ``deadline`` (monotonic s) passes.
    """

    item: _Stop | _Interrupt
    cut_us: int
    deadline: float
    waiting: set[type] = field(default_factory=lambda: {VideoFrame, AudioBlock})
    after: list[Any] = field(default_factory=list)  # pressed since: queued behind it


@dataclass
class _Recording:
    """The mux thread's view of the span in progress."""

    seq: int
    span: int
    next_index: int
    utc_offset_ns: int
    press_us: int
    first_frame_seen: bool = False

    def next_span(self) -> _Recording:
        """The same recording, going on in a new span (after a fault or an overflow)."""
        return _Recording(self.seq, self.span + 1, self.next_index, self.utc_offset_ns,
                          self.press_us, True)


@dataclass
class _SourceWatch:
    """When a capture source (camera, microphone) last delivered, and whether its
    silence has been declared a fault."""

    timeout_s: float
    last_at: float = field(default_factory=time.monotonic)  # monotonic s
    last_us: int = 0  # capture time of (just after) what it delivered last
    faulted: bool = False

    def seen(self, capture_us: int) -> bool:
        """It delivered. True if it had been declared faulted: it is back."""
        self.last_at, self.last_us = time.monotonic(), capture_us
        back, self.faulted = self.faulted, False
        return back

    def check(self) -> bool:
        """True once, when it has been silent for ``timeout_s``: a fault."""
        if self.faulted or time.monotonic() - self.last_at < self.timeout_s:
            return False
        self.faulted = True
        return True

    def rearm(self) -> None:
        """A recording starts: give the source half a timeout before judging it."""
        self.last_at = max(self.last_at, time.monotonic() - self.timeout_s / 2)


@dataclass
class _Memo:
    """Audio being collected for a voice note (or an exemption's voice memo)."""

    file: str
    interruption: int | None  # a voice note explains this interruption
    exemption: str | None  # or: an exemption's reason
    max_us: int
    blocks: list[AudioBlock] = field(default_factory=list)
    collecting: bool = False
    started_us: int = 0


@dataclass
class RecorderStats:
    segments_sealed: int = 0
    bytes_sealed: int = 0
    dropped_frames: int = 0
    dropped_samples: int = 0
    overflows: int = 0  # of the capture queue
    source_losses: int = 0  # capture the camera or microphone itself lost
    seal_failures: int = 0  # segments the medium refused to go on writing
    refused_transitions: int = 0
    refused_presses: int = 0  # presses with nothing to act on (logged)
    prompts: int = 0
    voice_notes: int = 0
    freed_files: int = 0
    press_to_frame_ms: list[float] = field(default_factory=list)
    last_error: str = ""


class Recorder:
    """The recording agent on the officer's device.

    >>> # recorder = Recorder(config, hardware, ledger, archive_public, trust=trust)
    >>> # recorder.start()          # booting -> standby, capture into the pre-record buffer
    >>> # recorder.press_record()   # standby -> recording (what the record button does)
    >>> # recorder.press_record()   # recording -> standby, after the last segment is sealed
    >>> # recorder.close()
    """

    def __init__(self, config: RecorderConfig, hardware: HardwareFactory, ledger: LedgerWriter,
                 archive_public: bytes, *, clock: Clock | None = None,
                 trust: TrustFile | None = None, prompts: Any = None):
        self.config = config
        self.hardware = hardware
        self.ledger = ledger
        self.archive_public = archive_public
        self.trust = trust
        self.prompts = prompts  # a device.prompts.PromptLibrary, if installed
        self.clock = clock or hardware.clock()
        self.store = ledger.path.parent
        self.state = State.BOOTING
        self.stats = RecorderStats()
        self.known = LedgerState.read(self.store)
        self._session: _Session | None = None  # the recording the presses left open
        self.docked = False
        self.overdue_warning = False
        #: Called (once) when the recorder must power the device down (battery).
        self.on_power_down: Callable[[], None] | None = None

        fps = config.fps
        per_second = fps + config.audio_rate // MicrophoneConfig().block + 1
        self._capture_q: queue.Queue[Any] = queue.Queue(int(config.queue_seconds * per_second))
        media_bytes_per_s = config.video_bitrate // 8 + config.audio_rate * 2
        self._seal_q = _SealQueue(int(config.queue_seconds * media_bytes_per_s))
        self._route_lock = threading.RLock()  # state changes vs. capture routing
        self._prerecord = PreRecordBuffer(config.pre_record_seconds, config.pre_record_audio)
        self._overflow: _Overflow | None = None
        self._ending: _Ending | None = None  # a stop waiting for capture from before it
        self._break_segment = False  # set by the seal thread when the medium refuses a file
        self._refused_from_start = False  # the last file sealed or refused had nothing durable
        self._last_frame_index: int | None = None  # to see the camera skip frames
        self._mic_overflows = 0  # the microphone's count of lost blocks, as last read
        self._memo: _Memo | None = None
        self._menu: _FunctionMenu | None = None
        self._interrupt_reason: str | None = None  # armed by the officer (function button)
        self._next_phase = 0
        self._camera_watch = _SourceWatch(CAMERA_TIMEOUT_S)
        self._mic_watch = _SourceWatch(MIC_TIMEOUT_S)
        self._utc_offset_ns = self._current_offset_ns()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._battery = BatteryWatch(config.battery_low_minutes, config.battery_critical_minutes)
        self._storage_watch = StorageWatch(
            reserve_bytes=config.storage_reserve_bytes + voice_note_reserve_bytes(
                config.voice_note_reserve_seconds, config.audio_rate),
            headroom_bytes=3 * media_bytes_per_s)
        self._overdue = OverdueWatch(config.overdue_warn_hours, config.overdue_hours)
        # What a segment is written into; a test may swap in a slower one.
        self.sealer_class: type[SegmentSealer] = SegmentSealer

        self.camera: Camera | None = None
        self.microphone: Microphone | None = None
        self.controls: Controls | None = None
        self.indicators: Indicators | None = None
        self.speaker: Any = None
        self.battery: Any = None
        self.storage: Any = None

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

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Open the devices, seal what a cut left behind, start capture: standby."""
        c, hw = self.config, self.hardware
        self.camera = hw.camera(
            width=c.width, height=c.height, fps=c.fps, bitrate=c.video_bitrate,
            keyframe_interval=c.effective_keyframe_interval, overlay=c.overlay,
            device_id=c.device_id, officer_id=self.officer)
        self.microphone = hw.microphone(MicrophoneConfig(rate=c.audio_rate))
        self.controls = hw.controls()
        self.controls.when_event = self._on_control_event
        self.indicators = hw.indicators()
        self.speaker = hw.speaker()
        self.battery = hw.battery()
        self.storage = hw.storage(str(self.store))
        self._battery.low_percent = hw.board.battery.low_percent
        self.recover_cut()
        open_ = self.known.open_recording
        if open_ is not None:  # a cut left it open: the next press resumes it
            self._session = _Session(interrupted=True, span=open_.span,
                                     next_index=open_.segments)
            self._session.seq.set_result(open_.seq)
        for name, target in (("mux", self._mux_loop), ("seal", self._seal_loop),
                             ("video", self._video_loop), ("audio", self._audio_loop),
                             ("watch", self._watch_loop)):
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
        self._settle_ending()
        if not self._transition(State.SHUTTING_DOWN):
            return
        self._capture_q.put(_END)
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=60)
        for device in (self.camera, self.microphone, self.controls, self.indicators,
                       self.speaker):
            if device is not None:
                device.close()

    def healthy(self) -> bool:
        """For the systemd watchdog: every thread alive and the pipeline not wedged."""
        return self.state != State.SHUTTING_DOWN and all(t.is_alive() for t in self._threads)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until everything captured so far is muxed and sealed (tests, shutdown).

        A barrier goes through both queues behind what is already in them; when
        the seal thread reaches it, all before it is sealed and in the ledger.
        """
        if not self._threads or not all(t.is_alive() for t in self._threads):
            return True  # no pipeline running: nothing is in flight
        self._settle_ending()
        barrier = _Barrier()
        try:
            self._capture_q.put(barrier, timeout=timeout)
        except queue.Full:
            return False
        return barrier.passed.wait(timeout)

    def recover_cut(self) -> None:
        """After a power cut or crash: seal the cut segment, declare the cut.

        The segment left in ``pending/`` keeps its complete fragments and is
        sealed ``recovered``; a recording left open gets ``interruption``
        (``power_loss`` if the kernel booted since its last entry, else
        ``crash``), unless an interruption already ended it (battery, storage).
        """
        from device.recovery import recover_pending

        reason = "crash" if self.known.last_boot_id == boot_id() else "power_loss"
        recovered = recover_pending(self.store)
        for r in recovered:
            if r.segment is not None:
                self.append(r.segment)
        rec = self.known.open_recording
        if rec is None or self.known.unresumed(rec.seq) is not None:
            return
        cuts = [r.cut_utc_ns for r in recovered if r.recording == rec.seq]
        cut = max(cuts) if cuts else rec.last_capture_utc_ns or int(self.clock.now() * 1e9)
        self.append(Interruption(reason=reason, detected_by="boot_recovery", cut_utc_ns=cut,
                                 recording=rec.seq))
        log.warning("recording %d was cut (%s); declared", rec.seq, reason)

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
        """Start a recording — or resume the interrupted one as a new span."""
        press_us = monotonic_us()
        if self.state != State.STANDBY:
            self._refuse(State.RECORDING)
            return None
        if not self._storage_watch.can_start(self._free_bytes()):
            self.stats.refused_transitions += 1
            log.error("refused: storage full, no recording starts (nothing is overwritten)")
            self._signal("storage_low")
            return None
        assert self.camera is not None
        self.camera.request_keyframe()  # with no pre-record, start at once
        self._end_memo()  # an exemption memo in progress ends here
        session = self._session
        resume = session is not None and session.interrupted
        start = None
        if session is None or not resume:
            session = _Session()
            start = RecordStart(
                trigger=trigger, category=self.config.category, officer=self.officer,
                pre_record_seconds=round(self._prerecord.seconds, 3),
                pre_record_audio=self.config.pre_record_audio)
            self._next_phase = 0
        session.interrupted = False
        offset = self._utc_offset_ns
        with self._route_lock:
            self._finish_ending()  # a stop pressed a moment ago goes first
            self._transition(State.RECORDING)
            for watch in (self._camera_watch, self._mic_watch):
                watch.rearm()
            frames, blocks = self._prerecord.drain()
            self._session = session
            self._break_segment = False  # for a recording that has ended
            self._capture_q.put(_Start(session, resume, start, offset, frames, blocks,
                                       press_us))
        self._signal("recording_started", red=True)
        try:
            seq = session.seq.result(timeout=30)
        except Exception:
            log.exception("the recording's start could not be appended")
            return None
        log.info("recording %d started (%s, %d pre-record frames)", seq,
                 "resumed" if resume else "new", len(frames))
        return seq

    def stop_recording(self, trigger: str) -> None:
        """End the recording at this moment's capture time (``record_stop`` once sealed)."""
        cut_us = monotonic_us()
        if self.state != State.RECORDING:
            self._refuse(State.STANDBY)
            return
        self._end_memo()
        with self._route_lock:
            self._transition(State.STANDBY)
            self._begin_ending(_Stop(trigger), cut_us)
            self._session = None  # the officer closed it: the next press starts anew
        self._signal("recording_stopped", red=False)

    def interrupt(self, reason: str, detected_by: str) -> None:
        """Stop capture for a reason: the recording stays open, the next press resumes it."""
        if self.state != State.RECORDING:
            return
        cut = _Interrupt(reason, detected_by, monotonic_us())
        self._end_memo()
        with self._route_lock:
            self._transition(State.STANDBY)
            self._begin_ending(cut, cut.cut_us)
            if self._session is not None:
                self._session.interrupted = True  # the next press resumes it
        self._signal("recording_stopped", red=False)
        log.warning("recording interrupted: %s (%s)", reason, detected_by)

    def mark(self, phase: str | None) -> SignedEntry:
        """Tag a key moment. ``None``: the next Art. 7 phase of this recording, in order."""
        if phase is None:
            order = MARKER_PHASES[:-1]  # "other" is the chord's
            phase = order[min(self._next_phase, len(order) - 1)]
            self._next_phase += 1
        if not self._threads or not all(t.is_alive() for t in self._threads):
            entry = self.append(Marker(phase=phase, recording=None))
        else:  # in capture order: after the record_start (or stop) pressed before it
            mark = _Mark(phase)
            with self._route_lock:
                if self._ending is not None:
                    self._ending.after.append(mark)
                else:
                    self._capture_q.put(mark)
            entry = mark.entry.result(timeout=60)
        self._signal("marker")
        return entry

    def press_function(self) -> bool:
        """Short press: ends a voice note, or makes a choice in the function menu.

        False (refused, and logged) when there is neither to act on.
        """
        if self._memo is not None and self._memo.collecting and self._menu is None:
            self._end_memo()
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
            self._menu = _FunctionMenu(OFFICER_REASONS, self._choose_interrupt_reason)
        elif self.state == State.STANDBY:
            self._menu = _FunctionMenu(EXEMPTION_REASONS, self._exemption_chosen)
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
        self._begin_memo(exemption=reason)

    # --- voice notes and memos -------------------------------------------------------

    def _begin_memo(self, interruption: int | None = None, exemption: str | None = None) -> None:
        name = f"v{interruption:06d}" if interruption is not None else "x"
        memo = _Memo(file=f"{name}-{time.time_ns()}.cseg", interruption=interruption,
                     exemption=exemption,
                     max_us=int((self.config.voice_note_max_seconds if exemption is None
                                 else EXEMPTION_MEMO_SECONDS) * 1e6))
        with self._route_lock:
            self._memo = memo
        threading.Thread(target=self._prompt_then_listen, args=(memo,), daemon=True,
                         name="recorder-prompt").start()

    def _prompt_then_listen(self, memo: _Memo) -> None:
        """Play the prompt; only then listen, so the prompt is not taken for an answer."""
        if memo.interruption is not None:
            self.stats.prompts += 1
            self._signal("prompt")
            cut = self.known.interruptions.get(memo.interruption)
            try:
                if self.prompts is not None and cut is not None and self.speaker is not None:
                    when = datetime.fromtimestamp(cut.cut_utc_ns / 1e9).astimezone()
                    pcm, rate = self.prompts.interruption_prompt(when, cut.reason)
                    self.speaker.play(pcm, rate)
            except Exception:
                log.exception("the voice-note prompt could not be played")
        with self._route_lock:
            if self._memo is memo:
                memo.collecting, memo.started_us = True, monotonic_us()

    def _end_memo(self) -> None:
        with self._route_lock:
            memo, self._memo = self._memo, None
        if memo is None:
            return
        if not memo.collecting:
            memo.blocks.clear()  # stopped before the prompt ended: nothing was said
        self._submit(lambda: self._seal_memo(memo))

    def _seal_memo(self, memo: _Memo) -> None:
        from device.voicenote import seal_voice_note

        if not memo.blocks:
            if memo.exemption is not None:
                self.append(Exemption(reason=memo.exemption))
                self._signal("marker")
            log.warning("no audio for the voice note; the prompt will repeat")
            return
        media, summary = seal_voice_note(self.store, memo.file, self.archive_public,
                                         memo.blocks)
        first_utc = summary.first_sample_us * 1000 + self._utc_offset_ns
        if memo.exemption is not None:
            self.append(Exemption(reason=memo.exemption, voice_memo=media))
            self._signal("marker")
            return
        assert memo.interruption is not None
        self.append(VoiceNote(interruption=memo.interruption, media=media,
                              first_capture_utc_ns=first_utc,
                              audio_samples=summary.audio_samples,
                              audio_rate=self.config.audio_rate,
                              speech_seconds=round(summary.speech_seconds, 3)))
        self.stats.voice_notes += 1
        if summary.speech_seconds < MIN_SPEECH_SECONDS:
            log.warning("no speech in the voice note; the prompt will repeat at the next start")
            self._signal("error")

    # --- receipts ------------------------------------------------------------------------

    def accept_receipt(self, envelope: Any) -> list[str]:
        """Free the media a dock's verified receipt covers. Raises ReceiptRefused."""
        if self.trust is None:
            raise ReceiptRefused("no trust file: cannot check a dock's signature")
        check = check_receipt(envelope, self.trust, self.config.device_id, self.known,
                              self.store)
        self.append(OffloadReceiptEntry(receipt=envelope))
        freed = []
        for path in check.files:
            path.unlink()
            freed.append(path.name)
        if freed:
            fsync_dir(check.files[0].parent)
        self.stats.freed_files += len(freed)
        log.info("receipt from %s: freed %d files", check.receipt.dock, len(freed))
        return freed

    def overdue(self) -> list[int]:
        return sorted(self.known.overdue_declared)

    # --- the ledger -----------------------------------------------------------------

    def append(self, body: Body) -> SignedEntry:
        """Append an entry, first declaring any wall-clock step since the last one."""
        self._check_clock()
        signed = self.ledger.append(body)
        self.known.apply(signed)
        return signed

    def _current_offset_ns(self) -> int:
        return int(self.clock.now() * 1e9) - time.monotonic_ns()

    def _check_clock(self) -> None:
        offset = self._current_offset_ns()
        step = offset - self._utc_offset_ns
        if abs(step) > CLOCK_JUMP_NS:
            mono = time.monotonic_ns()
            self._utc_offset_ns = offset
            self.known.apply(self.ledger.append(TimeSync(
                old_utc_ns=mono + offset - step, new_utc_ns=mono + offset,
                source=str(self.clock.sync.source))))
            log.warning("wall clock stepped %.3f s; time_sync appended", step / 1e9)

    # --- self-checks --------------------------------------------------------------------

    def _free_bytes(self) -> int:
        try:
            return int(self.storage.status().free_bytes) if self.storage else 1 << 62
        except OSError:
            return 1 << 62  # an unreadable gauge must not stop recording

    def _watch_loop(self) -> None:
        last_overdue_check = 0.0
        while not self._stopping.wait(0.5):
            try:
                with self._route_lock:
                    self._expire_ending()  # a source that never caught up
                self._check_clock()
                self._check_sources()
                self._check_battery()
                if self.state == State.RECORDING and \
                        self._storage_watch.check(self._free_bytes()) == "full":
                    self.interrupt("storage_full", "storage")
                    self._signal("storage_low")
                if time.monotonic() - last_overdue_check >= 5:
                    last_overdue_check = time.monotonic()
                    self._check_overdue()
            except Exception:
                log.exception("self-check failed")

    def _check_sources(self) -> None:
        """A camera or microphone silent while recording is a declared fault."""
        with self._route_lock:
            if self.state != State.RECORDING:
                return
            camera_down, mic_down = self._camera_watch.check(), self._mic_watch.check()
            if camera_down:
                self._capture_q.put(_CameraFault(self._camera_watch.last_us))
            if mic_down:
                self._capture_q.put(_MicFault(self._mic_watch.last_us))
        if camera_down:
            log.error("camera fault: no frame for %.1f s; recording audio alone",
                      CAMERA_TIMEOUT_S)
        if mic_down:
            log.error("microphone fault: no audio for %.1f s; video goes on", MIC_TIMEOUT_S)
        if camera_down or mic_down:
            self._signal("error")

    def _check_battery(self) -> None:
        if self.battery is None:
            return
        decision = self._battery.check(self.battery.read())
        if decision == "low":
            self._signal("low_battery")
        elif decision == "critical" and self.state != State.SHUTTING_DOWN:
            log.error("battery critical: sealing and shutting down")
            self.interrupt("battery", "battery_gauge")
            self.wait_idle(60)
            self._stopping.set()
            if self.on_power_down is not None:
                self.on_power_down()

    def _check_overdue(self) -> None:
        pending = self.known.unarchived_recordings()
        now = int(self.clock.now() * 1e9)
        oldest = pending[0].start_utc_ns if pending else None
        decision = self._overdue.check(oldest, now)
        self.overdue_warning = decision is not None
        if decision == "overdue":
            for rec in pending:
                if rec.seq in self.known.overdue_declared:
                    continue
                if self._overdue.check(rec.start_utc_ns, now) == "overdue":
                    self.append(Overdue(recording=rec.seq, started_utc_ns=rec.start_utc_ns,
                                        hours=self.config.overdue_hours))
                    log.error("recording %d is overdue for hand-in", rec.seq)

    # --- capture routing ------------------------------------------------------------

    def _video_loop(self) -> None:
        assert self.camera is not None
        while not self._stopping.is_set():
            frame = self.camera.read(timeout=0.2)
            if frame is not None:
                self._route(frame, frame.timestamp_us)

    def _audio_loop(self) -> None:
        assert self.microphone is not None
        while not self._stopping.is_set():
            block = self.microphone.read(timeout=0.2)
            if block is not None:
                self._route(block, block.timestamp_us)

    def _route(self, item: VideoFrame | AudioBlock, at_us: int) -> None:
        end_memo = False
        with self._route_lock:
            loss = self._source_loss(item)
            if isinstance(item, AudioBlock):
                if self._mic_watch.seen(item.end_us):
                    log.warning("microphone delivers again: audio resumes")
                    loss = None  # the silence is declared already (mic_fault)
            elif self._camera_watch.seen(at_us):
                log.warning("camera delivers again: video resumes")
                loss = None  # the silence is declared already (camera_fault)
                if self.state == State.RECORDING:
                    self._capture_q.put(_CameraBack())
                    assert self.camera is not None
                    self.camera.request_keyframe()
            recording = self._belongs_to_recording(item)
            if loss is not None and recording:
                self._declare_source_loss(loss)
            memo = self._memo
            if isinstance(item, AudioBlock) and memo is not None and memo.collecting:
                memo.blocks.append(item)
                end_memo = item.end_us - memo.started_us >= memo.max_us
            if recording:
                self._queue_capture(item, at_us)
            elif isinstance(item, VideoFrame):
                self._prerecord.add_video(item)
            else:
                self._prerecord.add_audio(item)
        if end_memo:
            self._end_memo()

    def _belongs_to_recording(self, item: VideoFrame | AudioBlock) -> bool:
        """Whether ``item`` goes to the recording: while recording, or captured before
        the stop being ended (an audio block by its first sample).

        An item from after that stop counts its source as caught up; the last
        source to catch up queues the stop.
        """
        if self.state == State.RECORDING:
            return True
        ending = self._ending
        if ending is None:
            return False
        if item.timestamp_us < ending.cut_us:
            return True
        ending.waiting.discard(type(item))
        if not ending.waiting:
            self._finish_ending()
        return False

    def _begin_ending(self, item: _Stop | _Interrupt, cut_us: int) -> None:
        """Under the route lock, on leaving ``recording``: end the span at ``cut_us``."""
        self._finish_ending()  # (none is pending while recording; to be sure)
        ending = _Ending(item, cut_us, time.monotonic() + ENDING_WAIT_S)
        # A source declared silent is not waited for.
        for kind, watch in ((VideoFrame, self._camera_watch), (AudioBlock, self._mic_watch)):
            if watch.faulted:
                ending.waiting.discard(kind)
        self._ending = ending
        if not ending.waiting:
            self._finish_ending()

    def _finish_ending(self) -> None:
        """Under the route lock: queue the pending stop behind the capture it waited for."""
        if self._ending is not None:
            self._capture_q.put(self._ending.item)
            for item in self._ending.after:
                self._capture_q.put(item)
            self._ending = None

    def _expire_ending(self) -> bool:
        """Under the route lock: queue a pending stop whose deadline passed; True if none waits."""
        if self._ending is not None and time.monotonic() >= self._ending.deadline:
            self._finish_ending()
        return self._ending is None

    def _settle_ending(self) -> None:
        """Return once a pending stop is queued: its sources caught up, or its deadline passed."""
        while True:
            with self._route_lock:
                if self._expire_ending():
                    return
            time.sleep(0.01)

    def _source_loss(self, item: VideoFrame | AudioBlock) -> _Overflow | None:
        """What the source itself lost just before ``item``, as a gap to declare.

        The camera numbers frames by capture time, so a frame it skipped (sensor,
        encoder or its own queue) shows as a jump in the index; the microphone
        counts the blocks it could not deliver. Either is capture that no
        segment will hold: never a silent hole.
        """
        if isinstance(item, VideoFrame):
            last, self._last_frame_index = self._last_frame_index, item.index
            if last is None or item.index <= last + 1:
                return None
            lost = item.index - last - 1
            period_us = 1_000_000 // self.config.fps
            return _Overflow(item.timestamp_us - lost * period_us, lost, 0,
                             reason="camera_fault", detected_by="frame_index")
        assert self.microphone is not None
        if self.microphone.overflows == self._mic_overflows:
            return None
        # Blocks queued before the loss still follow on; the first that does not
        # (its clock anchored afresh) is where the audio was lost.
        previous_end_us = self._mic_watch.last_us
        jump_us = item.timestamp_us - previous_end_us
        if abs(jump_us) <= AUDIO_FOLLOWS_ON_US:
            return None
        self._mic_overflows = self.microphone.overflows
        lost = max(0, jump_us * item.rate // 1_000_000)
        return _Overflow(previous_end_us, 0, lost, reason="mic_fault",
                         detected_by="audio_overflow")

    def _declare_source_loss(self, loss: _Overflow) -> None:
        """Close the span at the loss, like an overflow of our own queue."""
        self.stats.source_losses += 1
        self.stats.dropped_frames += loss.dropped_frames
        self.stats.dropped_samples += loss.dropped_samples
        log.error("%s lost capture (%s): %d frames, about %d samples; the gap will be declared",
                  "camera" if loss.reason == "camera_fault" else "microphone",
                  loss.detected_by, loss.dropped_frames, loss.dropped_samples)
        if self._overflow is None:
            self._overflow = loss
        else:  # already ending the span: the gap only grows
            self._overflow.dropped_frames += loss.dropped_frames
            self._overflow.dropped_samples += loss.dropped_samples

    def _queue_capture(self, item: VideoFrame | AudioBlock, at_us: int) -> None:
        if self._break_segment:
            try:
                self._capture_q.put_nowait(_SegmentBreak())
            except queue.Full:
                pass  # with the next item, then
            else:
                self._break_segment = False
                assert self.camera is not None
                self.camera.request_keyframe()
        if self._overflow is not None:
            if self._capture_q.qsize() > self._capture_q.maxsize // 2:
                self._count_drop(self._overflow, item)
                return
            # room again: close the span, declare the gap, start a new span
            self._capture_q.put(self._overflow)
            self._overflow = None
            assert self.camera is not None
            self.camera.request_keyframe()
        try:
            self._capture_q.put_nowait(item)
        except queue.Full:
            self._overflow = _Overflow(at_us, 0, 0)
            self._count_drop(self._overflow, item)
            self.stats.overflows += 1
            log.error("capture queue full: dropping capture, the gap will be declared")

    def _count_drop(self, overflow: _Overflow, item: VideoFrame | AudioBlock) -> None:
        if isinstance(item, VideoFrame):
            overflow.dropped_frames += 1
            self.stats.dropped_frames += 1
        else:
            overflow.dropped_samples += len(item.samples)
            self.stats.dropped_samples += len(item.samples)

    # --- the mux thread -------------------------------------------------------------

    def _mux_loop(self) -> None:
        rec: _Recording | None = None
        interrupted: _Recording | None = None  # the span an interruption ended, to resume
        segmenter: Segmenter | None = None
        audio_only: _AudioSpan | None = None  # while the camera is down
        video_from_us = 0  # frames before this are covered by audio-only segments
        while True:
            item = self._capture_q.get()
            try:
                if item is _END:
                    break
                if isinstance(item, VideoFrame):
                    if segmenter is not None and rec is not None:
                        if item.timestamp_us < video_from_us:
                            self.stats.dropped_frames += 1  # its time is sealed as audio
                            continue
                        if not rec.first_frame_seen and item.timestamp_us >= rec.press_us:
                            rec.first_frame_seen = True
                            self.stats.press_to_frame_ms.append(
                                (monotonic_us() - rec.press_us) / 1000)
                        segmenter.add_video(item)
                elif isinstance(item, AudioBlock):
                    if audio_only is not None:
                        audio_only.add(item)
                    elif segmenter is not None:
                        segmenter.add_audio(item)
                elif isinstance(item, _Start):
                    rec = self._begin_span(item, interrupted)
                    interrupted = None
                    segmenter, audio_only, video_from_us = self._new_span(rec), None, 0
                    # In capture order, as live capture comes: fed one stream after
                    # the other, the segmenter would take the audio for stalled.
                    for buffered in heapq.merge(item.frames, item.blocks,
                                                key=lambda x: x.timestamp_us):
                        if isinstance(buffered, VideoFrame):
                            segmenter.add_video(buffered)
                        else:
                            segmenter.add_audio(buffered)
                elif isinstance(item, _Mark):
                    self._submit(lambda m=item, r=rec: self._append_marker(m, r))
                elif isinstance(item, _Barrier):
                    self._submit(item.passed.set)  # behind every seal this loop asked for
                elif rec is None:
                    continue
                elif isinstance(item, _CameraFault):
                    if segmenter is not None:
                        segmenter.close()
                    self._submit(lambda r=rec, c=item: self._declare_fault(
                        r, "camera_fault", "camera_watchdog", c.cut_us))
                    rec = rec.next_span()
                    segmenter, audio_only = None, _AudioSpan(self, rec)
                elif isinstance(item, _MicFault):
                    # The span goes on (video without sound); the silence is said.
                    self._submit(lambda r=rec, m=item: self._declare_fault(
                        r, "mic_fault", "mic_watchdog", m.cut_us))
                elif isinstance(item, _SegmentBreak):
                    # Declared already, in the ledger's order, by the seal thread.
                    if audio_only is not None:
                        audio_only.close()
                        audio_only = _AudioSpan(self, rec)
                    elif segmenter is not None:
                        segmenter.close()
                        segmenter = self._new_span(rec)
                elif isinstance(item, _CameraBack):
                    if audio_only is not None:
                        video_from_us = audio_only.close() or 0
                        rec = rec.next_span()
                        segmenter, audio_only = self._new_span(rec), None
                else:  # the span ends: overflow, interruption or stop
                    if audio_only is not None:
                        audio_only.close()
                    elif segmenter is not None:
                        segmenter.close()
                    segmenter, audio_only = None, None
                    if isinstance(item, _Overflow):
                        self._submit(lambda r=rec, o=item: self._declare_overflow(r, o))
                        rec = rec.next_span()
                        segmenter = self._new_span(rec)
                    elif isinstance(item, _Interrupt):
                        self._submit(lambda r=rec, i=item: self._declare_interruption(r, i))
                        rec, interrupted = None, rec
                    elif isinstance(item, _Stop):
                        self._submit(lambda r=rec, t=item.trigger: self._finish_recording(r, t))
                        rec, interrupted = None, None
            except Exception as e:  # keep the agent alive; the fault is logged and shown
                self.stats.last_error = f"mux: {e}"
                log.exception("mux thread")
                self._signal("error")
        self._seal_q.put(_END)

    def _begin_span(self, start: _Start, interrupted: _Recording | None) -> _Recording:
        """On the mux thread: the span a press starts, its entry appended in order.

        A new recording waits here for its ``record_start`` (the seal thread
        appends it after everything queued before, a stop pressed a moment ago
        included): its segments are named by its seq.
        """
        session = start.session
        self._submit(lambda: self._open_span(start))
        seq = session.seq.result()  # raises if it could not be appended
        if not start.resume:
            return _Recording(seq, 0, 0, start.utc_offset_ns, start.press_us)
        if interrupted is not None and interrupted.seq == seq:
            rec = interrupted.next_span()
        else:  # left open by a cut before this boot
            rec = _Recording(seq, session.span + 1, session.next_index, 0, 0, True)
        rec.utc_offset_ns, rec.press_us, rec.first_frame_seen = (
            start.utc_offset_ns, start.press_us, False)
        return rec

    def _open_span(self, start: _Start) -> None:
        """On the seal thread: ``record_start``, or ``resume`` of the open recording."""
        session = start.session
        try:
            if start.start is not None:
                session.seq.set_result(self.append(start.start).entry.seq)
            else:
                seq = session.seq.result()
                cut = self.known.unresumed(seq)
                if cut is None:  # open without a declared cut: never silent
                    last = self.known.recordings[seq].last_capture_utc_ns \
                        if seq in self.known.recordings else None
                    cut = self.append(Interruption(
                        reason="other", detected_by="resume_without_stop",
                        cut_utc_ns=last or 0, recording=seq)).entry.seq
                self.append(Resume(interruption=cut, recording=seq))
        except Exception as e:
            if not session.seq.done():
                session.seq.set_exception(e)
            raise
        if self.known.unexplained:
            self._begin_memo(interruption=self.known.unexplained[-1])

    def _append_marker(self, mark: _Mark, rec: _Recording | None) -> None:
        try:
            mark.entry.set_result(self.append(Marker(
                phase=mark.phase, recording=rec.seq if rec is not None else None)))
        except Exception as e:
            mark.entry.set_exception(e)
            raise

    def _next_file(self, rec: _Recording) -> tuple[str, int]:
        """The next segment's name and index; never one a cut left behind."""
        while True:
            index = rec.next_index
            rec.next_index += 1
            name = f"r{rec.seq:06d}-{index:05d}.cseg"
            taken = any((self.store / d / name).exists() for d in ("media", "pending"))
            if not taken and name not in self.known.sealed:
                return name, index

    def _new_span(self, rec: _Recording) -> Segmenter:
        c = self.config
        sinks: dict[int, _QueuedSink] = {}  # the segmenter's segment number -> its sink

        def open_sink(n: int) -> _QueuedSink:
            sinks[n] = _QueuedSink(self, rec, *self._next_file(rec))
            return sinks[n]

        def fragment_end(n: int, info: FragmentInfo) -> None:
            sink = sinks[n]
            self._submit(lambda: sink.end_fragment(info))

        def segment_end(n: int, summary: SegmentSummary) -> None:
            sink = sinks.pop(n)
            self._submit(lambda: sink.seal(summary))

        return Segmenter(open_sink, width=c.width, height=c.height, fps=c.fps,
                         audio_rate=c.audio_rate, segment_us=int(c.segment_seconds * 1e6),
                         on_fragment_end=fragment_end, on_segment_end=segment_end)

    # --- the seal thread ------------------------------------------------------------

    def _submit(self, work: Callable[[], None], nbytes: int = 0) -> None:
        self._seal_q.put(work, nbytes)  # blocks when sealing is behind: back-pressure

    def _seal_loop(self) -> None:
        while True:
            work = self._seal_q.get()
            if work is _END:
                break
            try:
                work()
            except Exception as e:
                self.stats.last_error = f"seal: {e}"
                log.exception("seal thread")
                self._signal("error")

    def _seal_failed(self, sink: _QueuedSink, failure: Exception) -> None:
        """The medium refused to go on writing a segment: keep what is durable, declare the rest.

        Runs on the seal thread, so the entries land in the ledger's order: the
        segment's durable fragments (``recovered``), then the interruption and
        its resume, then the segments after it. Nothing is deleted: bytes the
        journal cannot vouch for are kept aside in ``pending/``.

        Recording goes on at once in a new file (from the next keyframe), so
        only about a fragment and a keyframe interval is lost — unless the file
        before was refused from its start too: then the new file waits for the
        segment's natural end, so a dead medium fails once per segment, not
        once per keyframe.
        """
        from device.recovery import recover_file, release_journal

        self.stats.seal_failures += 1
        self.stats.last_error = f"seal {sink.file}: {failure}"
        log.error("the medium refused %s (%s); its durable part is kept, the rest declared",
                  sink.file, failure)
        self._signal("error")
        sink.abandon()
        try:
            recovered = recover_file(self.store, sink.file)
        except Exception:  # left in pending/ for the next start's recovery
            log.exception("%s: could not be recovered now", sink.file)
            recovered = None
        rec, durable = sink.rec, False
        cut_us = sink.first_capture_us or monotonic_us()  # nothing durable: from the file's start
        if recovered is not None and recovered.segment is not None:
            self.append(recovered.segment)
            release_journal(self.store, recovered)
            self.stats.segments_sealed += 1
            self.stats.bytes_sealed += recovered.segment.media.size
            durable = True
            if recovered.last_capture_utc_ns is not None:  # from the last sealed capture
                cut_us = (recovered.last_capture_utc_ns - rec.utc_offset_ns) // 1000
        full = getattr(failure, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        self._declare_fault(rec, "storage_full" if full else "other", "storage_write", cut_us)
        # A new file at once, unless this one and the one before had nothing durable.
        retry = durable or not self._refused_from_start
        self._refused_from_start = not durable
        if retry:
            with self._route_lock:
                if self.recording == rec.seq:
                    self._break_segment = True

    def _declare_overflow(self, rec: _Recording, overflow: _Overflow) -> None:
        cut = self.append(Interruption(
            reason=overflow.reason, detected_by=overflow.detected_by,
            cut_utc_ns=overflow.cut_us * 1000 + rec.utc_offset_ns, recording=rec.seq))
        self.append(Resume(interruption=cut.entry.seq, recording=rec.seq))
        log.error("declared a gap: %d frames and %d samples dropped", overflow.dropped_frames,
                  overflow.dropped_samples)

    def _declare_fault(self, rec: _Recording, reason: str, detected_by: str,
                       cut_us: int) -> None:
        """A device fault: declared, and resumed at once with what still works."""
        cut = self.append(Interruption(reason=reason, detected_by=detected_by,
                                       cut_utc_ns=cut_us * 1000 + rec.utc_offset_ns,
                                       recording=rec.seq))
        self.append(Resume(interruption=cut.entry.seq, recording=rec.seq))

    def _declare_interruption(self, rec: _Recording, cut: _Interrupt) -> None:
        self.append(Interruption(reason=cut.reason, detected_by=cut.detected_by,
                                 cut_utc_ns=cut.cut_us * 1000 + rec.utc_offset_ns,
                                 recording=rec.seq))

    def _finish_recording(self, rec: _Recording, trigger: str) -> None:
        self.append(RecordStop(recording=rec.seq, trigger=trigger))
        log.info("recording %d stopped (%s)", rec.seq, trigger)

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
        s = self.stats
        return {
            "state": str(self.state), "device": self.config.device_id, "officer": self.officer,
            "recording": self.recording, "segments_sealed": s.segments_sealed,
            "bytes_sealed": s.bytes_sealed, "dropped_frames": s.dropped_frames,
            "dropped_samples": s.dropped_samples, "overflows": s.overflows,
            "source_losses": s.source_losses, "seal_failures": s.seal_failures,
            "refused_transitions": s.refused_transitions, "refused_presses": s.refused_presses,
            "press_to_frame_ms": s.press_to_frame_ms[-1] if s.press_to_frame_ms else None,
            "capture_queue": self._capture_q.qsize(), "seal_queue": self._seal_q.qsize(),
            "prerecord_seconds": round(self._prerecord.seconds, 3),
            "next_seq": self.ledger.next_seq, "last_error": s.last_error,
            "unexplained": self.known.unexplained, "voice_note": self._memo is not None,
            "prompts": s.prompts, "voice_notes": s.voice_notes, "freed_files": s.freed_files,
            "docked": self.docked, "overdue_warning": self.overdue_warning,
            "overdue": self.overdue(), "free_bytes": self._free_bytes(),
        }


class _FunctionMenu:
    """Choose one of ``choices`` with short presses of the function button.

    The first choice is taken unless pressed again; each press moves on one
    (the device confirms with a short vibration). ``MENU_SECONDS`` after the
    last press the choice is made.
    """

    def __init__(self, choices: tuple[str, ...], chosen: Callable[[str], None]):
        self.choices, self.chosen = choices, chosen
        self.index = 0
        self._timer = self._arm()

    def _arm(self) -> threading.Timer:
        timer = threading.Timer(MENU_SECONDS, lambda: self.chosen(self.choices[self.index]))
        timer.daemon = True
        timer.start()
        return timer

    def press(self) -> None:
        self._timer.cancel()
        self.index = (self.index + 1) % len(self.choices)
        self._timer = self._arm()

    def cancel(self) -> str:
        """Stop waiting; the choice as it stands."""
        self._timer.cancel()
        return self.choices[self.index]


class _SealQueue:
    """Work for the seal thread, in order, bounded by the media bytes it carries.

    Bounding by bytes, not items, makes the queue hold about ``queue_seconds``
    of media whatever the bitrate and however PyAV happens to cut its writes.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        self._cv = threading.Condition()

    def put(self, work: Any, nbytes: int = 0) -> None:
        with self._cv:
            while self._bytes and self._bytes + nbytes > self.max_bytes:
                self._cv.wait()
            self._items.append((work, nbytes))
            self._bytes += nbytes
            self._cv.notify_all()

    def get(self) -> Any:
        with self._cv:
            while not self._items:
                self._cv.wait()
            work, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._cv.notify_all()
            return work

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _QueuedSink:
    """The muxer's sink for one segment: bytes go, in order, to the seal thread.

    A sealing step the medium refuses ends the file's sealing: the recorder
    seals what is durable and declares the rest (``Recorder._seal_failed``);
    later steps for this file are let go.
    """

    def __init__(self, recorder: Recorder, rec: _Recording, file: str, index: int,
                 codecs: dict[str, str] | None = None):
        self.recorder, self.file, self.rec, self.index = recorder, file, rec, index
        self.span = rec.span
        self._sealer: SegmentSealer | None = None
        self._failed = False
        self.first_capture_us: int | None = None  # as the muxer's fragments tell it
        recorder._submit(lambda: self._step(lambda: self._open(codecs)))

    def _step(self, step: Callable[[], _T]) -> _T | None:
        """One sealing step, on the seal thread; after a refusal, none (None)."""
        if self._failed:
            return None
        try:
            return step()
        except Exception as failure:  # noqa: BLE001 - the recorder declares it
            self._failed = True
            self.recorder._seal_failed(self, failure)
            return None

    def abandon(self) -> None:
        """End a refused file's sealer: its threads stop, its files close, nothing moves."""
        if self._sealer is not None:
            with contextlib.suppress(Exception):  # the failure is being declared already
                self._sealer.close()

    def _open(self, codecs: dict[str, str] | None) -> None:
        r = self.recorder
        self._sealer = r.sealer_class(
            r.store, self.file, r.archive_public, codecs=codecs,
            context={"recording": self.rec.seq, "span": self.span, "index": self.index,
                     "utc_offset_ns": self.rec.utc_offset_ns,
                     "frame_period_ns": 1_000_000_000 // r.config.fps,
                     "audio_rate": r.config.audio_rate})

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.recorder._submit(
            lambda: self._step(lambda: self._sealer.write(chunk)),  # type: ignore[union-attr]
            len(chunk))
        return len(chunk)

    def end_fragment(self, info: FragmentInfo) -> None:
        """Runs on the seal thread: the fragment is complete; make it durable."""
        if self.first_capture_us is None:
            self.first_capture_us = info.first_frame_us or info.first_sample_us
        self._step(lambda: self._sealer.end_fragment(info))  # type: ignore[union-attr]

    def seal(self, summary: SegmentSummary) -> None:
        """Runs on the seal thread: close the file, then append its segment entry."""
        # A segment starts at its origin: its first keyframe, or the audio just
        # before it that the segment holds (after an audio-only span).
        first = summary.origin_us or summary.first_frame_timestamp_us or 0
        last = summary.last_frame_timestamp_us or summary.last_sample_timestamp_us or first
        self._seal(first, last, summary.frames, summary.audio_samples,
                   1_000_000_000 // self.recorder.config.fps)

    def seal_audio_only(self, first_us: int, samples: int) -> None:
        rate = self.recorder.config.audio_rate
        last = first_us + (samples - 1) * 1_000_000 // rate
        self._seal(first_us, last, 0, samples, 1_000_000_000 // rate)

    def _seal(self, first_us: int, last_us: int, frames: int, samples: int,
              period_ns: int) -> None:
        # The journal stays until the entry is appended: a cut in between must
        # still find the sealed file and give it its entry at the next start.
        media = self._step(lambda: self._sealer.close(keep_journal=True))  # type: ignore[union-attr]
        if media is None:  # refused: declared instead
            return
        assert self._sealer is not None
        r, offset = self.recorder, self.rec.utc_offset_ns
        r.append(Segment(
            recording=self.rec.seq, span=self.span, index=self.index, media=media,
            first_capture_utc_ns=first_us * 1000 + offset,
            last_capture_utc_ns=last_us * 1000 + offset, frame_period_ns=period_ns,
            frames=frames, audio_samples=samples, audio_rate=r.config.audio_rate))
        self._sealer.release_journal()
        r._refused_from_start = False
        r.stats.segments_sealed += 1
        r.stats.bytes_sealed += media.size


class _AudioSpan:
    """Audio-only segments while the camera is down: audio is better than nothing.

    Each segment is a FLAC-only fragmented MP4 of ``segment_seconds``, cut at
    the exact sample; its ``segment`` entry has no frames and the audio sample
    period as its period, so consecutive segments abut exactly.
    """

    def __init__(self, recorder: Recorder, rec: _Recording):
        self.recorder, self.rec = recorder, rec
        self._writer: Any = None
        self._sink: _QueuedSink | None = None
        self.end_us: int | None = None  # just after the last sample given

    def add(self, block: AudioBlock) -> None:
        from device.voicenote import VoiceNoteWriter

        rest: AudioBlock | None = block
        while rest is not None and len(rest.samples):
            if self._writer is None:
                r = self.recorder
                self._sink = sink = _QueuedSink(r, self.rec, *r._next_file(self.rec),
                                                codecs={"audio": "flac"})
                self._writer = VoiceNoteWriter(
                    sink, r.config.audio_rate,
                    on_fragment_end=lambda info, r=r, sink=sink: r._submit(
                        lambda: sink.end_fragment(info)),
                    max_seconds=r.config.segment_seconds)
            rest = self._writer.add(rest)
            if self._writer.full:
                self._finish()
        self.end_us = block.end_us

    def _finish(self) -> None:
        summary, sink = self._writer.close(), self._sink
        self._writer = self._sink = None
        if summary.audio_samples and sink is not None:
            self.recorder._submit(lambda: sink.seal_audio_only(summary.first_sample_us,
                                                               summary.audio_samples))

    def close(self) -> int | None:
        if self._writer is not None:
            self._finish()
        return self.end_us
