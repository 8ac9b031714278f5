"""What the camera and microphone deliver: the data types every backend shares.

Times are microseconds on the capture clock (CLOCK_MONOTONIC domain on a Pi;
the simulators use the same clock), so audio and video line up without any
wall-clock involvement. Mapping to UTC happens later, in device/.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One encoded H.264 access unit (Annex B byte stream) from the camera."""

    data: bytes
    timestamp_us: int  # capture time of the frame, monotonic clock
    keyframe: bool
    index: int  # frame periods since the camera's epoch; a jump means lost frames


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """A block of mono PCM from the microphone."""

    samples: np.ndarray  # int16, shape (n,)
    timestamp_us: int  # capture time of samples[0], monotonic clock
    rate: int  # samples per second (48 000 by default)

    @property
    def end_us(self) -> int:
        """Capture time just after the last sample."""
        return self.timestamp_us + len(self.samples) * 1_000_000 // self.rate
