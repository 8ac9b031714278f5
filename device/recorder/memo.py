"""Voice notes and exemption memos: prompt, listen, seal (Art. 5 and 8).

At the first start after an interruption the device plays a spoken prompt
and only then listens, so the prompt is not taken for the answer. The audio
until a short press of the function button (or the cap) is a ``voice_note``
linked to the interruption: an audio-only file written as it is spoken by
the segments' muxer, sealed by the segments' sealer with their two-phase
close, recovered after a cut like them. An exemption's memo is the same,
sealed with its ``exemption`` entry.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from device.config import RecorderConfig
from device.muxer import SegmentSummary
from device.recorder.appender import EntryAppender
from device.recorder.messages import CaptureMessage, EndNote, NoteAudio, NoteRef
from device.recorder.stats import RecorderStats
from hardware.camera import monotonic_us
from hardware.frames import AudioBlock
from protocol.entries import Exemption, MediaFile, VoiceNote

if TYPE_CHECKING:
    from device.vad import SpeechListener

log = logging.getLogger(__name__)

EXEMPTION_MEMO_SECONDS = 20.0


@dataclass
class Memo:
    """A voice note (or an exemption's voice memo) from its prompt to its entry."""

    ref: NoteRef
    max_us: int
    collecting: bool = False
    started_us: int = 0
    samples: int = 0  # given to the mux stage so far
    # A voice note's speech is judged as it is spoken, on the listener's own thread.
    speech: SpeechListener | None = None

    @property
    def file(self) -> str:
        return self.ref.file

    @property
    def interruption(self) -> int | None:
        return self.ref.interruption

    @property
    def exemption(self) -> str | None:
        return self.ref.exemption


class VoiceNotes:
    """The one voice note or memo in progress, from its prompt to its entry.

    ``feed`` is given every audio block (by the capture router); while the note
    is collected each block goes, as :class:`~device.recorder.messages.NoteAudio`,
    to the mux stage, which writes the note with the segments' muxer as it is
    spoken (so a power cut keeps all but its last fragment). ``end`` closes it
    (:class:`~device.recorder.messages.EndNote`); the seal stage seals the file
    like a segment's and calls :meth:`seal` to append the entry, the journal
    going only after it. ``capture`` is the mux stage's queue (set by the façade).
    """

    def __init__(self, config: RecorderConfig, appender: EntryAppender, stats: RecorderStats,
                 signal: Callable[[str], None], prompts: Any = None):
        self.config, self.appender, self.stats = config, appender, stats
        self._signal, self.prompts = signal, prompts
        self.speaker: Any = None  # set when the devices are open
        self.capture: queue.Queue[CaptureMessage] | None = None  # the mux stage's
        self._lock = threading.Lock()
        self._memo: Memo | None = None

    @property
    def current(self) -> Memo | None:
        return self._memo

    @property
    def listening(self) -> bool:
        """A note is being collected (its prompt has played)."""
        memo = self._memo
        return memo is not None and memo.collecting

    def begin(self, interruption: int | None = None, exemption: str | None = None) -> None:
        name = f"v{interruption:06d}" if interruption is not None else "x"
        memo = Memo(NoteRef(f"{name}-{time.time_ns()}.cseg", interruption, exemption),
                    max_us=int((self.config.voice_note_max_seconds if exemption is None
                                else EXEMPTION_MEMO_SECONDS) * 1e6))
        with self._lock:
            self._memo = memo
        threading.Thread(target=self._prompt_then_listen, args=(memo,), daemon=True,
                         name="recorder-prompt").start()

    def feed(self, block: AudioBlock) -> bool:
        """An audio block captured now; True when the note is full (then ``end`` it).

        Never blocks (it runs on the capture thread): if the mux stage's queue is
        full the block is lost to the note, counted, and the note's timing error
        shows the hole.
        """
        with self._lock:
            memo = self._memo
            if memo is None or not memo.collecting or self.capture is None:
                return False
            try:
                # Under the lock: every block of a note is queued before its EndNote.
                self.capture.put_nowait(NoteAudio(memo.ref, block))
                memo.samples += len(block.samples)
            except queue.Full:
                self.stats.dropped_samples += len(block.samples)
                log.error("the capture queue is full: %d samples lost to the voice note",
                          len(block.samples))
            if memo.speech is not None:
                memo.speech.put(block)  # returns at once
            return block.end_us - memo.started_us >= memo.max_us

    def end(self) -> None:
        with self._lock:
            memo, self._memo = self._memo, None
        if memo is None:
            return
        # Outside the lock: the queue may be full, and the seal stage may be waiting
        # for the lock (begin). No block of this memo can follow: it is no longer current.
        if self.capture is not None:
            self.capture.put(EndNote(memo))

    def _prompt_then_listen(self, memo: Memo) -> None:
        """Play the prompt; only then listen, so the prompt is not taken for an answer."""
        if memo.interruption is not None:
            self.stats.prompts += 1
            self._signal("prompt")
            cut = self.appender.known.interruptions.get(memo.interruption)
            try:
                if self.prompts is not None and cut is not None and self.speaker is not None:
                    when = datetime.fromtimestamp(cut.cut_utc_ns / 1e9).astimezone()
                    pcm, rate = self.prompts.interruption_prompt(when, cut.reason)
                    self.speaker.play(pcm, rate)
            except Exception:
                log.exception("the voice-note prompt could not be played")
        from device.vad import SpeechListener  # loads the model: only when a note begins

        speech = SpeechListener(self.config.audio_rate) if memo.interruption is not None else None
        with self._lock:
            if self._memo is memo:
                memo.speech = speech
                memo.collecting, memo.started_us = True, monotonic_us()
            elif speech is not None:
                speech.close()

    def seal(self, memo: Memo, media: MediaFile | None, summary: SegmentSummary | None) -> None:
        """On the seal stage, the note's file sealed (``media``; None: no audio, or the
        medium refused it): append its entry. The caller releases the journal after."""
        speech_seconds = memo.speech.close().speech_seconds if memo.speech is not None else 0.0
        if memo.exemption is not None:
            self.appender.append(Exemption(reason=memo.exemption, voice_memo=media))
            self._signal("marker")
            return
        if media is None or summary is None or summary.first_sample_timestamp_us is None:
            log.warning("no audio for the voice note; the prompt will repeat")
            return
        assert memo.interruption is not None
        note = VoiceNote(
            interruption=memo.interruption, media=media,
            first_capture_utc_ns=(summary.first_sample_timestamp_us * 1000
                                  + self.appender.utc_offset_ns),
            audio_samples=summary.audio_samples, audio_rate=self.config.audio_rate,
            speech_seconds=round(speech_seconds, 3))
        self.appender.append(note)
        self.stats.voice_notes += 1
        if not note.explains:  # the verifier's rule, on what the entry says
            log.warning("no speech in the voice note; the prompt will repeat at the next start")
            self._signal("error")
