"""The real camera: Camera Module 3 through picamera2, encoded to H.264 on the Pi.

    >>> from hardware.camera import CameraConfig
    >>> with PiCamera(CameraConfig(device_id="BWC-0001")) as camera:   # doctest: +SKIP
    ...     camera.start()
    ...     frame = camera.read(timeout=2)

picamera2 is imported here, lazily, and nowhere else: it only exists on Raspberry Pi
OS (``apt install python3-picamera2``). ``H264Encoder`` is the V4L2 hardware encoder
on a Pi 4 / Zero 2 W and libx264 on a Pi 5 (picamera2 picks); ``encoder="software"``
forces libx264 anywhere.

The encoder thread calls our output for every frame. That thread must never wait -
blocking it drops frames - so the output only stamps the frame and puts it in a
queue (``put_nowait``). Frame indices come from the sensor timestamps: a step of
more than one frame period means the sensor or the encoder dropped frames.
"""

from __future__ import annotations

import fcntl
import time
from typing import Any

from hardware.camera import Camera, CameraConfig
from hardware.frames import VideoFrame
from hardware.overlay import OverlayText

# linux/v4l2-controls.h: V4L2_CID_CODEC_BASE (0x00990900) + 229.
_V4L2_CID_FORCE_KEY_FRAME = 0x009909E5


class PiCamera(Camera):
    """picamera2 backend. See the module docstring."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        epoch_us: int | None = None,
        wall_clock: Any = None,
    ) -> None:
        super().__init__(config, epoch_us=epoch_us)
        try:
            from picamera2 import MappedArray, Picamera2
            from picamera2.encoders import H264Encoder, LibavH264Encoder
            from picamera2.outputs import Output
        except ImportError as exc:  # pragma: no cover - only on a PC
            raise RuntimeError(
                "picamera2 is not available: install python3-picamera2 on Raspberry Pi OS "
                "(a venv needs --system-site-packages), or use the simulator (CUSTODY_HW=sim)"
            ) from exc
        self._mapped_array = MappedArray
        self._overlay = OverlayText(config.device_id, config.officer_id)
        if wall_clock is not None:
            self._overlay.wall_clock = wall_clock
        self._want_keyframe = False
        self._last_ts: int | None = None
        self._index = 0

        self._picam2 = Picamera2(config.camera_num)
        period_us = 1_000_000 // config.fps
        controls: dict[str, Any] = {"FrameDurationLimits": (period_us, period_us)}
        if "AfMode" in self._picam2.camera_controls:
            controls["AfMode"] = 2  # continuous autofocus (Camera Module 3)
        video_config = self._picam2.create_video_configuration(
            main={"size": (config.width, config.height), "format": "YUV420"},
            controls=controls,
        )
        self._picam2.configure(video_config)
        if config.overlay:
            self._picam2.pre_callback = self._draw_overlay

        if config.encoder == "software":
            encoder_class = LibavH264Encoder
        else:
            encoder_class = H264Encoder
            if config.encoder == "hardware" and H264Encoder is LibavH264Encoder:
                raise RuntimeError("this Pi has no hardware H.264 encoder (a Pi 5?)")
        self._software = encoder_class is LibavH264Encoder
        if self._software:
            encoder_class = _keyframe_capable(LibavH264Encoder, MappedArray)
        self._encoder = encoder_class(
            bitrate=config.bitrate, repeat=True, iperiod=config.keyframe_interval
        )
        if self._software:
            self._encoder.framerate = config.fps

        camera = self

        class _QueueOutput(Output):
            """Stamps each encoded frame and queues it; never blocks the encoder."""

            def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
                if not audio:
                    camera._on_frame(bytes(frame), bool(keyframe), timestamp)

        self._output = _QueueOutput()

    def _on_frame(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        # picamera2 gives microseconds since the first frame; its first frame's
        # sensor timestamp (CLOCK_MONOTONIC, us) puts it back on the capture clock.
        first = self._encoder.firsttimestamp or 0
        ts = int(timestamp or 0) + int(first)
        if self._last_ts is None:
            index = round((ts - self.epoch_us) * self.config.fps / 1_000_000)
            # Never go back: a restarted camera continues after the last frame.
            index = max(index, self._index)
        else:
            steps = round((ts - self._last_ts) * self.config.fps / 1_000_000)
            index = self._index + max(1, steps)
        self._last_ts, self._index = ts, index + 1
        self._deliver(VideoFrame(data=data, timestamp_us=ts, keyframe=keyframe, index=index))

    def _draw_overlay(self, request: Any) -> None:
        with self._mapped_array(request, "main") as mapped:
            # YUV420: the first `height` rows are the luma plane.
            self._overlay.draw(mapped.array[: self.config.height, : self.config.width])

    def _start(self) -> None:
        self._last_ts = None
        self._encoder.firsttimestamp = None
        self._picam2.start_recording(self._encoder, self._output)

    def _stop(self) -> None:
        self._picam2.stop_recording()

    def _close(self) -> None:
        self._picam2.close()

    def _request_keyframe(self) -> None:
        if self._software:
            self._encoder.want_keyframe = True
            return
        device = getattr(self._encoder, "vd", None)
        if device is None or device.closed:
            return
        import v4l2  # ships with picamera2

        control = v4l2.v4l2_control()
        control.id = getattr(v4l2, "V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME", _V4L2_CID_FORCE_KEY_FRAME)
        control.value = 1
        fcntl.ioctl(device, v4l2.VIDIOC_S_CTRL, control)

    def _overlay_changed(self) -> None:
        self._overlay.officer_id = self.officer_id


def _keyframe_capable(base: type, mapped_array: type) -> type:
    """libx264 through picamera2, able to make the next frame an IDR on request."""
    import av
    from av.video.frame import PictureType

    class KeyframeLibavEncoder(base):  # type: ignore[misc, valid-type]
        want_keyframe = False

        def _encode(self, stream: Any, request: Any) -> None:
            timestamp_us = self._timestamp(request)
            with mapped_array(request, stream) as mapped:
                picture = av.VideoFrame.from_ndarray(
                    mapped.array, format=self._av_input_format, width=self.width
                )
            picture.pts = timestamp_us
            if self.want_keyframe:
                picture.pict_type = PictureType.I
                self.want_keyframe = False
            for packet in self._stream.encode(picture):
                self._lasttimestamp = (time.monotonic_ns(), packet.pts)
                self.outputframe(
                    bytes(packet), packet.is_keyframe, timestamp=packet.pts, packet=packet
                )

    return KeyframeLibavEncoder
