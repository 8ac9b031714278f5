"""Simulated microphone: the stepped tone of :mod:`hardware.sim.signals`, paced in real time.

``speak`` mixes in the simulated officer's voice: espeak-ng phrases made at
install time (:mod:`hardware.sim.voices`), so a voice note holds real speech.

    >>> from hardware.microphone import MicrophoneConfig
    >>> with SimMicrophone(MicrophoneConfig()) as mic:
    ...     mic.start()
    ...     mic.speak(seconds=1.0)     # the officer talks (a voice note)
    ...     block = mic.read(timeout=1)

Sample n (counted from the epoch) is captured at ``epoch + n / rate``; a block is
delivered once its last sample has been "captured", as a real device would.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from hardware.camera import monotonic_us
from hardware.microphone import Microphone, MicrophoneConfig, SampleClock
from hardware.sim.signals import to_int16, tone
from hardware.sim.voices import installed_voice


class SimMicrophone(Microphone):
    """A paced test signal with a "speak" input. See the module docstring."""

    def __init__(
        self,
        config: MicrophoneConfig | None = None,
        *,
        epoch_us: int | None = None,
        realtime: bool = True,
        amplitude: float = 0.25,
    ) -> None:
        super().__init__(config)
        self.epoch_us = monotonic_us() if epoch_us is None else epoch_us
        self.realtime = realtime
        self.amplitude = amplitude
        self._speech: deque[np.ndarray] = deque()
        self._speech_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_sample: int | None = None
        self.spoken_samples = 0  # voice samples delivered so far

    @property
    def is_speaking(self) -> bool:
        with self._speech_lock:
            return bool(self._speech)

    def speak(self, seconds: float = 2.0, samples: np.ndarray | None = None) -> None:
        """Mix ``seconds`` of the officer's voice into the signal from the next block on.

        ``samples`` (float in [-1, 1] or int16, at the microphone's rate) replaces
        the installed espeak-ng phrases (:mod:`hardware.sim.voices`).
        """
        if samples is None:
            voice = installed_voice().say(seconds, self.rate)
        elif samples.dtype == np.int16:
            voice = samples.astype(np.float64) / 32768
        else:
            voice = samples.astype(np.float64)
        with self._speech_lock:
            self._speech.append(voice)

    def _new_clock(self) -> SampleClock:
        # The simulator knows its capture times exactly: nothing to settle.
        return SampleClock(self.rate, self.config.resync_us, settle_us=0)

    def sample_time_us(self, sample: int) -> int:
        """Capture time of absolute sample ``sample``."""
        return self.epoch_us + sample * 1_000_000 // self.rate

    def _take_speech(self, count: int) -> np.ndarray | None:
        with self._speech_lock:
            if not self._speech:
                return None
            out = np.zeros(count)
            filled = 0
            while self._speech and filled < count:
                head = self._speech[0]
                take = min(count - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._speech.popleft()
                else:
                    self._speech[0] = head[take:]
            self.spoken_samples += filled
            return out

    def _start(self) -> None:
        now_sample = -(-(monotonic_us() - self.epoch_us) * self.rate // 1_000_000)
        first = now_sample if self._next_sample is None else max(now_sample, self._next_sample)
        if not self.realtime and self._next_sample is not None:
            first = self._next_sample
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(max(0, first),), name="sim-microphone", daemon=True
        )
        self._thread.start()

    def _run(self, sample: int) -> None:
        block = self.config.block
        while not self._stop_event.is_set():
            if self.realtime:
                # Deliver when the block's last sample has been captured.
                wait_us = self.sample_time_us(sample + block) - monotonic_us()
                if wait_us > 0 and self._stop_event.wait(wait_us / 1_000_000):
                    break
            else:
                # Faster than real time, but only just ahead of the reader: never
                # lose blocks to a full queue, and let speak() act promptly.
                while self._queue.qsize() >= 2 and not self._stop_event.wait(0.001):
                    pass
            signal = tone(sample, block, self.rate, self.amplitude)
            speech = self._take_speech(block)
            if speech is not None:
                signal = signal + speech
            self._deliver(to_int16(signal), self.sample_time_us(sample))
            sample += block
        self._next_sample = sample

    def _stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()
