"""The speaker: plays a prompt (a WAV file or samples), e.g. the voice-note prompt.

    >>> from hardware.factory import get_factory
    >>> with get_factory().speaker() as speaker:
    ...     speaker.play("prompt.wav")          # blocks until played
    ...     speaker.play(samples, rate=48000, wait=False)
    ...     speaker.is_active                    # True while playing
"""

from __future__ import annotations

import os
import threading
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hardware.board import AudioSettings


@dataclass(frozen=True, slots=True)
class Prompt:
    """Mono int16 samples ready to play."""

    samples: np.ndarray
    rate: int
    name: str = ""

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def load_wav(path: str | os.PathLike[str]) -> Prompt:
    """Read a 16-bit PCM WAV (mono, or the first channel of a multi-channel file)."""
    with wave.open(os.fspath(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels = wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        rate = wav.getframerate()
    samples = data.reshape(-1, channels)[:, 0].astype(np.int16)
    return Prompt(samples, rate, os.path.basename(os.fspath(path)))


def save_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int) -> None:
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def as_prompt(sound: str | os.PathLike[str] | np.ndarray | Prompt, rate: int | None) -> Prompt:
    if isinstance(sound, Prompt):
        return sound
    if isinstance(sound, np.ndarray):
        if rate is None:
            raise ValueError("playing raw samples needs their rate")
        if sound.dtype != np.int16:
            sound = np.clip(np.round(sound * 32767), -32768, 32767).astype(np.int16)
        return Prompt(sound.reshape(-1), rate, "samples")
    return load_wav(sound)


class Speaker(ABC):
    """Plays prompts, one at a time; a new prompt waits for the previous one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one prompt at a time
        self._playing = threading.Event()
        self._closed = False
        self.played: list[Prompt] = []  # every prompt played, in order

    @property
    def is_active(self) -> bool:
        """True while a prompt is playing."""
        return self._playing.is_set()

    def play(
        self,
        sound: str | os.PathLike[str] | np.ndarray | Prompt,
        rate: int | None = None,
        wait: bool = True,
    ) -> None:
        """Play a WAV path, a Prompt, or samples (int16, or float in [-1, 1]) at ``rate``."""
        if self._closed:
            raise RuntimeError("speaker is closed")
        prompt = as_prompt(sound, rate)
        if wait:
            self._play_locked(prompt)
        else:
            threading.Thread(target=self._play_locked, args=(prompt,), daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is playing. Returns False on timeout."""
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()
            return True
        return False

    def _play_locked(self, prompt: Prompt) -> None:
        with self._lock:
            self._playing.set()
            try:
                self._play(prompt)
                self.played.append(prompt)
            finally:
                self._playing.clear()

    def close(self) -> None:
        self.wait()
        self._closed = True

    def __enter__(self) -> Speaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _play(self, prompt: Prompt) -> None: ...


class SoundDeviceSpeaker(Speaker):
    """Plays through PortAudio (the I2S amplifier or the default output)."""

    def __init__(self, device: str | int | None = None) -> None:
        super().__init__()
        self.device = device

    @classmethod
    def from_board(cls, settings: AudioSettings) -> SoundDeviceSpeaker:
        return cls(settings.output_device)

    def _play(self, prompt: Prompt) -> None:
        import sounddevice as sd

        done = threading.Event()
        position = 0
        samples = prompt.samples

        def callback(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            nonlocal position
            chunk = samples[position : position + frames]
            outdata[: len(chunk), 0] = chunk
            outdata[len(chunk) :, 0] = 0
            position += len(chunk)
            if len(chunk) < frames:
                raise sd.CallbackStop

        stream = sd.OutputStream(
            samplerate=prompt.rate,
            channels=1,
            dtype="int16",
            device=self.device,
            callback=callback,
            finished_callback=done.set,
        )
        with stream:
            # Generous: the prompt's length plus the device's buffering.
            done.wait(prompt.seconds + 5.0)
