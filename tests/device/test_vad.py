"""The speech detector, judged on real espeak-ng speech and on every sox-made non-speech kind."""

from __future__ import annotations

import doctest
import functools
import threading
import time

import numpy as np
import pytest

import device.vad
import hardware.sim.sounds
import hardware.sim.voices
from device.vad import (
    WINDOW_SECONDS,
    SpeechDetector,
    SpeechListener,
    SpeechRun,
    _RunTracker,
    speech_seconds,
)
from hardware.frames import AudioBlock
from hardware.microphone import MicrophoneConfig
from hardware.sim.microphone import SimMicrophone
from hardware.sim.signals import TONE_STEPS, to_int16, tone
from hardware.sim.sounds import NON_SPEECH, mix_at_snr, non_speech, speech
from hardware.sim.voices import PHRASES, OfficerVoice, build_voices
from protocol.entries import MIN_SPEECH_SECONDS

RATE = 48_000
ENGLISH = "Recording was interrupted because of low battery. I am changing the battery now."
CHINESE = "录像因电量低中断。我正在更换电池。"
NON_SPEECH_SECONDS = 2.0


@functools.cache
def _espeak(text: str, voice: str, rate: int) -> bytes:
    return speech(text, voice, rate, speed_wpm=175, trim=False).tobytes()  # espeak-ng default


def espeak_speech(text: str = ENGLISH, voice: str = "en", rate: int = RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng, converted by sox to ``rate``: mono int16 (untrimmed)."""
    return np.frombuffer(_espeak(text, voice, rate), np.int16).copy()


def active_seconds(pcm: np.ndarray, rate: int, level_db: float = -40.0) -> float:
    """A plain reference: 30 ms frames whose RMS is above ``level_db`` dBFS."""
    size = rate * 30 // 1000
    frames = pcm[: len(pcm) // size * size].reshape(-1, size).astype(np.float64) / 32768
    rms = np.sqrt((frames**2).mean(axis=1))
    return float((20 * np.log10(rms + 1e-12) > level_db).sum() * 0.03)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


def feed_in_blocks(detector: SpeechDetector, pcm: np.ndarray, block: int,
                   start_us: int = 1_000_000) -> None:
    for offset in range(0, len(pcm), block):
        detector.add(AudioBlock(pcm[offset : offset + block],
                                start_us + offset * 1_000_000 // detector.rate, detector.rate))


def heard(pcm: np.ndarray, rate: int = RATE) -> SpeechDetector:
    detector = SpeechDetector(rate)
    detector.add(pcm)
    return detector


@pytest.fixture(scope="module")
def english() -> np.ndarray:
    return espeak_speech(ENGLISH, "en")


# -- speech ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "voice"), [(ENGLISH, "en"), (CHINESE, "cmn-latn-pinyin"),
                                             (ENGLISH, "en-us+f3")])
def test_espeak_speech_is_detected_for_about_its_voiced_duration(text: str, voice: str) -> None:
    spoken = espeak_speech(text, voice)
    detector = heard(np.concatenate([silence(1.0), spoken, silence(1.0)]))
    voiced = active_seconds(spoken, RATE)
    assert voiced > 2.0  # the reference itself found speech
    assert 0.75 * voiced <= detector.speech_seconds <= 1.25 * voiced, (
        detector.speech_seconds, voiced)
    assert detector.has_speech
    # The speech is found where it is: not in the leading or trailing second of silence.
    runs = detector.runs
    assert runs[0].start_seconds >= 1.0 - 0.1
    assert runs[-1].end_seconds <= 1.0 + len(spoken) / RATE + 0.15


@pytest.mark.parametrize(("colour", "snr_db"), [("white", 10), ("white", 0), ("pink", 0)])
def test_speech_in_noise_is_still_speech(english: np.ndarray, colour: str, snr_db: float) -> None:
    noise = non_speech(f"noise_{colour}_6", len(english) / RATE + 1.0, RATE)
    detector = heard(mix_at_snr(english, noise, snr_db))
    assert detector.speech_seconds >= 0.75 * active_seconds(english, RATE)


@pytest.mark.parametrize("background", ["chord_fifth_200_300", "hum_120", "dtmf_held_5"])
def test_speech_over_a_steady_sound_is_still_speech(english: np.ndarray, background: str) -> None:
    """The change check (rule 3) must not take speech for steady because a tone is under it."""
    steady = non_speech(background, len(english) / RATE + 1.0, RATE)
    detector = heard(mix_at_snr(english, steady, 0))
    assert detector.speech_seconds >= 0.75 * active_seconds(english, RATE)


def test_block_size_does_not_change_the_result(english: np.ndarray) -> None:
    pcm = np.concatenate([silence(0.5), english, silence(0.5)])
    whole = speech_seconds(pcm, RATE)
    for block in (333, 960, 1441, 4096):  # shorter, equal to and longer than a window
        detector = SpeechDetector(RATE)
        feed_in_blocks(detector, pcm, block)
        assert detector.speech_seconds == whole
    assert whole > 2.0


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_other_recorder_rates_give_the_same_answer(english: np.ndarray, rate: int) -> None:
    at_rate = espeak_speech(ENGLISH, "en", rate)
    reference = speech_seconds(english, RATE)
    assert speech_seconds(at_rate, rate) == pytest.approx(reference, abs=0.25)


# -- not speech: every kind the benchmark uses, made by sox ------------------------------


@pytest.mark.parametrize("kind", list(NON_SPEECH))
def test_non_speech_is_rejected(kind: str) -> None:
    detector = heard(non_speech(kind, NON_SPEECH_SECONDS, RATE))
    assert detector.seconds_heard >= NON_SPEECH_SECONDS - WINDOW_SECONDS
    assert detector.speech_seconds < MIN_SPEECH_SECONDS
    assert not detector.has_speech


def test_a_chord_of_voice_harmonics_fools_silero_but_not_the_change_check() -> None:
    """Why rule 3 exists: 200 + 300 Hz is the 2nd and 3rd harmonic of a 100 Hz voice."""
    detector = heard(non_speech("chord_fifth_200_300", 3.0, RATE))
    assert detector.speechlike_windows * WINDOW_SECONDS > 2.0  # Silero alone: speech
    assert detector.steady_windows >= 0.95 * detector.speechlike_windows
    assert detector.speech_seconds == 0.0


def test_clicks_are_not_speech() -> None:
    # A 1 ms knock every 250 ms.
    pcm = np.zeros(4 * RATE)
    pcm[np.arange(4 * RATE) % (RATE // 4) < 48] = 0.8
    assert speech_seconds(to_int16(pcm), RATE) == 0.0


@pytest.mark.parametrize("first_sample", [0, 3 * RATE + 777])
def test_the_simulators_background_tone_is_not_speech(first_sample: int) -> None:
    # A full cycle of the stepped tone (every frequency, every step), from two phases.
    pcm = to_int16(tone(first_sample, TONE_STEPS * RATE, RATE))
    assert speech_seconds(pcm, RATE) == 0.0


# -- the simulator's voice, as end-to-end tests drive voice notes -----------------------


def _sim_capture(before_s: float, speak_s: float, after_s: float,
                 voice: np.ndarray | None = None) -> list[AudioBlock]:
    block = 960
    with SimMicrophone(MicrophoneConfig(rate=RATE, block=block), realtime=False) as mic:
        mic.start()
        blocks = [mic.read(1) for _ in range(int(before_s * RATE / block))]
        if speak_s:
            mic.speak(seconds=speak_s, samples=voice)
        blocks += [mic.read(1) for _ in range(int((speak_s + after_s) * RATE / block))]
    assert all(b is not None for b in blocks)
    return blocks  # type: ignore[return-value]


@pytest.mark.parametrize("before_s", [1.0, 2.6, 5.3])  # speak over different tone steps
def test_the_simulators_speak_is_speech(before_s: float) -> None:
    detector = SpeechDetector(RATE)
    for b in _sim_capture(before_s, 3.0, 1.0):
        detector.add(b)
    # speak(3.0) is espeak-ng speech, pauses between words included: most of it is
    # found, and nowhere else.
    assert 1.8 <= detector.speech_seconds <= 3.1
    assert detector.has_speech
    assert detector.runs[0].start_seconds >= before_s - 0.05
    assert detector.runs[-1].end_seconds <= before_s + 3.0 + 0.3


def test_the_officer_voice_is_built_once_and_is_speech(tmp_path) -> None:
    folder = tmp_path / "voices"
    assert build_voices(folder) is True
    assert build_voices(folder) is False  # up to date: nothing spoken again
    voice = OfficerVoice.load(folder)
    assert len(voice.phrases) == len(PHRASES)
    said = voice.say(4.0)
    assert len(said) == 4 * RATE and np.max(np.abs(said)) <= 0.61
    assert heard(to_int16(said)).speech_seconds > 2.5
    # At another microphone rate too.
    assert heard(to_int16(voice.say(4.0, 16_000)), 16_000).speech_seconds > 2.5


def test_the_simulator_without_speak_is_not_speech() -> None:
    detector = SpeechDetector(RATE)
    for b in _sim_capture(4.5, 0.0, 0.0):
        detector.add(b)
    assert detector.seconds_heard > 4.0
    assert detector.speech_seconds == 0.0


@pytest.mark.parametrize(("scale", "share"), [(0.3, 0.45), (0.5, 0.9)])
def test_quiet_speech_over_the_tone_is_still_heard(english: np.ndarray, scale: float,
                                                   share: float) -> None:
    # Speech at 0.3 of full scale is about 10 dB below the simulator's tone (what its
    # speaker echoes of a prompt): Silero hears about half of it (2.3 of 4.2 s measured),
    # still enough to explain; at 0.5, nearly all.
    voice = english.astype(np.float64) / 32768 * scale
    detector = SpeechDetector(RATE)
    for b in _sim_capture(0.5, 0.0, 0.0) + _sim_capture(0.0, len(voice) / RATE, 0.5, voice):
        detector.add(b)
    assert detector.has_speech
    assert detector.speech_seconds >= share * active_seconds(english, RATE)


# -- the counting rule -----------------------------------------------------------------


def _track(pattern: str) -> _RunTracker:
    tracker = _RunTracker(bridge_frames=3, min_run_frames=5)
    for mark in pattern:
        tracker.push(mark == "#")
    return tracker


@pytest.mark.parametrize(("pattern", "frames"), [
    ("....####......", 0),          # 128 ms: a click, not a syllable
    ("....#####.....", 5),          # 160 ms counts
    ("##...##.......", 7),          # a 96 ms gap is bridged, and counted
    ("##....###.....", 0),          # a 128 ms gap is not: two short runs
    ("#####....#####", 10),         # two runs, the gap between not counted
    ("..........####", 0),          # an open run too short so far
    ("........######", 6),          # an open run long enough counts already
])
def test_run_rule(pattern: str, frames: int) -> None:
    tracker = _track(pattern)
    open_run = tracker.open_run()
    total = tracker.counted_frames + (open_run[1] - open_run[0] if open_run else 0)
    assert total == frames


def test_has_speech_needs_half_a_second(english: np.ndarray) -> None:
    first_run = heard(english)
    run = first_run.runs[0]
    assert isinstance(run, SpeechRun) and run.seconds > MIN_SPEECH_SECONDS
    # Feed speech up to 0.3 s into its first run: speech, but not enough yet.
    detector = SpeechDetector(RATE)
    detector.add(english[: int((run.start_seconds + 0.3) * RATE)])
    assert 0 < detector.speech_seconds < MIN_SPEECH_SECONDS
    assert not detector.has_speech
    detector.add(english[int((run.start_seconds + 0.3) * RATE) :])
    assert detector.has_speech


# -- the listener: judged on its own thread -----------------------------------------------


def test_the_listener_gives_the_detectors_answer_without_making_the_caller_wait(
        english: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    pcm = np.concatenate([silence(0.5), english, silence(0.5)])
    expected = speech_seconds(pcm, RATE)
    release = threading.Event()
    add = SpeechDetector.add

    def slow_add(self: SpeechDetector, audio: AudioBlock | np.ndarray) -> None:
        release.wait()  # a detector far slower than the capture
        add(self, audio)

    monkeypatch.setattr(SpeechDetector, "add", slow_add)
    listener = SpeechListener(RATE)
    threading.Timer(2.0, release.set).start()  # a put() that waited would take 2 s
    started = time.perf_counter()
    for offset in range(0, len(pcm), 960):  # 20 ms blocks, as the microphone gives
        listener.put(AudioBlock(pcm[offset : offset + 960], offset * 1_000_000 // RATE, RATE))
    assert time.perf_counter() - started < 0.5  # put() never waited for the detector
    release.set()
    assert listener.close().speech_seconds == expected
    with pytest.raises(ValueError, match="closed"):
        listener.put(silence(0.1))


def test_the_listener_raises_what_the_detector_raised_at_close() -> None:
    listener = SpeechListener(RATE)
    listener.put(AudioBlock(np.zeros(160, np.int16), 0, 16_000))  # the wrong rate
    with pytest.raises(ValueError, match="16000 Hz"):
        listener.close()


# -- misuse, docs ----------------------------------------------------------------------


def test_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match="rate"):
        SpeechDetector(0)
    detector = SpeechDetector(RATE)
    with pytest.raises(ValueError, match="16000 Hz"):
        detector.add(AudioBlock(np.zeros(160, np.int16), 0, 16_000))
    with pytest.raises(ValueError, match="int16"):
        detector.add(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="mono"):
        detector.add(np.zeros((160, 2), np.int16))
    with pytest.raises(ValueError, match="unknown sound 'kazoo'"):
        non_speech("kazoo", 1.0, RATE)


@pytest.mark.parametrize("module", [device.vad, hardware.sim.sounds, hardware.sim.voices])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
