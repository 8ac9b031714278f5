"""The recorder: one press records continuous, segmented, sealed audio and video.

States (docs/recorder.md has the diagram)::

    booting ──► standby ◄──► recording
        │          │             │
        └──────────┴─────────────┴──► shutting_down

In *standby* the camera and microphone run into the pre-record buffer. A press
of the record button appends ``record_start`` and hands the buffer and all
live capture to the pipeline; the next press appends ``record_stop`` after the
last segment is sealed. A transition that is not allowed is refused and
logged; it never raises into the caller.

The pipeline has three stages joined by bounded queues, so a slow disk never
blocks capture::

    camera, microphone ─► capture queue ─► mux thread (Segmenter: fMP4, FLAC)
                                              │ bytes, fragment ends, segment ends
                                              ▼
                                          seal queue ─► seal thread (SegmentSealer,
                                                         ledger appends, in order)

If the capture queue is full, capture is dropped *and said*: the span ends,
an ``interruption`` (reason ``other``, detected by ``queue_overflow``) and a
``resume`` are appended, and a new span starts at the next keyframe, so the
lost time is a declared gap in the ledger, never a silent hole.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from device.config import RecorderConfig
from device.ledger import LedgerWriter, boot_id
from device.muxer import FragmentInfo, Segmenter, SegmentSummary
from device.prerecord import PreRecordBuffer
from device.sealer import SegmentSealer
from hardware.camera import Camera, monotonic_us
from hardware.clock import Clock
from hardware.controls import ControlEvent, Controls
from hardware.factory import HardwareFactory
from hardware.frames import AudioBlock, VideoFrame
from hardware.indicators import Indicators
from hardware.microphone import Microphone, MicrophoneConfig
from protocol.entries import (
    Assigned,
    Body,
    EntryTime,
    Interruption,
    Marker,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    TimeSync,
)
from protocol.envelope import SignedEntry, parse_line, split_lines
from protocol.errors import ProtocolError

log = logging.getLogger(__name__)

CLOCK_JUMP_NS = 1_000_000_000  # a wall-clock step larger than this is a signed time_sync


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


def entry_clock(clock: Clock) -> Callable[[], EntryTime]:
    """Entry times from the device's clock: wall time with its sync state."""
    boot = boot_id()

    def now() -> EntryTime:
        sync = clock.sync
        return EntryTime(utc_ns=int(clock.now() * 1e9), clock_source=str(sync.source),
                         clock_synced=sync.is_reference, monotonic_ns=time.monotonic_ns(),
                         boot_id=boot)

    return now


def assigned_officer(ledger_path: Path) -> str:
    """The officer of the ledger's last ``assigned`` entry ("" if none)."""
    officer = ""
    if ledger_path.exists():
        for line in split_lines(ledger_path.read_bytes()):
            try:
                body = parse_line(line).entry.body
            except ProtocolError:
                continue
            if isinstance(body, Assigned):
                officer = body.officer
    return officer


# --- what travels through the queues -------------------------------------------------


@dataclass
class _Start:
    recording: int
    utc_offset_ns: int  # capture clock -> UTC, fixed for the recording
    frames: list[VideoFrame]
    blocks: list[AudioBlock]
    press_us: int


@dataclass
class _Stop:
    trigger: str


@dataclass
class _Overflow:
    cut_us: int
    dropped_frames: int
    dropped_samples: int


_END = object()


@dataclass
class _Recording:
    """The mux thread's view of the recording in progress."""

    seq: int
    utc_offset_ns: int
    press_us: int
    span: int = 0
    next_index: int = 0
    first_frame_seen: bool = False


@dataclass
class RecorderStats:
    segments_sealed: int = 0
    bytes_sealed: int = 0
    dropped_frames: int = 0
    dropped_samples: int = 0
    overflows: int = 0
    refused_transitions: int = 0
    press_to_frame_ms: list[float] = field(default_factory=list)
    last_error: str = ""


class Recorder:
    """The recording agent on the officer's device.

    >>> # recorder = Recorder(config, hardware, ledger, archive_public)
    >>> # recorder.start()          # booting -> standby, capture into the pre-record buffer
    >>> # recorder.press_record()   # standby -> recording (what the record button does)
    >>> # recorder.press_record()   # recording -> standby, after the last segment is sealed
    >>> # recorder.close()
    """

    def __init__(self, config: RecorderConfig, hardware: HardwareFactory, ledger: LedgerWriter,
                 archive_public: bytes, *, clock: Clock | None = None):
        self.config = config
        self.hardware = hardware
        self.ledger = ledger
        self.archive_public = archive_public
        self.clock = clock or hardware.clock()
        self.store = ledger.path.parent
        self.state = State.BOOTING
        self.stats = RecorderStats()
        self.officer = assigned_officer(ledger.path)
        self.recording: int | None = None  # seq of the record_start in progress

        fps = config.fps
        per_second = fps + config.audio_rate // MicrophoneConfig().block + 1
        self._capture_q: queue.Queue[Any] = queue.Queue(int(config.queue_seconds * per_second))
        media_bytes_per_s = config.video_bitrate // 8 + config.audio_rate * 2
        self._seal_q = _SealQueue(int(config.queue_seconds * media_bytes_per_s))
        self._route_lock = threading.Lock()  # state changes vs. capture routing
        self._prerecord = PreRecordBuffer(config.pre_record_seconds, config.pre_record_audio)
        self._overflow: _Overflow | None = None
        self._utc_offset_ns = self._current_offset_ns()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._idle = threading.Event()  # the pipeline has sealed everything queued
        self._idle.set()

        # What a segment is written into; a test may swap in a slower one.
        self.sealer_class: type[SegmentSealer] = SegmentSealer
        self.camera: Camera | None = None
        self.microphone: Microphone | None = None
        self.controls: Controls | None = None
        self.indicators: Indicators | None = None

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Open the devices, start capture into the pre-record buffer: standby."""
        c = self.config
        self.camera = self.hardware.camera(
            width=c.width, height=c.height, fps=c.fps, bitrate=c.video_bitrate,
            keyframe_interval=c.effective_keyframe_interval, overlay=c.overlay,
            device_id=c.device_id, officer_id=self.officer)
        self.microphone = self.hardware.microphone(MicrophoneConfig(rate=c.audio_rate))
        self.controls = self.hardware.controls()
        self.controls.when_event = self._on_control_event
        self.indicators = self.hardware.indicators()
        for name, target in (("mux", self._mux_loop), ("seal", self._seal_loop),
                             ("video", self._video_loop), ("audio", self._audio_loop),
                             ("clock", self._clock_loop)):
            t = threading.Thread(target=target, name=f"recorder-{name}", daemon=True)
            self._threads.append(t)
        self.microphone.start()
        self.camera.start()
        for t in self._threads:
            t.start()
        self._transition(State.STANDBY)

    def close(self, trigger: str = "shutdown") -> None:
        """Stop any recording (sealing it), then stop capture and the threads."""
        if self.state == State.RECORDING:
            self.stop_recording(trigger)
        if not self._transition(State.SHUTTING_DOWN):
            return
        self._capture_q.put(_END)
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=30)
        for device in (self.camera, self.microphone, self.controls, self.indicators):
            if device is not None:
                device.close()

    def healthy(self) -> bool:
        """For the systemd watchdog: every thread alive and the pipeline not wedged."""
        return self.state != State.SHUTTING_DOWN and all(t.is_alive() for t in self._threads)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until everything queued is sealed (tests, shutdown)."""
        return self._idle.wait(timeout)

    # --- officer actions ----------------------------------------------------------

    def _on_control_event(self, event: ControlEvent) -> None:
        try:
            if event == ControlEvent.RECORD:
                self.press_record()
            elif event == ControlEvent.MARKER:
                self.mark("other")
        except Exception:  # a button must never take the recorder down
            log.exception("handling %s failed", event)

    def press_record(self) -> str:
        """What one short press of the record button does: start or stop."""
        if self.state == State.RECORDING:
            self.stop_recording("button")
        else:
            self.start_recording("button")
        return self.state

    def start_recording(self, trigger: str) -> int | None:
        press_us = monotonic_us()
        if self.state != State.STANDBY:
            self._refuse(State.RECORDING)
            return None
        assert self.camera is not None
        self.camera.request_keyframe()  # with no pre-record, start at once
        offset = self._utc_offset_ns
        seq = self.append(RecordStart(
            trigger=trigger, category=self.config.category, officer=self.officer,
            pre_record_seconds=round(self._prerecord.seconds, 3),
            pre_record_audio=self.config.pre_record_audio)).entry.seq
        with self._route_lock:
            self._transition(State.RECORDING)
            frames, blocks = self._prerecord.drain()
            self.recording = seq
            self._idle.clear()
            self._capture_q.put(_Start(seq, offset, frames, blocks, press_us))
        self._signal("recording_started", red=True)
        log.info("recording %d started (%d pre-record frames)", seq, len(frames))
        return seq

    def stop_recording(self, trigger: str) -> None:
        if self.state != State.RECORDING:
            self._refuse(State.STANDBY)
            return
        with self._route_lock:
            self._transition(State.STANDBY)
            self._capture_q.put(_Stop(trigger))
            self.recording = None
        self._signal("recording_stopped", red=False)

    def mark(self, phase: str) -> SignedEntry:
        entry = self.append(Marker(phase=phase, recording=self.recording))
        self._signal("marker")
        return entry

    # --- the ledger -----------------------------------------------------------------

    def append(self, body: Body) -> SignedEntry:
        """Append an entry, first declaring any wall-clock step since the last one."""
        self._check_clock()
        return self.ledger.append(body)

    def _current_offset_ns(self) -> int:
        return int(self.clock.now() * 1e9) - time.monotonic_ns()

    def _check_clock(self) -> None:
        offset = self._current_offset_ns()
        step = offset - self._utc_offset_ns
        if abs(step) > CLOCK_JUMP_NS:
            mono = time.monotonic_ns()
            self.ledger.append(TimeSync(old_utc_ns=mono + self._utc_offset_ns,
                                        new_utc_ns=mono + offset,
                                        source=str(self.clock.sync.source)))
            log.warning("wall clock stepped %.3f s; time_sync appended", step / 1e9)
            self._utc_offset_ns = offset

    def _clock_loop(self) -> None:
        while not self._stopping.wait(0.5):
            try:
                self._check_clock()
            except Exception:
                log.exception("clock check failed")

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
        with self._route_lock:
            if self.state != State.RECORDING:
                if isinstance(item, VideoFrame):
                    self._prerecord.add_video(item)
                else:
                    self._prerecord.add_audio(item)
                return
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
        segmenter: Segmenter | None = None
        while True:
            item = self._capture_q.get()
            try:
                if item is _END:
                    break
                if isinstance(item, VideoFrame):
                    if segmenter is not None and rec is not None:
                        if not rec.first_frame_seen and item.timestamp_us >= rec.press_us:
                            rec.first_frame_seen = True
                            self.stats.press_to_frame_ms.append(
                                (monotonic_us() - rec.press_us) / 1000)
                        segmenter.add_video(item)
                elif isinstance(item, AudioBlock):
                    if segmenter is not None:
                        segmenter.add_audio(item)
                elif isinstance(item, _Start):
                    rec = _Recording(item.recording, item.utc_offset_ns, item.press_us)
                    segmenter = self._new_span(rec)
                    for frame in item.frames:
                        segmenter.add_video(frame)
                    for block in item.blocks:
                        segmenter.add_audio(block)
                elif isinstance(item, _Overflow) and rec is not None and segmenter is not None:
                    segmenter.close()
                    self._submit(lambda r=rec, o=item: self._declare_overflow(r, o))
                    rec.span += 1
                    segmenter = self._new_span(rec)
                elif isinstance(item, _Stop) and rec is not None and segmenter is not None:
                    segmenter.close()
                    self._submit(lambda r=rec, t=item.trigger: self._finish_recording(r, t))
                    rec, segmenter = None, None
            except Exception as e:  # keep the agent alive; the fault is logged and shown
                self.stats.last_error = f"mux: {e}"
                log.exception("mux thread")
                self._signal("error")
        self._seal_q.put(_END)

    def _new_span(self, rec: _Recording) -> Segmenter:
        c = self.config
        sinks: dict[int, _QueuedSink] = {}  # the segmenter's segment number -> its sink

        def open_sink(n: int) -> _QueuedSink:
            sinks[n] = _QueuedSink(self, f"r{rec.seq:06d}-{rec.next_index:05d}.cseg", rec,
                                   rec.next_index)
            rec.next_index += 1
            return sinks[n]

        def fragment_end(n: int, info: FragmentInfo) -> None:
            self._submit(sinks[n].end_fragment)

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
                work()  # type: ignore[operator]
            except Exception as e:
                self.stats.last_error = f"seal: {e}"
                log.exception("seal thread")
                self._signal("error")
            if self._seal_q.empty() and self._capture_q.empty() and self.state != State.RECORDING:
                self._idle.set()

    def _declare_overflow(self, rec: _Recording, overflow: _Overflow) -> None:
        cut = self.append(Interruption(
            reason="other", detected_by="queue_overflow",
            cut_utc_ns=overflow.cut_us * 1000 + rec.utc_offset_ns, recording=rec.seq))
        self.append(Resume(interruption=cut.entry.seq, recording=rec.seq))
        log.error("declared a gap: %d frames and %d samples dropped", overflow.dropped_frames,
                  overflow.dropped_samples)

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

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "state": str(self.state), "device": self.config.device_id, "officer": self.officer,
            "recording": self.recording, "segments_sealed": s.segments_sealed,
            "bytes_sealed": s.bytes_sealed, "dropped_frames": s.dropped_frames,
            "dropped_samples": s.dropped_samples, "overflows": s.overflows,
            "refused_transitions": s.refused_transitions,
            "press_to_frame_ms": s.press_to_frame_ms[-1] if s.press_to_frame_ms else None,
            "capture_queue": self._capture_q.qsize(), "seal_queue": self._seal_q.qsize(),
            "prerecord_seconds": round(self._prerecord.seconds, 3),
            "next_seq": self.ledger.next_seq, "last_error": s.last_error,
        }


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
    """The muxer's sink for one segment: bytes go, in order, to the seal thread."""

    def __init__(self, recorder: Recorder, file: str, rec: _Recording, index: int):
        self.recorder, self.file, self.rec, self.index = recorder, file, rec, index
        self.span = rec.span
        self._sealer: SegmentSealer | None = None
        recorder._submit(self._open)

    def _open(self) -> None:
        self._sealer = self.recorder.sealer_class(self.recorder.store, self.file,
                                                  self.recorder.archive_public)

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.recorder._submit(lambda: self._sealer.write(chunk),  # type: ignore[union-attr]
                              len(chunk))
        return len(chunk)

    def end_fragment(self) -> None:
        assert self._sealer is not None
        self._sealer.end_fragment()

    def seal(self, summary: SegmentSummary) -> None:
        """Runs on the seal thread: close the file, then append its segment entry."""
        assert self._sealer is not None
        media = self._sealer.close()
        r, fps = self.recorder, self.recorder.config.fps
        first = summary.first_frame_timestamp_us or summary.first_sample_timestamp_us or 0
        last = summary.last_frame_timestamp_us or summary.last_sample_timestamp_us or first
        r.append(Segment(
            recording=self.rec.seq, span=self.span, index=self.index, media=media,
            first_capture_utc_ns=first * 1000 + self.rec.utc_offset_ns,
            last_capture_utc_ns=last * 1000 + self.rec.utc_offset_ns,
            frame_period_ns=1_000_000_000 // fps, frames=summary.frames,
            audio_samples=summary.audio_samples, audio_rate=r.config.audio_rate))
        r.stats.segments_sealed += 1
        r.stats.bytes_sealed += media.size
