"""The capture router: where each frame and audio block goes, at the moment it comes.

In standby capture goes to the pre-record buffer; while recording, to the
capture queue (the mux stage's). A stop ends the recording at its own moment
on the capture clock: what was captured before it and is still on its way
goes to the recording, and only then is the stop queued (``ENDING_WAIT_S`` at
most). Capture the queue cannot take, or that a source itself lost, ends the
span as an :class:`~device.recorder.messages.Overflow`: a declared gap, never
a silent hole.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from device.config import RecorderConfig
from device.prerecord import PreRecordBuffer
from device.recorder.memo import VoiceNotes
from device.recorder.messages import (
    CameraBack,
    CameraFault,
    CaptureMessage,
    Interrupt,
    Mark,
    MediumRefused,
    MicFault,
    Overflow,
    SegmentBreak,
    Session,
    StartSpan,
    Stop,
)
from device.recorder.stats import RecorderStats
from hardware.camera import Camera
from hardware.frames import AudioBlock, VideoFrame
from hardware.microphone import Microphone
from protocol.entries import RecordStart

log = logging.getLogger(__name__)

CAMERA_TIMEOUT_S = 1.0  # no frame for this long while recording: a camera fault
MIC_TIMEOUT_S = 1.0  # no audio for this long while recording: a microphone fault
AUDIO_FOLLOWS_ON_US = 1_000  # a block this close to the last one's end follows on
ENDING_WAIT_S = 0.5  # how long a stop waits for capture from before it still on its way


@dataclass
class SourceWatch:
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

    def rearm(self, press_us: int) -> None:
        """A recording starts: give the source half a timeout before judging it.

        A source that has delivered nothing yet (a camera slow to start) is cut,
        if it stays silent, at the press: never at the clock's zero.
        """
        self.last_at = max(self.last_at, time.monotonic() - self.timeout_s / 2)
        if self.last_us == 0:
            self.last_us = press_us


@dataclass
class _Ending:
    """A stop or interruption decided at ``cut_us`` (capture clock), not yet queued.

    Routing goes on by capture time until every running source has delivered
    from after the cut, or ``deadline`` (monotonic s) passes.
    """

    item: Stop | Interrupt
    cut_us: int
    deadline: float
    waiting: set[type] = field(default_factory=lambda: {VideoFrame, AudioBlock})
    after: list[CaptureMessage] = field(default_factory=list)  # pressed since: behind it


class CaptureRouter:
    """Routes capture to the recording or the pre-record buffer, and notices losses.

    ``lock`` orders state changes against routing: the façade holds it while it
    starts or ends a span. ``queue`` is the mux stage's; ``feedback`` is this
    router's own queue, where the seal stage says a medium refused a file.
    """

    def __init__(self, config: RecorderConfig, stats: RecorderStats, voice_notes: VoiceNotes,
                 audio_block: int):
        self.config, self.stats, self.voice_notes = config, stats, voice_notes
        per_second = config.fps + config.audio_rate // audio_block + 1
        self.queue: queue.Queue[CaptureMessage] = queue.Queue(
            int(config.queue_seconds * per_second))
        self.feedback: queue.SimpleQueue[MediumRefused] = queue.SimpleQueue()
        self.lock = threading.RLock()
        self.prerecord = PreRecordBuffer(config.pre_record_seconds, config.pre_record_audio)
        self.camera_watch = SourceWatch(CAMERA_TIMEOUT_S)
        self.mic_watch = SourceWatch(MIC_TIMEOUT_S)
        self.camera: Camera | None = None
        self.microphone: Microphone | None = None
        self._recording = False  # capture goes to the recording (under the lock)
        self._session: Session | None = None
        self._overflow: Overflow | None = None
        self._ending: _Ending | None = None  # a stop waiting for capture from before it
        self._break_segment = False  # the medium refused the open file
        self._span_from_us = 0  # capture time the span's capture begins at (its press)
        self._last_frame_index: int | None = None  # to see the camera skip frames
        self._mic_overflows = 0  # the microphone's count of lost blocks, as last read

    # --- what the façade asks, under ``lock`` ---------------------------------------------

    def begin(self, session: Session, resume: bool, start: RecordStart | None,
              utc_offset_ns: int, press_us: int) -> StartSpan:
        """A span starts: the pre-record buffer and all live capture go to it."""
        with self.lock:
            self.finish_ending()  # a stop pressed a moment ago goes first
            self.stats.pressed(press_us)
            for watch in (self.camera_watch, self.mic_watch):
                watch.rearm(press_us)
            frames, blocks = self.prerecord.drain()
            self._recording, self._session, self._break_segment = True, session, False
            self._span_from_us = min([press_us] + [x.timestamp_us for x in frames[:1] + blocks[:1]])
            message = StartSpan(session, resume, start, utc_offset_ns, frames, blocks,
                                press_us)
            self.queue.put(message)
            return message

    def end(self, item: Stop | Interrupt, cut_us: int) -> None:
        """The span ends at ``cut_us``: capture from before it still goes to it."""
        with self.lock:
            self._recording = False
            self.finish_ending()  # (none is pending while recording; to be sure)
            ending = _Ending(item, cut_us, time.monotonic() + ENDING_WAIT_S)
            # A source declared silent is not waited for.
            for kind, watch in ((VideoFrame, self.camera_watch),
                                (AudioBlock, self.mic_watch)):
                if watch.faulted:
                    ending.waiting.discard(kind)
            self._ending = ending
            if not ending.waiting:
                self.finish_ending()

    def put_in_order(self, message: Mark) -> None:
        """Queue ``message`` as pressed now: behind a stop still waiting for its capture."""
        with self.lock:
            if self._ending is not None:
                self._ending.after.append(message)
            else:
                self.queue.put(message)

    def finish_ending(self) -> None:
        """Queue the pending stop behind the capture it waited for."""
        with self.lock:
            if self._ending is not None:
                self.queue.put(self._ending.item)
                for item in self._ending.after:
                    self.queue.put(item)
                self._ending = None

    def expire_ending(self) -> bool:
        """Queue a pending stop whose deadline passed; True if none waits."""
        with self.lock:
            if self._ending is not None and time.monotonic() >= self._ending.deadline:
                self.finish_ending()
            return self._ending is None

    def settle_ending(self) -> None:
        """Return once a pending stop is queued: its sources caught up, or its deadline passed."""
        while not self.expire_ending():
            time.sleep(0.01)

    def check_sources(self) -> tuple[bool, bool]:
        """While recording, a camera or microphone silent too long is a fault: queued."""
        with self.lock:
            if not self._recording:
                return False, False
            camera_down, mic_down = self.camera_watch.check(), self.mic_watch.check()
            # Cut where the source's capture stops: its last delivery, or the span's
            # start if it delivered nothing since (a camera late to start) — never
            # a delivery before the span, or none at all (time 0).
            if camera_down:
                self.queue.put(CameraFault(max(self.camera_watch.last_us, self._span_from_us)))
            if mic_down:
                self.queue.put(MicFault(max(self.mic_watch.last_us, self._span_from_us)))
            return camera_down, mic_down

    # --- the capture threads ------------------------------------------------------------

    def video_loop(self, stopping: threading.Event) -> None:
        assert self.camera is not None
        while not stopping.is_set():
            frame = self.camera.read(timeout=0.2)
            if frame is not None:
                self.route(frame, frame.timestamp_us)

    def audio_loop(self, stopping: threading.Event) -> None:
        assert self.microphone is not None
        while not stopping.is_set():
            block = self.microphone.read(timeout=0.2)
            if block is not None:
                self.route(block, block.timestamp_us)

    def route(self, item: VideoFrame | AudioBlock, at_us: int) -> None:
        memo_full = False
        with self.lock:
            loss = self._source_loss(item)
            if isinstance(item, AudioBlock):
                if self.mic_watch.seen(item.end_us):
                    log.warning("microphone delivers again: audio resumes")
                    loss = None  # the silence is declared already (mic_fault)
            elif self.camera_watch.seen(at_us):
                log.warning("camera delivers again: video resumes")
                loss = None  # the silence is declared already (camera_fault)
                if self._recording:
                    self.queue.put(CameraBack())
                    assert self.camera is not None
                    self.camera.request_keyframe()
            recording = self._belongs_to_recording(item)
            if loss is not None and recording:
                self._declare_source_loss(loss)
            if isinstance(item, AudioBlock):
                memo_full = self.voice_notes.feed(item)
            if recording:
                self._queue_capture(item, at_us)
            elif isinstance(item, VideoFrame):
                if not self._recording:  # (one from before the span is in neither)
                    self.prerecord.add_video(item)
            else:
                self.prerecord.add_audio(item)
        if memo_full:
            self.voice_notes.end()

    def _belongs_to_recording(self, item: VideoFrame | AudioBlock) -> bool:
        """Whether ``item`` goes to the recording: while recording (a frame only if
        captured at or after the span's start), or captured before the stop being
        ended (an audio block by its first sample).

        An item from after that stop counts its source as caught up; the last
        source to catch up queues the stop.
        """
        if self._recording:
            # A frame captured before the span's start reaches us after it (the
            # camera delivers later than the microphone): the sound of its moment
            # went to the pre-record buffer, so it is not the span's either, or the
            # span would begin with a picture and no sound (ADR 0072).
            return not (isinstance(item, VideoFrame) and item.timestamp_us < self._span_from_us)
        ending = self._ending
        if ending is None:
            return False
        if item.timestamp_us < ending.cut_us:
            return True
        ending.waiting.discard(type(item))
        if not ending.waiting:
            self.finish_ending()
        return False

    def _source_loss(self, item: VideoFrame | AudioBlock) -> Overflow | None:
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
            return Overflow(item.timestamp_us - lost * period_us, lost, 0,
                            reason="camera_fault", detected_by="frame_index")
        assert self.microphone is not None
        if self.microphone.overflows == self._mic_overflows:
            return None
        # Blocks queued before the loss still follow on; the first that does not
        # (its clock anchored afresh) is where the audio was lost.
        previous_end_us = self.mic_watch.last_us
        jump_us = item.timestamp_us - previous_end_us
        if abs(jump_us) <= AUDIO_FOLLOWS_ON_US:
            return None
        self._mic_overflows = self.microphone.overflows
        lost = max(0, jump_us * item.rate // 1_000_000)
        return Overflow(previous_end_us, 0, lost, reason="mic_fault",
                        detected_by="audio_overflow")

    def _declare_source_loss(self, loss: Overflow) -> None:
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

    def _read_feedback(self) -> None:
        """What the seal stage said since: a refused file of this recording breaks it."""
        while True:
            try:
                refused = self.feedback.get_nowait()
            except queue.Empty:
                return
            session = self._session
            if (self._recording and session is not None and session.seq.done()
                    and session.seq.exception() is None
                    and session.seq.result() == refused.recording):
                self._break_segment = True

    def _queue_capture(self, item: VideoFrame | AudioBlock, at_us: int) -> None:
        self._read_feedback()
        if self._break_segment:
            try:
                self.queue.put_nowait(SegmentBreak())
            except queue.Full:
                pass  # with the next item, then
            else:
                self._break_segment = False
                assert self.camera is not None
                self.camera.request_keyframe()
        if self._overflow is not None:
            if self.queue.qsize() > self.queue.maxsize // 2:
                self._count_drop(self._overflow, item)
                return
            # room again: close the span, declare the gap, start a new span
            self.queue.put(self._overflow)
            self._overflow = None
            assert self.camera is not None
            self.camera.request_keyframe()
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self._overflow = Overflow(at_us, 0, 0)
            self._count_drop(self._overflow, item)
            self.stats.overflows += 1
            log.error("capture queue full: dropping capture, the gap will be declared")

    def _count_drop(self, overflow: Overflow, item: VideoFrame | AudioBlock) -> None:
        if isinstance(item, VideoFrame):
            overflow.dropped_frames += 1
            self.stats.dropped_frames += 1
        else:
            overflow.dropped_samples += len(item.samples)
            self.stats.dropped_samples += len(item.samples)
