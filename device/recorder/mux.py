"""The mux stage: capture in, fragmented MP4 segments out, as messages to the seal stage.

One thread takes the capture queue in order. A span's frames and audio go
through a :class:`~device.segmenter.Segmenter` (H.264 + FLAC, cut at keyframes);
while the camera is down, audio alone goes into audio-only segments, and a
voice note's audio into its own file, written by the same muxer. Every
byte, fragment end, segment end and declaration becomes a message on the
seal queue, so the seal stage appends in the order things happened. A
press's pre-record buffer, all but its last group of pictures, is muxed on a
thread of its own (``prerecord_mux.py``) while live capture goes on here; what
this thread sends meanwhile waits behind it, in order.
"""

from __future__ import annotations

import heapq
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.config import RecorderConfig
from device.ledger_state import LedgerState
from device.muxer import FragmentInfo, SegmentMuxer, SegmentSummary, split_audio
from device.prerecord import segments_in, split_at_last_keyframe
from device.recorder.messages import (
    AppendMarker,
    Barrier,
    CameraBack,
    CameraFault,
    CaptureMessage,
    Declare,
    End,
    EndNote,
    FileRef,
    FinishRecording,
    FragmentEnd,
    Interrupt,
    Mark,
    MicFault,
    NoteAudio,
    NoteRef,
    OpenFile,
    OpenSpan,
    Overflow,
    PassBarrier,
    SealFile,
    SealMemo,
    SegmentBreak,
    Span,
    StartSpan,
    Stop,
    WriteBytes,
)
from device.recorder.prerecord_mux import OrderedSeal, PreRecordPart
from device.recorder.seal import SealQueue
from device.recorder.stats import RecorderStats
from device.segmenter import Segmenter
from hardware.camera import monotonic_us
from hardware.frames import AudioBlock, VideoFrame

log = logging.getLogger(__name__)


@dataclass
class _Recording:
    """The mux stage's view of the span in progress."""

    seq: int
    span: int
    next_index: int
    utc_offset_ns: int
    press_us: int
    first_frame_seen: bool = False

    def next_span(self) -> _Recording:
        """The same recording, going on in a new span (after a fault or an overflow).

        Its press is the same: if no frame came yet (a camera late after a boot,
        declared a fault, back now), the first frame of the new span is the
        press's first frame."""
        return _Recording(self.seq, self.span + 1, self.next_index, self.utc_offset_ns,
                          self.press_us, self.first_frame_seen)

    @property
    def ref(self) -> Span:
        return Span(self.seq, self.span, self.utc_offset_ns)


class SegmentFile:
    """The muxer's write-only sink for one segment: what it writes goes, as messages, to
    the seal stage."""

    def __init__(self, seal: SealQueue | OrderedSeal, ref: FileRef):
        self.seal, self.ref = seal, ref
        seal.put(OpenFile(ref))

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.seal.put(WriteBytes(self.ref, chunk), len(chunk))
        return len(chunk)

    def end_fragment(self, info: FragmentInfo) -> None:
        self.seal.put(FragmentEnd(self.ref, info))


class AudioOnlySpan:
    """Audio-only segments while the camera is down: audio is better than nothing.

    Each segment is a FLAC-only fragmented MP4 of ``segment_seconds``, cut at
    the exact sample; its ``segment`` entry has no frames and the audio sample
    period as its period, so consecutive segments abut exactly.
    """

    def __init__(self, stage: MuxStage, rec: _Recording):
        self.stage, self.rec = stage, rec
        self._muxer: SegmentMuxer | None = None
        self._sink: SegmentFile | None = None
        self._max_samples = round(stage.config.segment_seconds * stage.config.audio_rate)
        self.end_us: int | None = None  # just after the last sample given

    def add(self, block: AudioBlock) -> None:
        rest: AudioBlock | None = block
        while rest is not None and len(rest.samples):
            if self._muxer is None:
                self._sink = sink = self.stage.open_file(self.rec, {"audio": "flac"})
                self._muxer = SegmentMuxer(sink, audio_rate=self.stage.config.audio_rate,
                                           on_fragment_end=sink.end_fragment)
            head, rest = split_audio(rest, self._max_samples - self._muxer.audio_samples)
            self._muxer.add_audio(head)
            if self._muxer.audio_samples >= self._max_samples:
                self._finish()
        self.end_us = block.end_us

    def _finish(self) -> None:
        assert self._muxer is not None
        summary, sink = self._muxer.close(), self._sink
        self._muxer = self._sink = None
        if summary.audio_samples and sink is not None:
            assert summary.first_sample_timestamp_us is not None
            assert summary.last_sample_timestamp_us is not None
            self.stage.seal.put(SealFile(sink.ref, summary.first_sample_timestamp_us,
                                         summary.last_sample_timestamp_us, 0,
                                         summary.audio_samples,
                                         1_000_000_000 // self.stage.config.audio_rate))

    def close(self) -> int | None:
        if self._muxer is not None:
            self._finish()
        return self.end_us


class NoteWriter:
    """A voice note (or memo) as it is spoken: an audio-only segment of its own."""

    def __init__(self, stage: MuxStage, note: NoteRef):
        self.sink = SegmentFile(stage.seal, FileRef(note.file, 0, None, {"audio": "flac"},
                                                    note))
        self.muxer = SegmentMuxer(self.sink, audio_rate=stage.config.audio_rate,
                                  on_fragment_end=self.sink.end_fragment)


class MuxStage:
    """The mux thread: ``run`` until :class:`~device.recorder.messages.End`."""

    def __init__(self, config: RecorderConfig, stats: RecorderStats, store: Path,
                 known: LedgerState, capture: queue.Queue[CaptureMessage], seal: SealQueue,
                 signal: Callable[[str], None]):
        self.config, self.stats, self.store, self.known = config, stats, store, known
        self.capture, self._signal = capture, signal
        self.seal = OrderedSeal(seal)  # behind a pre-record part still being written

    def run(self) -> None:
        rec: _Recording | None = None
        interrupted: _Recording | None = None  # the span an interruption ended, to resume
        segmenter: Segmenter | None = None
        audio_only: AudioOnlySpan | None = None  # while the camera is down
        video_from_us = 0  # frames before this are covered by audio-only segments
        notes: dict[str, NoteWriter] = {}  # the voice note being spoken, by file
        while True:
            item = self.capture.get()
            try:
                if isinstance(item, End):
                    break
                if isinstance(item, NoteAudio):
                    if item.note.file not in notes:
                        notes[item.note.file] = NoteWriter(self, item.note)
                    notes[item.note.file].muxer.add_audio(item.block)
                    continue
                if isinstance(item, EndNote):
                    note = notes.pop(item.memo.file, None)
                    summary = note.muxer.close() if note is not None else None
                    self.seal.put(SealMemo(item.memo, note.sink.ref if note else None,
                                           summary))
                    continue
                if isinstance(item, VideoFrame):
                    if segmenter is not None and rec is not None:
                        if item.timestamp_us < video_from_us:
                            self.stats.dropped_frames += 1  # its time is sealed as audio
                            continue
                        if not rec.first_frame_seen and item.timestamp_us >= rec.press_us:
                            rec.first_frame_seen = True
                            self.stats.first_frame(rec.press_us, monotonic_us())
                        segmenter.add_video(item)
                elif isinstance(item, AudioBlock):
                    if audio_only is not None:
                        audio_only.add(item)
                    elif segmenter is not None:
                        segmenter.add_audio(item)
                elif isinstance(item, StartSpan):
                    rec = self._begin_span(item, interrupted)
                    interrupted = None
                    # All but the buffer's last group of pictures: on its own thread.
                    part, (frames, blocks) = split_at_last_keyframe(item.frames, item.blocks)
                    if part[0]:
                        self._start_prerecord_part(rec, *part)
                    segmenter, audio_only, video_from_us = self._new_span(rec), None, 0
                    # In capture order, as live capture comes: fed one stream after
                    # the other, the segmenter would take the audio for stalled.
                    for buffered in heapq.merge(frames, blocks, key=lambda x: x.timestamp_us):
                        if isinstance(buffered, VideoFrame):
                            segmenter.add_video(buffered)
                        else:
                            segmenter.add_audio(buffered)
                elif isinstance(item, Mark):
                    self.seal.put(AppendMarker(item, rec.seq if rec is not None else None))
                elif isinstance(item, Barrier):
                    self.seal.put(PassBarrier(item))  # behind every seal asked for so far
                elif rec is None:
                    continue
                elif isinstance(item, CameraFault):
                    # Audio captured before any keyframe (a camera late to start) has
                    # no video segment to go in: it begins the audio-only span.
                    held = self._close(segmenter) if segmenter is not None else []
                    self.seal.put(Declare(rec.ref, "camera_fault", "camera_watchdog",
                                          item.cut_us, resume=True))
                    rec = rec.next_span()
                    segmenter, audio_only = None, AudioOnlySpan(self, rec)
                    for block in held:
                        audio_only.add(block)
                elif isinstance(item, MicFault):
                    # The span goes on (video without sound); the silence is said.
                    self.seal.put(Declare(rec.ref, "mic_fault", "mic_watchdog", item.cut_us,
                                          resume=True))
                elif isinstance(item, SegmentBreak):
                    # Declared already, in the ledger's order, by the seal stage.
                    if audio_only is not None:
                        audio_only.close()
                        audio_only = AudioOnlySpan(self, rec)
                    elif segmenter is not None:
                        held = self._close(segmenter)
                        segmenter = self._new_span(rec)
                        for block in held:
                            segmenter.add_audio(block)
                elif isinstance(item, CameraBack):
                    if audio_only is not None:
                        video_from_us = audio_only.close() or 0
                        rec = rec.next_span()
                        segmenter, audio_only = self._new_span(rec), None
                else:  # the span ends: overflow, interruption or stop
                    if audio_only is not None:
                        audio_only.close()
                    elif segmenter is not None:
                        # Ended before the camera's first keyframe: its audio alone.
                        held, alone = self._close(segmenter), AudioOnlySpan(self, rec)
                        for block in held:
                            alone.add(block)
                        alone.close()
                    segmenter, audio_only = None, None
                    if isinstance(item, Overflow):
                        self.seal.put(Declare(rec.ref, item.reason, item.detected_by,
                                              item.cut_us, resume=True))
                        log.error("declared a gap: %d frames and %d samples dropped",
                                  item.dropped_frames, item.dropped_samples)
                        rec = rec.next_span()
                        segmenter = self._new_span(rec)
                    elif isinstance(item, Interrupt):
                        self.seal.put(Declare(rec.ref, item.reason, item.detected_by,
                                              item.cut_us, resume=False))
                        rec, interrupted = None, rec
                    elif isinstance(item, Stop):
                        self.seal.put(FinishRecording(rec.seq, item.trigger))
                        rec, interrupted = None, None
            except Exception as e:  # keep the agent alive; the fault is logged and shown
                self.stats.last_error = f"mux: {e}"
                log.exception("mux thread")
                self._signal("error")
        self.seal.put(End())

    def _close(self, segmenter: Segmenter) -> list[AudioBlock]:
        """Finish a span's segmenter; return the audio it held for a segment that never
        began (no keyframe came: a camera late to start), for an audio-only segment.

        What it could not place is counted in ``status``: audio older than its
        open segment (the microphone later than the segmenter waits: each
        stretch declared as it ends, ``_new_span``), and frames before a span's
        first keyframe (before the span's start).
        """
        segmenter.close()
        self.stats.dropped_samples += segmenter.audio_samples_dropped
        return segmenter.unplaced_audio

    def _begin_span(self, start: StartSpan, interrupted: _Recording | None) -> _Recording:
        """The span a press starts, its entry appended in order.

        A new recording waits here for its ``record_start`` (the seal stage
        appends it after everything queued before it, a stop pressed a moment
        ago included): its segments are named by its seq.
        """
        session = start.session
        self.seal.put(OpenSpan(start))
        seq = session.seq.result()  # raises if it could not be appended
        if not start.resume:
            return _Recording(seq, 0, 0, start.utc_offset_ns, start.press_us)
        if interrupted is not None and interrupted.seq == seq:
            rec = interrupted.next_span()
        else:  # left open by a cut before this boot
            rec = _Recording(seq, session.span + 1, session.next_index, 0, 0)
        rec.utc_offset_ns, rec.press_us, rec.first_frame_seen = (
            start.utc_offset_ns, start.press_us, False)
        return rec

    def open_file(self, rec: _Recording, codecs: dict[str, str] | None = None) -> SegmentFile:
        """The next segment's file; never one a cut left behind."""
        return SegmentFile(self.seal, self._next_ref(rec, codecs))

    def _next_ref(self, rec: _Recording, codecs: dict[str, str] | None = None) -> FileRef:
        while True:
            index = rec.next_index
            rec.next_index += 1
            name = f"r{rec.seq:06d}-{index:05d}.cseg"
            taken = any((self.store / d / name).exists() for d in ("media", "pending"))
            if not taken and name not in self.known.sealed:
                return FileRef(name, index, rec.ref, codecs)

    def _start_prerecord_part(self, rec: _Recording, frames: list[VideoFrame],
                              blocks: list[AudioBlock]) -> None:
        """Mux the pre-record part on its own thread, straight to the seal queue; its
        files are named now, so the live segment's comes after them."""
        refs = [self._next_ref(rec) for _ in
                range(segments_in(frames, int(self.config.segment_seconds * 1e6)))]
        queue = self.seal.queue
        segmenter = self._new_span(rec, lambda n: SegmentFile(queue, refs[n]), queue)
        PreRecordPart(segmenter, frames, blocks, self.seal, self.stats, len(refs),
                      self._signal).start()

    def _new_span(self, rec: _Recording,
                  file_for: Callable[[int], SegmentFile] | None = None,
                  seal: SealQueue | OrderedSeal | None = None) -> Segmenter:
        c = self.config
        files: dict[int, SegmentFile] = {}  # the segmenter's segment number -> its file
        period_ns = 1_000_000_000 // c.fps
        to_seal = seal or self.seal

        def open_sink(n: int) -> SegmentFile:
            files[n] = file_for(n) if file_for is not None else self.open_file(rec)
            return files[n]

        def fragment_end(n: int, info: FragmentInfo) -> None:
            files[n].end_fragment(info)

        def segment_end(n: int, summary: SegmentSummary) -> None:
            sink = files.pop(n)
            # A segment starts at its origin: its first keyframe, or the audio just
            # before it that the segment holds (after an audio-only span).
            first = summary.origin_us or summary.first_frame_timestamp_us or 0
            last = summary.last_frame_timestamp_us or summary.last_sample_timestamp_us or first
            to_seal.put(SealFile(sink.ref, first, last, summary.frames,
                                 summary.audio_samples, period_ns))

        def audio_dropped(first_us: int, end_us: int, samples: int) -> None:
            # Audio the microphone delivered too late for any open segment: a hole
            # in the sound, declared where it begins (ADR 0064).
            log.error("%d audio samples came too late for their segment (%.3f s from "
                      "capture time %d µs): declared", samples, (end_us - first_us) / 1e6,
                      first_us)
            self.seal.put(Declare(rec.ref, "mic_fault", "audio_late", first_us, resume=True))

        return Segmenter(open_sink, width=c.width, height=c.height, fps=c.fps,
                         audio_rate=c.audio_rate, segment_us=int(c.segment_seconds * 1e6),
                         on_fragment_end=fragment_end, on_segment_end=segment_end,
                         on_audio_dropped=audio_dropped)
