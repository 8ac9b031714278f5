"""The microphone interface: 48 kHz mono PCM blocks with sample-accurate capture times.

    >>> from hardware.factory import get_factory
    >>> with get_factory().microphone() as mic:
    ...     mic.start()
    ...     block = mic.read(timeout=1)   # a hardware.frames.AudioBlock

Timestamps are on the capture clock (CLOCK_MONOTONIC, microseconds) shared with
the camera. Within a run they advance by exactly ``len(samples) / rate``; they are
re-anchored to the clock only when the two disagree by more than
``MicrophoneConfig.resync_us`` for a while (an overflow lost samples, or the sound
card's crystal has drifted that far); every re-anchor is counted in ``resyncs``.
See :class:`SampleClock`.

Backends: :class:`SoundDeviceMicrophone` (PortAudio, the default) and
:class:`PyAudioMicrophone` (a fallback); the simulator is
:class:`hardware.sim.microphone.SimMicrophone`.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hardware.camera import monotonic_us
from hardware.frames import AudioBlock
from hardware.source import CaptureSource

if TYPE_CHECKING:
    from hardware.board import AudioSettings


@dataclass(frozen=True, slots=True)
class MicrophoneConfig:
    rate: int = 48_000
    block: int = 960  # samples per block: 20 ms at 48 kHz
    device: str | int | None = None  # PortAudio device name or index; None = default
    queue_blocks: int = 3000  # one minute of 20 ms blocks for a slow consumer
    resync_us: int = 50_000  # about what lip sync tolerates

    @classmethod
    def from_board(cls, settings: AudioSettings) -> MicrophoneConfig:
        return cls(rate=settings.rate, block=settings.block, device=settings.input_device)


class SampleClock:
    """Turns blocks of samples into sample-accurate capture times.

    ``push(samples, observed_us)`` is called once per block with an estimate of when
    the block's first sample was captured (callback time minus device latency). The
    estimates jitter - a callback can only be late, never early - so:

    * the anchor is the *earliest* estimate (less the samples before it) over the
      first ``settle_us`` of blocks, which are held back until then;
    * after that each block is stamped anchor + samples so far / rate, so blocks
      line up to the sample and callback jitter never leaks into the times;
    * the anchor moves (a *resync*) only if the estimates stay off, in the same
      direction, by more than ``tolerance_us`` for ``persist_us``: samples were lost
      without an overflow being reported, or the sound card's crystal has drifted
      that far. A burst of early or late callbacks - PulseAudio and USB audio
      deliver in bursts when they resize their buffers - changes nothing, and the
      move is by the smallest deviation seen, so jitter never leaks in.
    """

    def __init__(
        self,
        rate: int,
        tolerance_us: int = 50_000,
        *,
        settle_us: int = 200_000,
        persist_us: int = 500_000,
    ) -> None:
        self.rate = rate
        self.tolerance_us = tolerance_us
        self.settle_us = settle_us
        self.persist_us = persist_us
        self.resyncs = 0
        self._anchor_us: int | None = None
        self._samples = 0
        self._held: list[tuple[np.ndarray, int]] = []
        self._off_samples = 0  # samples since the estimates went (and stayed) off
        self._off_min_us = 0  # the smallest deviation in that stretch

    def _offset(self, samples: int) -> int:
        return samples * 1_000_000 // self.rate

    def break_continuity(self) -> None:
        """Samples were lost (an overflow): anchor afresh from the next block."""
        self._anchor_us = None
        self._samples = 0
        self._off_samples = 0

    def push(self, samples: np.ndarray, observed_us: int) -> list[tuple[np.ndarray, int]]:
        """Stamp a block. Returns the (samples, timestamp_us) pairs now ready, in order."""
        if self._anchor_us is None:
            self._held.append((samples, observed_us))
            held_samples = sum(len(b) for b, _ in self._held)
            if self._offset(held_samples) < self.settle_us and self.settle_us > 0:
                return []
            before, anchor = 0, None
            for block, seen in self._held:
                candidate = seen - self._offset(before)
                anchor = candidate if anchor is None else min(anchor, candidate)
                before += len(block)
            self._anchor_us, self._samples = anchor, 0
            ready, self._held = self._held, []
            return [(block, self._stamp(len(block))) for block, _ in ready]
        expected = self._anchor_us + self._offset(self._samples)
        deviation = observed_us - expected
        if abs(deviation) <= self.tolerance_us:
            self._off_samples = 0
        else:
            same_way = self._off_samples and (deviation > 0) == (self._off_min_us > 0)
            if not same_way:
                self._off_samples, self._off_min_us = 0, deviation
            elif abs(deviation) < abs(self._off_min_us):
                self._off_min_us = deviation
            self._off_samples += len(samples)
            if self._offset(self._off_samples) >= self.persist_us:
                self._resync(expected + self._off_min_us)
        return [(samples, self._stamp(len(samples)))]

    def _resync(self, anchor_us: int) -> None:
        self.resyncs += 1
        self._anchor_us, self._samples, self._off_samples = anchor_us, 0, 0

    def _stamp(self, count: int) -> int:
        assert self._anchor_us is not None
        stamp = self._anchor_us + self._offset(self._samples)
        self._samples += count
        return stamp


class Microphone(CaptureSource[AudioBlock]):
    """A source of :class:`AudioBlock`. Subclasses call :meth:`_deliver`."""

    _kind = "microphone"

    def __init__(self, config: MicrophoneConfig | None = None) -> None:
        self.config = config or MicrophoneConfig()
        super().__init__(self.config.queue_blocks)
        self.clock = self._new_clock()
        self.overflows = 0  # blocks lost: by the device or by a full queue
        # The loudest sample of the last block delivered (0..32768), for the console's
        # self-test: it reads the level without taking blocks from the recorder.
        self.peak = 0

    @property
    def resyncs(self) -> int:
        return self.clock.resyncs

    @property
    def rate(self) -> int:
        return self.config.rate

    def blocks(self, timeout: float = 1.0) -> Iterator[AudioBlock]:
        return self._items(timeout)

    def _new_clock(self) -> SampleClock:
        return SampleClock(self.config.rate, self.config.resync_us)

    def _deliver(self, samples: np.ndarray, observed_us: int) -> None:
        """Stamp and queue one block; never blocks the audio thread."""
        samples = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
        if samples.size:
            self.peak = int(np.abs(samples.astype(np.int32)).max())
        for block, ts in self.clock.push(samples, observed_us):
            try:
                self._queue.put_nowait(AudioBlock(samples=block, timestamp_us=ts, rate=self.rate))
            except queue.Full:
                self.overflows += 1
                self.clock.break_continuity()

    def _prepare(self) -> None:
        self.clock = self._new_clock()  # each run anchors its timestamps afresh


def _capture_time_us(now_us: int, adc_time: float, current_time: float, stream_s: float) -> int:
    """When the first sample of a callback's buffer was captured, on our clock.

    PortAudio reports both times on its own stream clock (wall time under ALSA);
    only their difference - how long ago the ADC took the sample - is carried over.
    It is believed only if it is plausible next to the stream's own input latency
    ``stream_s``: through PulseAudio's ALSA plugin PortAudio reports the plugin's
    whole buffer (over half a second) although the samples are tens of ms old.
    """
    latency = current_time - adc_time
    if not (adc_time > 0 and current_time > 0 and 0 <= latency <= max(0.1, 3 * stream_s)):
        latency = stream_s
    return now_us - int(latency * 1_000_000)


class SoundDeviceMicrophone(Microphone):
    """The I2S (or USB) microphone through PortAudio, with the sounddevice module.

    >>> mic = SoundDeviceMicrophone(MicrophoneConfig(device="pulse"))  # doctest: +SKIP
    """

    def __init__(self, config: MicrophoneConfig | None = None) -> None:
        super().__init__(config)
        self._stream: Any = None

    def _start(self) -> None:
        import sounddevice as sd  # loads PortAudio; only audio backends need it

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            now = monotonic_us()
            if status.input_overflow:
                self.overflows += 1
                self.clock.break_continuity()
            observed = _capture_time_us(
                now, time_info.inputBufferAdcTime, time_info.currentTime, latency
            )
            self._deliver(indata[:, 0].copy(), observed)

        latency = 0.0
        self._stream = sd.InputStream(
            samplerate=self.config.rate,
            blocksize=self.config.block,
            channels=1,
            dtype="int16",
            device=self.config.device,
            callback=callback,
        )
        latency = float(self._stream.latency)
        self._stream.start()

    def _stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class PyAudioMicrophone(Microphone):
    """The fallback backend, through PyAudio (``pip install 'custody[pyaudio]'``)."""

    def __init__(self, config: MicrophoneConfig | None = None) -> None:
        super().__init__(config)
        self._pa: Any = None
        self._stream: Any = None

    def _device_index(self) -> int | None:
        device = self.config.device
        if device is None or isinstance(device, int):
            return device
        for i in range(self._pa.get_device_count()):
            info = self._pa.get_device_info_by_index(i)
            if info.get("maxInputChannels", 0) > 0 and device in info.get("name", ""):
                return i
        raise ValueError(f"no PyAudio input device matching {device!r}")

    def _start(self) -> None:
        import pyaudio

        self._pa = pyaudio.PyAudio()

        def callback(data: bytes, frames: int, time_info: dict, status: int) -> tuple:
            now = monotonic_us()
            if status & pyaudio.paInputOverflow:
                self.overflows += 1
                self.clock.break_continuity()
            observed = _capture_time_us(
                now,
                time_info.get("input_buffer_adc_time", 0.0),
                time_info.get("current_time", 0.0),
                latency,
            )
            self._deliver(np.frombuffer(data, dtype=np.int16).copy(), observed)
            return (None, pyaudio.paContinue)

        latency = 0.0
        self._stream = self._pa.open(
            format=pyaudio.paInt16,
            channels=1,
            rate=self.config.rate,
            input=True,
            frames_per_buffer=self.config.block,
            input_device_index=self._device_index(),
            stream_callback=callback,
        )
        latency = float(self._stream.get_input_latency())
        self._stream.start_stream()

    def _stop(self) -> None:
        if self._stream is not None:
            self._stream.stop_stream()
            self._stream.close()
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None
