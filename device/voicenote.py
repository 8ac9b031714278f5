"""The voice note's media: the officer's spoken explanation of an interruption (Art. 8).

At the press that resumes an interrupted recording, the device plays the
prompt (:mod:`device.prompts`) and then records what the officer says - until
the function button is pressed, or at most ``voice_note_max_seconds`` - into a
*voice note*: one sealed, audio-only file linked to the interruption by the
``voice_note`` entry. Video recording goes on as usual meanwhile: the same
microphone blocks go both to the span's segments and to the voice note, so the
note is a lossless copy of that stretch of the recording's sound that can be
found, exported and played on its own.

The file is written like a segment's audio (:mod:`device.muxer`): FLAC in
fragmented MP4, strictly appended to a write-only sink (never a seek), with
``on_fragment_end`` called after each fragment's last byte so the sealer can
close an encryption chunk and fdatasync there. FLAC packets are all
keyframes, so fragments are cut by duration only (``frag_duration``; cutting
at every keyframe would make one fragment, and one fsync, per 96 ms packet);
FFmpeg cuts *before* the packet that reaches the limit, so the trigger sits
one packet plus margin below :data:`VOICE_NOTE_FRAGMENT_US`. PTS 0 is
the first sample's capture time and audio PTS counts samples, so no sample is
lost or repeated by timestamp rounding.

A :class:`~device.vad.SpeechListener` hears the same blocks on its own
thread; its ``speech_seconds`` goes into the ``voice_note`` entry (below the
speech rule of docs/format.md the note explains nothing). The recorder gives
the listener it fed while the note was spoken; otherwise the writer feeds one.

>>> import io
>>> import numpy as np
>>> from hardware.frames import AudioBlock
>>> writer = VoiceNoteWriter(io.BytesIO())
>>> writer.add(AudioBlock(np.zeros(48_000, np.int16), timestamp_us=5_000_000, rate=48_000))
>>> summary = writer.close()
>>> summary.audio_samples, summary.first_sample_us, summary.speech_seconds
(48000, 5000000, 0.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from device.mp4boxes import FragmentInfo, FragmentSpotter, Sink
from device.muxer import DEFAULT_FLAC_BLOCK_SAMPLES, _sample_time_us
from device.sealer import SegmentSealer
from device.vad import SpeechListener
from hardware.frames import AudioBlock
from protocol.entries import MediaFile

VOICE_NOTE_CODECS = {"audio": "flac"}  # the MediaFile's codecs: no video track
_JITTER_US = 5_000
# A cut voice note is never recovered (it names no recording), so its fragments stay
# a second long: the short fragments of segments (muxer.MAX_FRAGMENT_US) buy it nothing.
VOICE_NOTE_FRAGMENT_US = 1_000_000


@dataclass(frozen=True, slots=True)
class VoiceNoteSummary:
    """What went into one voice note, for the ``voice_note`` entry."""

    first_sample_us: int | None  # capture time (monotonic µs) of the first sample, PTS 0
    audio_samples: int
    rate: int
    speech_seconds: float  # by device.vad's rule, over the samples written (or the listener's)
    bytes_written: int
    fragments: int
    # Largest gap between a block's capture time and where the sample count puts it;
    # more than a few ms means the microphone lost samples during the note.
    audio_timing_error_us: int
    truncated_samples: int  # samples offered beyond max_seconds and not written

    @property
    def seconds(self) -> float:
        return self.audio_samples / self.rate


class VoiceNoteWriter:
    """Writes one voice note: mono int16 PCM as FLAC in fragmented MP4, to a write-only sink.

    ``max_seconds`` (e.g. the config's ``voice_note_max_seconds``) caps the note:
    :meth:`add` writes up to the cap and returns the samples beyond it (as a
    block, for the caller to know the note is full), and :attr:`full` turns True.
    Not thread-safe: feed it from one thread, blocks in capture order. ``speech``:
    a :class:`~device.vad.SpeechListener` the caller has fed (or will feed) with
    the same audio as it was captured; without one the writer feeds its own.
    """

    def __init__(
        self,
        sink: Sink,
        rate: int = 48_000,
        on_fragment_end: Callable[[FragmentInfo], None] | None = None,
        *,
        max_seconds: float | None = None,
        max_fragment_us: int = VOICE_NOTE_FRAGMENT_US,
        flac_block_samples: int = DEFAULT_FLAC_BLOCK_SAMPLES,
        speech: SpeechListener | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.rate = rate
        self.max_samples = None if max_seconds is None else round(max_seconds * rate)
        self._on_fragment_end = on_fragment_end
        block_us = math.ceil(flac_block_samples * 1_000_000 / rate) + _JITTER_US
        #: FFmpeg's ``frag_duration``: a fragment ends before the packet reaching it.
        self.fragment_trigger_us = max(max_fragment_us - 2 * block_us, block_us)
        # A listener given is fed by the caller with the same blocks, as they were captured.
        self._feed_speech = speech is None
        self.speech = speech if speech is not None else SpeechListener(rate)

        # Given the rate, the spotter counts each fragment's samples from its moof.
        self._spotter = FragmentSpotter(sink, self._fragment_ended, rate)
        self._container = av.open(
            self._spotter,
            mode="w",
            format="mp4",
            container_options={
                "movflags": "empty_moov+default_base_moof",
                "frag_duration": str(self.fragment_trigger_us),
                "flush_packets": "1",
            },
        )
        self._stream = self._container.add_stream(
            "flac", rate=rate, options={"frame_size": str(flac_block_samples)}
        )
        self._stream.codec_context.layout = "mono"
        self._stream.codec_context.format = "s16"
        self._stream.codec_context.time_base = Fraction(1, rate)

        self._samples = 0
        self._first_sample_us: int | None = None
        self._timing_error_us = 0
        self._truncated = 0
        self._summary: VoiceNoteSummary | None = None

    @property
    def audio_samples(self) -> int:
        return self._samples

    @property
    def full(self) -> bool:
        """The note has reached ``max_seconds``."""
        return self.max_samples is not None and self._samples >= self.max_samples

    def add(self, block: AudioBlock) -> AudioBlock | None:
        """Write a block captured after everything before; returns what did not fit, if any."""
        if self._summary is not None:
            raise ValueError("the voice note is closed")
        if block.rate != self.rate:
            raise ValueError(f"audio block at {block.rate} Hz, voice note at {self.rate} Hz")
        samples = block.samples
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError(f"voice note audio must be mono int16 of shape (n,), "
                             f"not {samples.dtype} of shape {samples.shape}")
        rest: AudioBlock | None = None
        if self.max_samples is not None and self._samples + len(samples) > self.max_samples:
            room = max(0, self.max_samples - self._samples)
            rest = AudioBlock(samples[room:], _sample_time_us(block.timestamp_us, room, self.rate),
                              self.rate)
            self._truncated += len(samples) - room
            samples = samples[:room]
        if len(samples) == 0:
            return rest
        if self._first_sample_us is None:
            self._first_sample_us = block.timestamp_us
        else:
            counted_us = _sample_time_us(self._first_sample_us, self._samples, self.rate)
            self._timing_error_us = max(self._timing_error_us,
                                        abs(block.timestamp_us - counted_us))
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        # The frame's own time base: the muxer may rewrite the stream's (see platform notes).
        frame.time_base = Fraction(1, self.rate)
        frame.pts = self._samples  # sample-counted: contiguous whatever the block jitter
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._samples += len(samples)
        if self._feed_speech:
            self.speech.put(samples)
        return rest

    def close(self) -> VoiceNoteSummary:
        """Finish the file (last fragment + ``mfra`` index) and describe it.

        Calling it again returns the same summary. The sink is left open. A note
        without any sample is still a valid (empty) MP4.
        """
        if self._summary is not None:
            return self._summary
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
        speech_seconds = self.speech.close().speech_seconds
        self._summary = VoiceNoteSummary(
            first_sample_us=self._first_sample_us,
            audio_samples=self._samples,
            rate=self.rate,
            speech_seconds=speech_seconds,
            bytes_written=self._spotter.bytes_written,
            fragments=self._spotter.fragments,
            audio_timing_error_us=self._timing_error_us,
            truncated_samples=self._truncated,
        )
        return self._summary

    def __enter__(self) -> VoiceNoteWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # On an error, still finish what was written: it stays a playable prefix.
        if self._summary is None:
            self.close()

    def _fragment_ended(self, fragment: FragmentInfo) -> None:
        if self._on_fragment_end is None:
            return
        # Capture times as the muxer gives them (the sealer journals them): here on the
        # note's own sample-counted clock, which is how its PTS are set.
        total = fragment.total_audio_samples
        first_us = self._first_sample_us if total else None
        last_us = (None if first_us is None
                   else _sample_time_us(first_us, total - 1, self.rate))
        self._on_fragment_end(dataclasses.replace(
            fragment, first_sample_us=first_us, last_sample_us=last_us))


def seal_voice_note(
    store: Path,
    file: str,
    archive_public: bytes,
    blocks: Iterable[AudioBlock],
    rate: int | None = None,
    max_seconds: float | None = None,
    context: dict[str, Any] | None = None,
    speech: SpeechListener | None = None,
    on_sealed: Callable[[MediaFile, VoiceNoteSummary], None] | None = None,
) -> tuple[MediaFile, VoiceNoteSummary]:
    """Write ``blocks`` as a voice note sealed into ``store`` (encrypted to the archive key).

    ``rate`` defaults to the first block's. Each fragment is made durable, and
    journaled, as it ends (``SegmentSealer.end_fragment``); ``context`` goes into
    the sealer's journal (default ``{"kind": "voice_note"}``). Returns the
    ``MediaFile`` for the ``voice_note`` entry and the summary; the caller
    appends the entry (``VoiceNote(interruption=..., media=..., first_capture_utc_ns=
    <first_sample_us on the UTC clock>, audio_samples=..., audio_rate=...,
    speech_seconds=...)``) — in ``on_sealed(media, summary)``, if given: the
    journal is then released only once that returned (the entry durable).
    ``speech``: a listener already fed these blocks (see :class:`VoiceNoteWriter`).
    Blocks beyond ``max_seconds`` are not written. If writing fails, the partial
    file stays in ``pending/``, as a segment's would.

    >>> import tempfile
    >>> from protocol.keys import ArchiveSecretKey
    >>> store = Path(tempfile.mkdtemp())
    >>> silence = AudioBlock(np.zeros(4_800, np.int16), timestamp_us=0, rate=48_000)
    >>> media, summary = seal_voice_note(store, "vn-00007.cseg",
    ...                                  ArchiveSecretKey.generate().public_raw, [silence])
    >>> media.codecs, summary.audio_samples, summary.speech_seconds
    ({'audio': 'flac'}, 4800, 0.0)
    """
    blocks = iter(blocks)
    first = next(blocks, None)
    if rate is None:
        rate = first.rate if first is not None else 48_000
    sealer = SegmentSealer(store, file, archive_public, codecs=dict(VOICE_NOTE_CODECS),
                           context=context if context is not None else {"kind": "voice_note"})
    with VoiceNoteWriter(sealer, rate, sealer.end_fragment, max_seconds=max_seconds,
                         speech=speech) as writer:
        if first is not None and writer.add(first) is None:
            for block in blocks:
                if writer.add(block) is not None:
                    break
    summary = writer.close()
    if on_sealed is None:
        return sealer.close(), summary
    # The same two-phase close as a segment's: the journal stays until the caller
    # has appended the note's entry, so a cut in between still finds the file.
    media = sealer.close(keep_journal=True)
    on_sealed(media, summary)
    sealer.release_journal()
    return media, summary
