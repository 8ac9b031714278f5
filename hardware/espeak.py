"""espeak-ng, the one synthesiser: the device's spoken prompts and the simulated officer.

Both speak through :func:`espeak`, which runs espeak-ng into a WAV file and
returns its samples at espeak-ng's own rate (22 050 Hz); each caller converts
the rate its own way. :func:`espeak_version` goes into build manifests, so a
new espeak-ng rebuilds what was synthesised with the old one; what is built at
install time is built whole into a folder with :func:`build_folder`.

    >>> samples, rate = espeak(["Voice note saved."], voice="en", speed_wpm=150)
    >>> rate, samples.dtype.name
    (22050, 'int16')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

ESPEAK = "espeak-ng"
DEFAULT_PITCH = 50  # espeak-ng's own default (0-99)
MANIFEST = "manifest.json"  # of a built folder: what was built, and its build key


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


# -- folders of speech built at install time ----------------------------------------------


def with_build_key(spec: dict) -> dict:
    """``spec`` with its SHA-256 as ``build_key``: any change to it rebuilds the folder."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return {**spec, "build_key": key}


def built_already(directory: Path, wanted: dict, files: Iterable[str]) -> bool:
    """``directory`` holds the build ``wanted`` describes, with every one of ``files``."""
    try:
        current = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        mode = directory.stat().st_mode
    except (OSError, ValueError):
        return False
    # A folder an older build left 0700 is rebuilt: the service user could not read it.
    readable = mode & 0o755 == 0o755
    return readable and current.get("build_key") == wanted["build_key"] and all(
        (directory / name).is_file() for name in files)


def build_folder(directory: Path, wanted: dict, fill: Callable[[Path], None]) -> None:
    """``fill`` a sibling folder, write the manifest ``wanted``, then swap it in whole:
    a reader never sees a half-built folder, and a failed build leaves the old one."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=directory.parent))
    # mkdtemp makes it 0700: swapped in as is, only the builder (root, at install) could
    # read it, never the service user that speaks the prompts.
    staging.chmod(0o755)
    try:
        fill(staging)
        (staging / MANIFEST).write_text(json.dumps(wanted, ensure_ascii=False, indent=1),
                                        encoding="utf-8")
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.rename(directory, old / directory.name)
        os.rename(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
