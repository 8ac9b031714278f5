"""The seal stage: the files the mux stage writes, sealed; their entries appended in order.

One thread takes the seal queue in order: it opens each segment's
:class:`~device.sealer.SegmentSealer`, writes, makes each fragment durable,
closes the file and appends its ``segment`` entry (the journal goes only
after the entry: a cut in between still finds the file at the next start).
Declarations, starts, stops, markers and voice notes come through the same
queue, so the ledger holds them in the order things happened.

A medium that refuses to go on writing a file ends that file's sealing, not
the recording: its durable part is sealed ``recovered`` at once (the same
recovery as after a power cut), the rest declared, and the capture router is
told (:class:`~device.recorder.messages.MediumRefused`) to go on in a new file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device import recovery
from device.config import RecorderConfig
from device.muxer import SegmentSummary
from device.recorder.appender import EntryAppender
from device.recorder.memo import VoiceNotes
from device.recorder.messages import (
    AppendMarker,
    Declare,
    End,
    FileRef,
    FinishRecording,
    FragmentEnd,
    MediumRefused,
    OpenFile,
    OpenSpan,
    PassBarrier,
    SealFile,
    SealMemo,
    SealMessage,
    Span,
    WriteBytes,
)
from device.recorder.stats import RecorderStats
from device.sealer import SegmentSealer
from hardware.camera import monotonic_us
from protocol.entries import Interruption, Marker, RecordStop, Resume, Segment

log = logging.getLogger(__name__)


class SealQueue:
    """Messages for the seal stage, in order, bounded by the media bytes they carry.

    Bounding by bytes, not items, makes the queue hold about ``queue_seconds``
    of media whatever the bitrate and however PyAV happens to cut its writes.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: deque[tuple[SealMessage, int]] = deque()
        self._bytes = 0
        self._cv = threading.Condition()

    def put(self, message: SealMessage, nbytes: int = 0) -> None:
        """Blocks while sealing is behind: back-pressure on the mux stage."""
        with self._cv:
            while self._bytes and self._bytes + nbytes > self.max_bytes:
                self._cv.wait()
            self._items.append((message, nbytes))
            self._bytes += nbytes
            self._cv.notify_all()

    def get(self) -> SealMessage:
        with self._cv:
            while not self._items:
                self._cv.wait()
            message, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._cv.notify_all()
            return message

    def qsize(self) -> int:
        return len(self._items)


@dataclass
class _FileSeal:
    """One file being sealed; after a refusal, its later messages are let go."""

    ref: FileRef
    sealer: SegmentSealer | None = None
    failed: bool = False
    first_capture_us: int | None = None  # as the muxer's fragments tell it


class SealStage:
    """The seal thread: ``run`` until :class:`~device.recorder.messages.End`."""

    def __init__(self, config: RecorderConfig, stats: RecorderStats, appender: EntryAppender,
                 queue: SealQueue, feedback: Callable[[MediumRefused], None],
                 voice_notes: VoiceNotes, archive_public: bytes,
                 sealer_class: Callable[[], type[SegmentSealer]],
                 signal: Callable[[str], None]):
        self.config, self.stats, self.appender, self.queue = config, stats, appender, queue
        self._feedback, self.voice_notes = feedback, voice_notes
        self.archive_public, self._sealer_class, self._signal = (
            archive_public, sealer_class, signal)
        self.store = appender.store
        self._files: dict[str, _FileSeal] = {}
        self._refused_from_start = False  # the last file sealed or refused had nothing durable

    def run(self) -> None:
        while True:
            message = self.queue.get()
            if isinstance(message, End):
                break
            try:
                self.handle(message)
            except Exception as e:
                self.stats.last_error = f"seal: {e}"
                log.exception("seal thread")
                self._signal("error")

    def handle(self, message: SealMessage) -> None:
        match message:
            case OpenFile(ref):
                file = self._files[ref.file] = _FileSeal(ref)
                self._step(file, lambda: self._open(file))
            case WriteBytes(ref, data):
                file = self._files[ref.file]
                self._step(file, lambda: file.sealer.write(data))  # type: ignore[union-attr]
            case FragmentEnd(ref, info):
                file = self._files[ref.file]
                if file.first_capture_us is None:  # its origin: audio may precede the frame
                    file.first_capture_us = min((v for v in (info.first_frame_us,
                                                             info.first_sample_us)
                                                 if v is not None), default=None)
                self._step(file, lambda: file.sealer.end_fragment(info))  # type: ignore[union-attr]
            case SealFile():
                self._seal(message)
            case Declare(span, reason, detected_by, cut_us, resume):
                self._declare(span, reason, detected_by, cut_us, resume)
            case OpenSpan():
                self._open_span(message)
            case FinishRecording(recording, trigger):
                self.appender.append(RecordStop(recording=recording, trigger=trigger))
                log.info("recording %d stopped (%s)", recording, trigger)
            case AppendMarker(mark, recording):
                try:
                    mark.entry.set_result(self.appender.append(
                        Marker(phase=mark.phase, recording=recording)))
                except Exception as e:
                    mark.entry.set_exception(e)
                    raise
            case SealMemo(memo, ref, summary):
                self._seal_memo(memo, ref, summary)
            case PassBarrier(barrier):
                barrier.passed.set()

    # --- spans and declarations -------------------------------------------------------------

    def _open_span(self, message: OpenSpan) -> None:
        """``record_start``, or ``resume`` of the open recording; then a voice note if owed."""
        start = message.start
        session, known = start.session, self.appender.known
        try:
            if start.start is not None:
                session.seq.set_result(self.appender.append(start.start).entry.seq)
            else:
                seq = session.seq.result()
                cut = known.unresumed(seq)
                if cut is None:  # open without a declared cut: never silent
                    rec = known.recordings.get(seq)
                    cut = self.appender.append(Interruption(
                        reason="other", detected_by="resume_without_stop",
                        cut_utc_ns=(rec.last_capture_utc_ns if rec else None) or 0,
                        recording=seq)).entry.seq
                self.appender.append(Resume(interruption=cut, recording=seq))
        except Exception as e:
            if not session.seq.done():
                session.seq.set_exception(e)
            raise
        if known.unexplained:
            self.voice_notes.begin(interruption=known.unexplained[-1])

    def _declare(self, span: Span, reason: str, detected_by: str, cut_us: int,
                 resume: bool) -> None:
        cut = self.appender.append(Interruption(
            reason=reason, detected_by=detected_by,
            cut_utc_ns=cut_us * 1000 + span.utc_offset_ns, recording=span.recording))
        if resume:  # a device fault: declared, and resumed at once with what still works
            self.appender.append(Resume(interruption=cut.entry.seq, recording=span.recording))

    # --- files ---------------------------------------------------------------------------

    def _open(self, file: _FileSeal) -> None:
        ref, c = file.ref, self.config
        context: dict[str, Any]
        if ref.span is not None:
            context = {"recording": ref.span.recording, "span": ref.span.span,
                       "index": ref.index, "utc_offset_ns": ref.span.utc_offset_ns,
                       "frame_period_ns": 1_000_000_000 // c.fps, "audio_rate": c.audio_rate}
        else:  # a voice note or memo: what recovery needs to give it its entry
            assert ref.note is not None
            context = {"kind": "voice_note" if ref.note.exemption is None else "exemption",
                       "interruption": ref.note.interruption, "exemption": ref.note.exemption,
                       "utc_offset_ns": self.appender.utc_offset_ns, "audio_rate": c.audio_rate}
        file.sealer = self._sealer_class()(
            self.store, ref.file, self.archive_public, codecs=ref.codecs, context=context,
            journal_key=self.appender.ledger.journal_key)  # journal and marks authenticated

    def _step(self, file: _FileSeal, step: Callable[[], Any]) -> Any:
        """One sealing step; after a refusal, none (None)."""
        if file.failed:
            return None
        try:
            return step()
        except Exception as failure:  # noqa: BLE001 - declared just below
            file.failed = True
            self._refused(file, failure)
            return None

    def _seal(self, message: SealFile) -> None:
        file = self._files.pop(message.ref.file)
        # The journal stays until the entry is appended: a cut in between must
        # still find the sealed file and give it its entry at the next start.
        media = self._step(file, lambda: file.sealer.close(keep_journal=True))  # type: ignore[union-attr]
        if media is None:  # refused: declared instead
            return
        assert file.sealer is not None
        ref = file.ref
        offset = ref.span.utc_offset_ns
        self.appender.append(Segment(
            recording=ref.span.recording, span=ref.span.span, index=ref.index, media=media,
            first_capture_utc_ns=message.first_us * 1000 + offset,
            last_capture_utc_ns=message.last_us * 1000 + offset,
            frame_period_ns=message.period_ns, frames=message.frames,
            audio_samples=message.samples, audio_rate=self.config.audio_rate))
        file.sealer.release_journal()
        self._refused_from_start = False
        self.stats.segments_sealed += 1
        self.stats.bytes_sealed += media.size

    def _seal_memo(self, memo: Any, ref: FileRef | None,
                   summary: SegmentSummary | None) -> None:
        """A voice note or memo, closed like a segment: its entry, then its journal goes."""
        file = self._files.pop(ref.file) if ref is not None else None
        media = None
        if file is not None:
            media = self._step(file, lambda: file.sealer.close(keep_journal=True))  # type: ignore[union-attr]
        self.voice_notes.seal(memo, media, summary)
        if media is not None and file is not None and file.sealer is not None:
            file.sealer.release_journal()

    def _refused(self, file: _FileSeal, failure: Exception) -> None:
        """The medium refused to go on writing a file: keep what is durable, declare the rest.

        The entries land in the ledger's order: the file's durable fragments
        (``recovered``), then the interruption and its resume, then the
        segments after it. Nothing is deleted: bytes the journal cannot vouch
        for are kept aside in ``pending/``.

        Recording goes on at once in a new file (from the next keyframe), so
        only about a fragment and a keyframe interval is lost — unless the file
        before was refused from its start too: then the new file waits for the
        segment's natural end, so a dead medium fails once per segment, not
        once per keyframe.
        """
        ref = file.ref
        self.stats.seal_failures += 1
        self.stats.last_error = f"seal {ref.file}: {failure}"
        if ref.span is None:  # a voice note: what is durable waits in pending/ for recovery
            log.error("the medium refused the voice note %s (%s); kept for recovery",
                      ref.file, failure)
            self._signal("error")
            if file.sealer is not None:
                with contextlib.suppress(Exception):
                    file.sealer.close()
            return
        log.error("the medium refused %s (%s); its durable part is kept, the rest declared",
                  ref.file, failure)
        self._signal("error")
        if file.sealer is not None:  # its threads stop, its files close, nothing moves
            with contextlib.suppress(Exception):  # the failure is being declared already
                file.sealer.close()
        try:
            recovered = recovery.recover_file(self.store, ref.file,
                                              journal_key=self.appender.ledger.journal_key)
        except Exception:  # left in pending/ for the next start's recovery
            log.exception("%s: could not be recovered now", ref.file)
            recovered = None
        durable = False
        cut_us = file.first_capture_us or monotonic_us()  # nothing durable: from its start
        if isinstance(recovered, recovery.RecoveredSegment) and recovered.segment is not None:
            self.appender.append(recovered.segment)
            recovery.release_journal(self.store, recovered)
            self.stats.segments_sealed += 1
            self.stats.bytes_sealed += recovered.segment.media.size
            durable = True
            if recovered.last_capture_utc_ns is not None:  # from the last sealed capture
                cut_us = (recovered.last_capture_utc_ns - ref.span.utc_offset_ns) // 1000
        full = getattr(failure, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        self._declare(ref.span, "storage_full" if full else "other", "storage_write", cut_us,
                      resume=True)
        # A new file at once, unless this one and the one before had nothing durable.
        retry = durable or not self._refused_from_start
        self._refused_from_start = not durable
        if retry:
            self._feedback(MediumRefused(ref.span.recording))
