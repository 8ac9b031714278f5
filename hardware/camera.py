"""The camera interface: encoded H.264 access units with capture time and frame index.

Every backend (picamera2 on a Pi, the PyAV simulator on a PC) is a :class:`Camera`:

    >>> from hardware.factory import get_factory
    >>> with get_factory().camera(CameraConfig(width=640, height=360)) as camera:
    ...     camera.start()
    ...     frame = camera.read(timeout=2)      # a hardware.frames.VideoFrame
    ...     camera.request_keyframe()           # the next frame will be an IDR

Frames are handed over through a bounded queue that the capture side never waits
on: if the consumer falls behind, frames are dropped and counted, and the gap shows
as a jump in ``VideoFrame.index`` - exactly as a dropped sensor frame would.
"""

from __future__ import annotations

import queue
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from hardware.board import CameraSettings
from hardware.frames import VideoFrame
from hardware.source import CaptureSource


def monotonic_us() -> int:
    """Now on the capture clock (CLOCK_MONOTONIC), in microseconds."""
    return time.monotonic_ns() // 1000


_BOARD = CameraSettings()  # the one place the camera's defaults are written (board.py)


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """What to capture and how to encode it (defaults: a board file's ``[camera]``)."""

    width: int = _BOARD.width
    height: int = _BOARD.height
    fps: int = _BOARD.fps
    bitrate: int = _BOARD.bitrate
    keyframe_interval: int = _BOARD.keyframe_interval  # frames between IDRs
    overlay: bool = _BOARD.overlay  # burn in time, device id and officer id
    device_id: str = ""
    officer_id: str = ""
    encoder: str = _BOARD.encoder  # auto | hardware | software (real camera only)
    camera_num: int = _BOARD.camera_num
    queue_frames: int = 300  # frames buffered for a slow consumer before dropping

    def __post_init__(self) -> None:
        for name in ("width", "height", "fps", "bitrate", "keyframe_interval", "queue_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"camera {name} must be positive")
        if self.width % 2 or self.height % 2:
            raise ValueError("camera width and height must be even")

    @classmethod
    def from_board(cls, settings: CameraSettings, **overrides: Any) -> CameraConfig:
        """The board's camera settings, with any field overridden by keyword."""
        config = cls(
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            bitrate=settings.bitrate,
            keyframe_interval=settings.keyframe_interval,
            overlay=settings.overlay,
            encoder=settings.encoder,
            camera_num=settings.camera_num,
        )
        return replace(config, **overrides) if overrides else config

    def index_at(self, time_us: int, epoch_us: int) -> int:
        """Whole frame periods from ``epoch_us`` to ``time_us``."""
        return (time_us - epoch_us) * self.fps // 1_000_000

    def time_of(self, index: int, epoch_us: int) -> int:
        """Capture time of frame ``index`` of a camera whose epoch is ``epoch_us``."""
        return epoch_us + index * 1_000_000 // self.fps


class Camera(CaptureSource[VideoFrame]):
    """A source of encoded video frames. Subclasses feed :meth:`_deliver`.

    ``epoch_us`` anchors the frame index (frame periods since the epoch); by default
    it is the moment the camera object is created, so stopping and starting again
    continues the count and time without capture shows as a jump.
    """

    _kind = "camera"

    def __init__(self, config: CameraConfig, *, epoch_us: int | None = None) -> None:
        self.config = config
        self.epoch_us = monotonic_us() if epoch_us is None else epoch_us
        super().__init__(config.queue_frames)
        self._last_index: int | None = None
        self._dropped = 0
        self._overflowed = 0
        self._delivered = 0
        self._officer_id = config.officer_id

    # -- the public vocabulary (and start/stop/close/read from CaptureSource) ---

    @property
    def dropped_frames(self) -> int:
        """Frames lost so far: skipped by the sensor or encoder, or by a full queue."""
        return self._dropped

    @property
    def frames_delivered(self) -> int:
        return self._delivered

    @property
    def officer_id(self) -> str:
        return self._officer_id

    @officer_id.setter
    def officer_id(self, value: str) -> None:
        """Change the officer shown in the overlay (on assignment)."""
        self._officer_id = value
        self._overlay_changed()

    def request_keyframe(self) -> None:
        """Make the next frame an IDR (e.g. at the start of a segment)."""
        self._request_keyframe()

    def frames(self, timeout: float = 1.0) -> Iterator[VideoFrame]:
        """Iterate over frames until the camera stops (or ``timeout`` passes with none)."""
        return self._items(timeout)

    def __repr__(self) -> str:
        c = self.config
        state = "closed" if self._closed else ("active" if self._active else "idle")
        return f"<{type(self).__name__} {c.width}x{c.height}@{c.fps} {state}>"

    # -- for backends ----------------------------------------------------------

    def _deliver(self, frame: VideoFrame) -> None:
        """Hand a frame to the consumer without ever blocking the capture thread."""
        last = self._last_index
        if last is not None and frame.index > last + 1:
            self._dropped += frame.index - last - 1
        self._last_index = frame.index
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self._dropped += 1
            self._overflowed += 1
        else:
            self._delivered += 1

    def _prepare(self) -> None:
        # A gap between runs is a stop, not a loss: don't count it as dropped.
        self._last_index = None

    @abstractmethod
    def _request_keyframe(self) -> None: ...

    def _overlay_changed(self) -> None:
        return None  # backends without an overlay ignore the change
