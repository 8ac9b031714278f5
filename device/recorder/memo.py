"""Voice notes and exemption memos: prompt, listen, seal (Art. 5 and 8).

At the first start after an interruption the device plays a spoken prompt
and only then listens, so the prompt is not taken for the answer. The audio
until a short press of the function button (or the cap) is sealed as a
``voice_note`` linked to the interruption. An exemption's memo is the same,
sealed with its ``exemption`` entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from device.config import RecorderConfig
from device.recorder.appender import EntryAppender
from device.recorder.messages import SealMemo
from device.recorder.stats import RecorderStats
from hardware.camera import monotonic_us
from hardware.frames import AudioBlock
from protocol.entries import Exemption, VoiceNote

if TYPE_CHECKING:
    from device.vad import SpeechListener

log = logging.getLogger(__name__)

EXEMPTION_MEMO_SECONDS = 20.0


@dataclass
class Memo:
    """Audio being collected for a voice note (or an exemption's voice memo)."""

    file: str
    interruption: int | None  # a voice note explains this interruption
    exemption: str | None  # or: an exemption's reason
    max_us: int
    blocks: list[AudioBlock] = field(default_factory=list)
    collecting: bool = False
    started_us: int = 0
    # A voice note's speech is judged as it is spoken, on the listener's own thread.
    speech: SpeechListener | None = None


class VoiceNotes:
    """The one voice note or memo in progress, from its prompt to its seal.

    ``feed`` is given every audio block (by the capture router); ``end`` hands
    the memo to the seal stage, whose ``seal`` appends its entry in order.
    """

    def __init__(self, config: RecorderConfig, appender: EntryAppender, stats: RecorderStats,
                 archive_public: bytes, to_seal: Callable[[SealMemo], None],
                 signal: Callable[[str], None], prompts: Any = None):
        self.config, self.appender, self.stats = config, appender, stats
        self.archive_public = archive_public
        self._to_seal, self._signal, self.prompts = to_seal, signal, prompts
        self.speaker: Any = None  # set when the devices are open
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
        memo = Memo(file=f"{name}-{time.time_ns()}.cseg", interruption=interruption,
                    exemption=exemption,
                    max_us=int((self.config.voice_note_max_seconds if exemption is None
                                else EXEMPTION_MEMO_SECONDS) * 1e6))
        with self._lock:
            self._memo = memo
        threading.Thread(target=self._prompt_then_listen, args=(memo,), daemon=True,
                         name="recorder-prompt").start()

    def feed(self, block: AudioBlock) -> bool:
        """An audio block captured now; True when the note is full (then ``end`` it)."""
        with self._lock:
            memo = self._memo
            if memo is None or not memo.collecting:
                return False
            memo.blocks.append(block)
            if memo.speech is not None:
                memo.speech.put(block)  # returns at once
            return block.end_us - memo.started_us >= memo.max_us

    def end(self) -> None:
        with self._lock:
            memo, self._memo = self._memo, None
        if memo is None:
            return
        if not memo.collecting:
            memo.blocks.clear()  # stopped before the prompt ended: nothing was said
        self._to_seal(SealMemo(memo))

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

    def seal(self, memo: Memo) -> None:
        """On the seal stage: seal the memo's audio and append its entry."""
        from device.voicenote import seal_voice_note

        if not memo.blocks:
            if memo.speech is not None:
                memo.speech.close()
            if memo.exemption is not None:
                self.appender.append(Exemption(reason=memo.exemption))
                self._signal("marker")
            log.warning("no audio for the voice note; the prompt will repeat")
            return
        notes: list[VoiceNote] = []

        def append_entry(media, summary) -> None:  # noqa: ANN001 - seal_voice_note's
            first_utc = summary.first_sample_us * 1000 + self.appender.utc_offset_ns
            if memo.exemption is not None:
                self.appender.append(Exemption(reason=memo.exemption, voice_memo=media))
                return
            assert memo.interruption is not None
            note = VoiceNote(interruption=memo.interruption, media=media,
                             first_capture_utc_ns=first_utc,
                             audio_samples=summary.audio_samples,
                             audio_rate=self.config.audio_rate,
                             speech_seconds=round(summary.speech_seconds, 3))
            self.appender.append(note)
            notes.append(note)

        seal_voice_note(self.appender.store, memo.file, self.archive_public,
                    memo.blocks, speech=memo.speech, on_sealed=append_entry)
        if memo.exemption is not None:
            self._signal("marker")
            return
        self.stats.voice_notes += 1
        if not (notes and notes[0].explains):  # the verifier's rule, on what the entry says
            log.warning("no speech in the voice note; the prompt will repeat at the next start")
            self._signal("error")
