"""Benchmark: does the voice-note speech detector tell speech from everything else?

    .venv/bin/python benchmarks/vad.py [--seconds 4] [--rate 48000]

Makes its own labelled set (``hardware.sim.sounds``): espeak-ng speech in
English and Chinese (several phrases, voices, speeds and pitches), clean and
mixed with white or pink noise at 10 dB and 0 dB SNR; and every non-speech
kind sox makes there - steady tones, beeps, keypad (DTMF) tones dialled and
held, two- and three-note chords, mains hum at 50/60/100/120 Hz with
harmonics, sirens (wail, yelp, hi-lo, swept), white/pink/brown noise, silence
- plus the simulator's stepped background tone. Each clip goes through
:class:`device.vad.SpeechDetector` at the device's rate, as a voice note's
audio does.

A clip *counts as speech* when the detector finds at least
``MIN_SPEECH_SECONDS`` (0.5 s) in it - the rule that decides whether a voice
note explains its interruption. Keys on the last line (JSON):

- ``speech_recall``: share of speech clips counted as speech (goal >= 0.95);
- ``nonspeech_false``: share of non-speech clips counted as speech (goal <= 0.02);
- ``rtf``: CPU seconds of the detector (all its threads) per second of audio,
  in this process on this machine (goal <= 0.1);
- the goals, the clip counts, and each miss by name; ``without_change_check``:
  the non-speech clips Silero alone would count (rule 3 of device/vad.py off).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import device.vad
from device.vad import SpeechDetector
from hardware.sim.signals import to_int16, tone
from hardware.sim.sounds import NON_SPEECH, mix_at_snr, non_speech, speech
from protocol.entries import MIN_SPEECH_SECONDS, explains_interruption

GOALS = {"speech_recall": 0.95, "nonspeech_false": 0.02, "rtf": 0.1}
PHRASES = {
    "en": [
        "Recording was interrupted because the battery ran out.",
        "I stopped the camera to change the battery.",
        "The suspect ran towards the railway station.",
        "We moved inside because of the heavy rain.",
        "The witness gave her name and address.",
        "I am resuming the recording at the main gate.",
    ],
    "zh": [
        "录像因电量低中断，我正在更换电池。",
        "嫌疑人向火车站方向跑去。",
        "因为下大雨，我们转移到室内。",
        "证人提供了姓名和住址。",
        "我在大门口重新开始录像。",
        "设备故障，现在已经恢复。",
    ],
}
# (voice, words per minute, pitch 0-99): two speakers per language.
VOICES = {
    "en": [("en", 160, 50), ("en-us+f3", 185, 65)],
    "zh": [("cmn-latn-pinyin", 150, 45), ("cmn-latn-pinyin+f2", 175, 70)],
}
NOISES = [(colour, snr) for colour in ("white", "pink") for snr in (10, 0)]
PAD_SECONDS = 0.5


def speech_set(rate: int) -> list[tuple[str, np.ndarray]]:
    clips = []
    for language, phrases in PHRASES.items():
        for voice, wpm, pitch in VOICES[language]:
            for number, text in enumerate(phrases):
                spoken = speech(text, voice, rate, speed_wpm=wpm, pitch=pitch)
                name = f"{language}:{voice}:{number}"
                pad = np.zeros(round(PAD_SECONDS * rate), np.int16)
                clips.append((f"{name}:clean", np.concatenate([pad, spoken, pad])))
                seconds = len(spoken) / rate + 2 * PAD_SECONDS
                for colour, snr in NOISES:
                    noise = non_speech(f"noise_{colour}_6", seconds, rate)
                    clips.append((f"{name}:{colour}{snr}dB", mix_at_snr(spoken, noise, snr)))
    return clips


def non_speech_set(rate: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    clips = [(kind, non_speech(kind, seconds, rate)) for kind in NON_SPEECH]
    # The simulator's microphone background: a tone stepping 500-1200 Hz once a second.
    clips.append(("sim_stepped_tone", to_int16(tone(0, round(seconds * rate), rate))))
    return clips


def judge(clips: list[tuple[str, np.ndarray]], rate: int) -> tuple[list[tuple[str, float]], float]:
    """Each clip's speech seconds, and the detector's CPU seconds over them all."""
    results, cpu = [], 0.0
    for name, pcm in clips:
        started = time.process_time()
        detector = SpeechDetector(rate)
        detector.add(pcm)
        seconds = detector.speech_seconds
        cpu += time.process_time() - started
        results.append((name, seconds))
    return results, cpu


def silero_alone(clips: list[tuple[str, np.ndarray]], rate: int) -> list[str]:
    """The non-speech clips counted as speech without rule 3 (the change check)."""
    changing = device.vad._ChangeMeter.changing
    device.vad._ChangeMeter.changing = lambda self, window: True  # type: ignore[method-assign]
    try:
        results, _ = judge(clips, rate)
    finally:
        device.vad._ChangeMeter.changing = changing  # type: ignore[method-assign]
    return [name for name, seconds in results if explains_interruption(seconds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a non-speech clip")
    parser.add_argument("--rate", type=int, default=48_000, help="the microphone's rate")
    args = parser.parse_args(argv)

    made = time.perf_counter()
    speech_clips = speech_set(args.rate)
    other_clips = non_speech_set(args.rate, args.seconds)
    made = time.perf_counter() - made
    audio_seconds = sum(len(pcm) for _, pcm in speech_clips + other_clips) / args.rate

    speech_results, cpu_speech = judge(speech_clips, args.rate)
    other_results, cpu_other = judge(other_clips, args.rate)
    missed = [(name, s) for name, s in speech_results if not explains_interruption(s)]
    false = [(name, s) for name, s in other_results if explains_interruption(s)]
    for name, seconds in other_results:
        print(f"non-speech {name:28s} {seconds:5.2f} s", file=sys.stderr)
    for name, seconds in missed:
        print(f"missed speech {name} ({seconds:.2f} s)", file=sys.stderr)
    alone = silero_alone(other_clips, args.rate)
    worst = max(other_results, key=lambda item: item[1])
    rtf = (cpu_speech + cpu_other) / audio_seconds
    report = {
        "speech_recall": round(1 - len(missed) / len(speech_results), 4),
        "nonspeech_false": round(len(false) / len(other_results), 4),
        "rtf": round(rtf, 4),
        "goals": GOALS,
        "met": {
            "speech_recall": 1 - len(missed) / len(speech_results) >= GOALS["speech_recall"],
            "nonspeech_false": len(false) / len(other_results) <= GOALS["nonspeech_false"],
            "rtf": rtf <= GOALS["rtf"],
        },
        "threshold_seconds": MIN_SPEECH_SECONDS,
        "speech_clips": len(speech_results),
        "nonspeech_clips": len(other_results),
        "audio_seconds": round(audio_seconds, 1),
        "missed_speech": [name for name, _ in missed],
        "false_speech": [name for name, _ in false],
        "without_change_check": {"nonspeech_false": round(len(alone) / len(other_results), 4),
                                 "false_speech": alone},
        "most_speech_in_nonspeech": {"clip": worst[0], "seconds": worst[1]},
        "speech_seconds_median": float(np.median([s for _, s in speech_results])),
        "rate": args.rate,
        "set_made_seconds": round(made, 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
