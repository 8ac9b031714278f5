"""espeak-ng, the one synthesiser: the device's spoken prompts and the simulated officer.

Both speak through :func:`espeak`, which runs espeak-ng into a WAV file and
returns its samples at espeak-ng's own rate (22 050 Hz); each caller converts
the rate its own way. :func:`espeak_version` goes into build manifests, so a
new espeak-ng rebuilds what was synthesised with the old one.

    >>> samples, rate = espeak(["Voice note saved."], voice="en", speed_wpm=150)
    >>> rate, samples.dtype.name
    (22050, 'int16')
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ESPEAK = "espeak-ng"
DEFAULT_PITCH = 50  # espeak-ng's own default (0-99)


def _missing() -> RuntimeError:
    return RuntimeError(f"{ESPEAK} is not installed (Debian: apt install espeak-ng)")


def espeak_version() -> str:
    """espeak-ng's version line, e.g. ``eSpeak NG text-to-speech: 1.51 ...``."""
    try:
        result = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise _missing() from None
    return result.stdout.split("  Data at:")[0].strip()


def espeak(arguments: Sequence[str], voice: str, speed_wpm: int,
           pitch: int = DEFAULT_PITCH) -> tuple[np.ndarray, int]:
    """espeak-ng ``voice`` speaking ``arguments`` (a text, or ``-m`` and SSML).

    Returns its samples (mono int16, untrimmed) and their rate. A failure or
    silence raises RuntimeError naming the voice and espeak-ng's message.
    """
    with tempfile.TemporaryDirectory(prefix="custody-espeak-") as scratch:
        wav_path = Path(scratch) / "speech.wav"
        try:
            done = subprocess.run([ESPEAK, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch),
                                   "-w", str(wav_path), *arguments],
                                  capture_output=True, check=False)
        except FileNotFoundError:
            raise _missing() from None
        if done.returncode != 0 or not wav_path.exists():
            raise RuntimeError(f"{ESPEAK} failed for voice {voice!r}: "
                               f"{done.stderr.decode(errors='replace').strip()}")
        with wave.open(str(wav_path), "rb") as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if len(samples) == 0:
        raise RuntimeError(f"{ESPEAK} produced no sound for voice {voice!r}")
    return samples.astype(np.int16), rate
