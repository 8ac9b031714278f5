"""The simulated officer's voice: espeak-ng phrases made at install time, played by ``speak``.

``SimMicrophone.speak(seconds)`` mixes real speech into the microphone, so a
voice note's speech detector judges speech, not a signal made to pass it. The
phrases - short explanations of an interruption, in English and Chinese - are
spoken by espeak-ng when the project is installed, as the device's prompts are
(``make setup`` runs ``python -m hardware.sim.voices build [DIR]``), into
``DIR/<n>.wav`` at :data:`VOICE_RATE` with ``DIR/manifest.json``. A build is
skipped when the manifest already describes it. The default folder is
``$CUSTODY_SIM_VOICES`` if set, else ``<sys.prefix>/share/custody/sim-voices``.

:meth:`OfficerVoice.say` gives ``seconds`` of the phrases, one after another
with a short pause between, always from the first: the same ``speak`` says the
same words.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp()) / "voices"
>>> try:
...     OfficerVoice.load(folder)
... except FileNotFoundError as missing:
...     print(str(missing).replace(str(folder), "DIR"))
no officer voice in DIR (build it with: python -m hardware.sim.voices build DIR)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardware.espeak import (
    ESPEAK,
    MANIFEST,
    build_folder,
    built_already,
    espeak_version,
    with_build_key,
)
from hardware.sim.sounds import speech
from hardware.speaker import load_wav, save_wav

VOICE_RATE = 48_000  # the simulated microphone's default rate
VOICE_DIR_ENV = "CUSTODY_SIM_VOICES"
PAUSE_SECONDS = 0.3  # between two phrases
PEAK = 0.6  # of full scale: over the microphone's tone (0.25) without clipping
# (espeak-ng voice, words per minute, text): alternating languages and speakers.
PHRASES: tuple[tuple[str, int, str], ...] = (
    ("en", 160, "The recording stopped because the battery ran out. I changed it."),
    ("cmn-latn-pinyin", 150, "录像因电量低中断。我已经更换了电池。"),
    ("en-us+f3", 170, "I had to move the suspect inside because of the rain."),
    ("cmn-latn-pinyin+f2", 160, "因为下大雨，我们转移到室内继续执法。"),
    ("en", 150, "The camera was switched off while I gave first aid to the driver."),
    ("cmn-latn-pinyin", 160, "现场情况紧急，设备短暂中断，现在已经恢复。"),
)


class OfficerVoiceMissing(FileNotFoundError):
    """The phrase folder is missing, incomplete or outdated."""

    def __init__(self, directory: Path, problem: str) -> None:
        self.directory = directory
        super().__init__(
            f"{problem} (build it with: python -m hardware.sim.voices build {directory})")


def default_voice_dir() -> Path:
    """``$CUSTODY_SIM_VOICES``, else ``<sys.prefix>/share/custody/sim-voices``."""
    override = os.environ.get(VOICE_DIR_ENV)
    return Path(override) if override else Path(sys.prefix) / "share" / "custody" / "sim-voices"


def _manifest() -> dict:
    return with_build_key({"rate": VOICE_RATE, "peak": PEAK, "espeak_ng": espeak_version(),
                           "phrases": [list(phrase) for phrase in PHRASES]})


def build_voices(out_dir: str | os.PathLike[str] | None = None) -> bool:
    """Speak every phrase into ``out_dir`` (default :func:`default_voice_dir`).

    Returns False if the folder already held exactly this build. Otherwise it is
    built beside the old one and swapped in whole.
    """
    directory = Path(out_dir) if out_dir is not None else default_voice_dir()
    wanted = _manifest()
    if built_already(directory, wanted, (f"{n}.wav" for n in range(len(PHRASES)))):
        return False

    def speak_all(staging: Path) -> None:
        for number, (voice, wpm, text) in enumerate(PHRASES):
            spoken = speech(text, voice, VOICE_RATE, speed_wpm=wpm).astype(np.float64)
            if not len(spoken):
                raise RuntimeError(f"{ESPEAK} produced silence for {text!r}")
            spoken *= PEAK * 32767 / np.max(np.abs(spoken))
            save_wav(staging / f"{number}.wav", np.round(spoken).astype(np.int16), VOICE_RATE)

    build_folder(directory, wanted, speak_all)
    return True


@dataclass(frozen=True, eq=False)  # hashed by identity: one voice, one resampled copy
class OfficerVoice:
    """The built phrases, ready to be said at a rate."""

    phrases: tuple[np.ndarray, ...]  # float in [-1, 1] at VOICE_RATE
    rate: int = VOICE_RATE

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> OfficerVoice:
        folder = Path(directory) if directory is not None else default_voice_dir()
        if not (folder / MANIFEST).is_file():
            raise OfficerVoiceMissing(folder, f"no officer voice in {folder}")
        phrases = []
        for number in range(len(PHRASES)):
            path = folder / f"{number}.wav"
            if not path.is_file():
                raise OfficerVoiceMissing(folder, f"{path} is missing")
            wav = load_wav(path)
            if wav.rate != VOICE_RATE:
                raise OfficerVoiceMissing(folder, f"{path} is at {wav.rate} Hz, not {VOICE_RATE}")
            phrases.append(wav.samples.astype(np.float64) / 32768)
        return cls(tuple(phrases))

    def say(self, seconds: float, rate: int = VOICE_RATE) -> np.ndarray:
        """``seconds`` of speech (float in [-1, 1]) at ``rate``: the phrases in turn, cut."""
        if rate != self.rate:
            return _resampled(self, rate).say(seconds, rate)
        count = round(seconds * rate)
        pause = np.zeros(round(PAUSE_SECONDS * rate))
        pieces, total = [], 0
        while total < count:
            for phrase in self.phrases:
                pieces += [phrase, pause]
                total += len(phrase) + len(pause)
        out = np.concatenate(pieces)[:count]
        fade = min(round(0.01 * rate), len(out))  # no click where the cut falls in a word
        if fade:
            out[len(out) - fade :] *= np.linspace(1.0, 0.0, fade)
        return out


@functools.cache
def _resampled(voice: OfficerVoice, rate: int) -> OfficerVoice:
    import av  # only for microphones at another rate

    phrases = []
    for phrase in voice.phrases:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(phrase.astype(np.float32).reshape(1, -1),
                                           format="flt", layout="mono")
        frame.sample_rate = voice.rate
        out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        phrases.append(np.concatenate(out).astype(np.float64))
    return OfficerVoice(tuple(phrases), rate)


@functools.cache
def installed_voice() -> OfficerVoice:
    """The voice in the default folder, loaded once per process."""
    return OfficerVoice.load()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hardware.sim.voices build [DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m hardware.sim.voices",
                                     description="the simulated officer's espeak-ng phrases")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="speak every phrase into DIR")
    build.add_argument("directory", nargs="?", type=Path,
                       help=f"default: ${VOICE_DIR_ENV} or <prefix>/share/custody/sim-voices")
    args = parser.parse_args(argv)
    directory = args.directory if args.directory is not None else default_voice_dir()
    built = build_voices(directory)
    print(f"officer voice {'built' if built else 'up to date'}: {len(PHRASES)} phrases in "
          f"{directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
