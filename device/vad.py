"""Voice activity: how many seconds of a voice note are speech.

A voice note explains an interruption only if the officer actually spoke
(Art. 8); the ``voice_note`` entry records ``speech_seconds`` and verification
treats a note without speech as unexplained. The detector is Google WebRTC's
voice-activity detector (the ``webrtcvad`` module of the ``webrtcvad-wheels``
distribution), a small C library that classifies 10/20/30 ms frames of 16-bit
mono PCM with Gaussian mixture models of speech and noise in six bands up to
4 kHz, plus two rules of our own around it.

The rule for ``speech_seconds``
-------------------------------
1. The audio is cut into frames of ``frame_ms`` (30 ms by default), counted
   from the first sample; a last partial frame is not judged.
2. **Steady tones are taken out first.** WebRTC's VAD scores band energies, so
   a steady sine - a beep, a whistle, mains-powered equipment, the simulator's
   test tone - is called speech whenever it lands in a band the noise model has
   not yet adapted to (measured: 40 % of the simulator's stepped tone at
   aggressiveness 3, 77 % at 2, mostly just after each step of its frequency).
   A frame whose energy between 80 Hz and 4 kHz is at least ``TONE_SHARE``
   (80 %) inside one spectral peak (the strongest bin of a Hann-windowed FFT
   and its two neighbours, about +/- 33 Hz at 30 ms) is a tone: that sinusoid
   is fitted (frequency by parabolic interpolation, amplitude and phase by
   least squares) and subtracted, at least ~30 dB, before the VAD sees the
   frame. Voiced speech spreads its energy over many harmonics of its pitch:
   in espeak-ng speech no frame had more than 68 % in one peak, so speech
   frames pass untouched, and speech spoken over a loud tone is still judged
   on the speech.
3. A frame is *voiced* if the VAD (at ``aggressiveness`` 0-3) says so.
4. Voiced frames separated by at most ``BRIDGE_MS`` (90 ms) of unvoiced frames
   form one *run*, the gap included (a stop consonant or a breath between
   words).
5. A run counts only if it lasts at least ``MIN_RUN_MS`` (150 ms): clicks,
   knocks, and the VAD's own start-up (it calls the first ~90 ms of any noise
   speech while its noise model settles) make shorter runs. A syllable lasts
   longer.
6. ``speech_seconds`` is the total length of the counted runs; ``has_speech``
   is ``speech_seconds >= MIN_SPEECH_SECONDS`` (0.5 s: a word or two, not a
   cough).

>>> import numpy as np
>>> detector = SpeechDetector(rate=48_000)
>>> detector.add(np.zeros(48_000, np.int16))   # one second of silence
>>> detector.speech_seconds, detector.has_speech
(0.0, False)

What it cannot tell from speech: loud broadband noise (white noise at
-20 dBFS is called speech throughout; wind on the microphone may be too) and
sweeping tones such as a siren (not steady within a frame, so rule 2 does not
take them out). A custodian listening to the note is the final judge;
``speech_seconds`` only flags notes that are plainly silent.

Rates: WebRTC's VAD takes 8, 16, 32 and 48 kHz directly; any other rate (the
recorder also allows 44.1 kHz) is resampled to 16 kHz with PyAV (FFmpeg's
swresample) first. The detector keeps one model state for the whole note, so
feed it one note's audio, in order. Cost at 48 kHz, one x86 core: ~3 ms per
second of speech, ~9 ms per second of a tone that rule 2 must take out
(``test_cpu_cost_per_second_of_audio`` prints both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np
import webrtcvad

from hardware.frames import AudioBlock

VAD_RATES = (8_000, 16_000, 32_000, 48_000)  # what WebRTC's VAD takes as is
RESAMPLE_RATE = 16_000  # any other rate is converted to this first
FRAME_MS_CHOICES = (10, 20, 30)
DEFAULT_FRAME_MS = 30
# 3 is WebRTC's strictest mode: a voice note wrongly counted as spoken hides a
# missing explanation, while one wrongly counted as silent only draws a warning
# that a custodian can check by listening.
DEFAULT_AGGRESSIVENESS = 3
BRIDGE_MS = 90
MIN_RUN_MS = 150
MIN_SPEECH_SECONDS = 0.5
TONE_SHARE = 0.8
_TONE_BAND_HZ = (80.0, 4_000.0)  # the band WebRTC's VAD looks at


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
    """Rules 4-5 of the module docstring, over a stream of per-frame decisions."""

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


class _ToneRemover:
    """Rule 2: subtract one dominant steady sinusoid from a frame, if there is one."""

    def __init__(self, frame_samples: int, rate: int) -> None:
        self._window = np.hanning(frame_samples)
        freqs = np.fft.rfftfreq(frame_samples, 1 / rate)
        self._band = (freqs >= _TONE_BAND_HZ[0]) & (freqs <= _TONE_BAND_HZ[1])
        self._n = np.arange(frame_samples)
        self._rate = rate
        self._frame_samples = frame_samples
        self.tonal_frames = 0

    def clean(self, frame: np.ndarray) -> np.ndarray:
        signal = frame.astype(np.float64)
        magnitude = np.abs(np.fft.rfft(signal * self._window))
        power = np.where(self._band, magnitude**2, 0.0)
        total = power.sum()
        if total <= 0.0:
            return frame
        peak = int(np.argmax(power))
        if peak == 0 or peak >= len(power) - 1:
            return frame
        if power[peak - 1 : peak + 2].sum() < TONE_SHARE * total:
            return frame
        self.tonal_frames += 1
        # Parabolic interpolation of the log magnitude gives the frequency to a few
        # hundredths of a bin; least squares then fits amplitude and phase exactly.
        left, centre, right = np.log(magnitude[peak - 1 : peak + 2] + 1e-12)
        curvature = left - 2 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        omega = 2 * np.pi * (peak + offset) / self._frame_samples
        basis = np.stack([np.cos(omega * self._n), np.sin(omega * self._n)])
        gram = basis @ basis.T
        coefficients = np.linalg.solve(gram, basis @ signal)
        residual = signal - coefficients @ basis
        return np.clip(np.round(residual), -32768, 32767).astype(np.int16)


class SpeechDetector:
    """Counts the seconds of speech in audio fed to it piece by piece.

    ``add`` takes :class:`~hardware.frames.AudioBlock` objects or int16 arrays,
    of any length; the rule is in the module docstring.

    >>> import numpy as np
    >>> detector = SpeechDetector(rate=16_000, aggressiveness=2)
    >>> detector.add(np.zeros(8_000, np.int16))
    >>> detector.seconds_heard
    0.48
    """

    def __init__(
        self,
        rate: int = 48_000,
        aggressiveness: int = DEFAULT_AGGRESSIVENESS,
        frame_ms: int = DEFAULT_FRAME_MS,
    ) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        if frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"frame_ms must be one of {FRAME_MS_CHOICES}, got {frame_ms}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.aggressiveness = aggressiveness
        self.frame_ms = frame_ms
        self._vad = webrtcvad.Vad(aggressiveness)
        self._vad_rate = rate if rate in VAD_RATES else RESAMPLE_RATE
        self._resampler: av.AudioResampler | None = None
        if self._vad_rate != rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RESAMPLE_RATE)
        self._frame_samples = self._vad_rate * frame_ms // 1000
        self._pending = np.zeros(0, np.int16)  # samples short of a whole frame
        self._tones = _ToneRemover(self._frame_samples, self._vad_rate)
        self._runs = _RunTracker(
            bridge_frames=BRIDGE_MS // frame_ms, min_run_frames=-(-MIN_RUN_MS // frame_ms)
        )
        self.voiced_frames = 0  # frames the VAD called speech, before rules 4-5

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
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        converted = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(converted) if converted else np.zeros(0, np.int16)

    def _judge(self, samples: np.ndarray) -> None:
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        size = self._frame_samples
        whole = len(samples) - len(samples) % size
        for start in range(0, whole, size):
            frame = self._tones.clean(samples[start : start + size])
            voiced = self._vad.is_speech(np.ascontiguousarray(frame).tobytes(), self._vad_rate)
            self.voiced_frames += voiced
            self._runs.push(voiced)
        self._pending = samples[whole:].copy()

    @property
    def seconds_heard(self) -> float:
        """Audio judged so far (whole frames), in seconds."""
        return self._runs.frames_seen * self.frame_ms / 1000

    @property
    def speech_seconds(self) -> float:
        """Seconds of speech so far (rules 4-5 applied; an open run counts once long enough)."""
        frames = self._runs.counted_frames
        open_run = self._runs.open_run()
        if open_run is not None:
            frames += open_run[1] - open_run[0]
        return frames * self.frame_ms / 1000

    @property
    def has_speech(self) -> bool:
        """At least :data:`MIN_SPEECH_SECONDS` of speech so far."""
        return self.speech_seconds >= MIN_SPEECH_SECONDS

    @property
    def runs(self) -> list[SpeechRun]:
        """The counted stretches of speech so far, in order."""
        runs = list(self._runs.runs)
        open_run = self._runs.open_run()
        if open_run is not None:
            runs.append(open_run)
        seconds = self.frame_ms / 1000
        return [SpeechRun(round(start * seconds, 3), round(end * seconds, 3))
                for start, end in runs]

    @property
    def tonal_frames(self) -> int:
        """Frames that had a steady tone taken out (rule 2)."""
        return self._tones.tonal_frames


def speech_seconds(
    pcm: np.ndarray, rate: int, aggressiveness: int = DEFAULT_AGGRESSIVENESS
) -> float:
    """Seconds of speech in a whole buffer of mono int16 PCM (the module's rule).

    >>> import numpy as np
    >>> speech_seconds(np.zeros(48_000, np.int16), 48_000)
    0.0
    """
    detector = SpeechDetector(rate, aggressiveness)
    detector.add(np.asarray(pcm))
    return detector.speech_seconds
