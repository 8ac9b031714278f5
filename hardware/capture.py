"""Camera + microphone into one playable MP4: the technician's quick check.

    >>> from hardware.factory import make_factory
    >>> with make_factory("sim") as hw:                          # doctest: +SKIP
    ...     report = capture(hw, seconds=3, out="check.mp4")

The H.264 access units are muxed as they are (no re-encoding), so the file holds
exactly what the camera produced; audio is FLAC, which keeps every sample (see
docs/hardware.md). Video starts at the first keyframe; its presentation times are
frame indices relative to that frame, so a lost frame is a gap, not a shifted
picture. Audio is placed by its capture timestamps on the same clock.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from hardware.camera import CameraConfig
from hardware.factory import HardwareFactory
from hardware.frames import AudioBlock, VideoFrame

# Audio this close to where it is expected is contiguous (timestamp rounding).
_SLACK_SAMPLES = 2


class Mp4Writer:
    """Muxes encoded video frames and PCM audio blocks into a fragmented MP4."""

    def __init__(self, path: str | os.PathLike[str], fps: int, audio_rate: int | None = 48_000):
        self.path = os.fspath(path)
        self.fps = fps
        self.audio_rate = audio_rate
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self.first_index: int | None = None
        self.last_index: int | None = None
        self.t0_us: int | None = None
        self.video_frames = 0
        self.skipped_before_keyframe = 0
        self.audio_samples = 0  # written (including silence filled into gaps)
        self.audio_gap_samples = 0
        self._pending: list[AudioBlock] = []
        self._audio_next = 0  # next audio sample position (relative to t0)

    # -- video ------------------------------------------------------------------------

    def add_video(self, frame: VideoFrame) -> None:
        if self._container is None:
            if not frame.keyframe:
                self.skipped_before_keyframe += 1
                return
            self._open(frame)
        assert self.first_index is not None
        if self.last_index is not None and frame.index <= self.last_index:
            raise ValueError(f"frame index went back: {frame.index} after {self.last_index}")
        import av

        packet = av.Packet(frame.data)
        packet.pts = packet.dts = frame.index - self.first_index
        packet.time_base = Fraction(1, self.fps)
        packet.stream = self._video
        packet.is_keyframe = frame.keyframe
        self._container.mux(packet)
        self.last_index = frame.index
        self.video_frames += 1
        self._flush_audio()

    def _open(self, keyframe: VideoFrame) -> None:
        import av

        # Let FFmpeg's H.264 parser read SPS/PPS out of the keyframe: the stream
        # made from it carries the right extradata (avcC) for the MP4 header.
        probe = av.open(io.BytesIO(keyframe.data), format="h264")
        try:
            self._container = av.open(
                self.path,
                "w",
                format="mp4",
                options={
                    # Fragments: a cut-off file still plays up to its last fragment.
                    "movflags": "frag_keyframe+empty_moov+default_base_moof",
                    "avoid_negative_ts": "make_non_negative",
                },
            )
            self._video = self._container.add_stream_from_template(probe.streams.video[0])
            self._video.time_base = Fraction(1, self.fps)
        finally:
            probe.close()
        if self.audio_rate:
            self._audio = self._container.add_stream("flac", rate=self.audio_rate)
            self._audio.layout = "mono"
            self._audio.format = "s16"
        self.first_index = keyframe.index
        self.t0_us = keyframe.timestamp_us

    # -- audio ------------------------------------------------------------------------

    def add_audio(self, block: AudioBlock) -> None:
        if not self.audio_rate:
            return
        if block.rate != self.audio_rate:
            raise ValueError(f"audio block at {block.rate} Hz, writer at {self.audio_rate} Hz")
        self._pending.append(block)
        self._flush_audio()

    def _video_end_sample(self) -> int:
        assert self.first_index is not None and self.last_index is not None
        frames = self.last_index - self.first_index + 1
        return frames * self.audio_rate // self.fps  # type: ignore[operator]

    def _flush_audio(self) -> None:
        """Write pending audio up to the end of the video written so far."""
        if self._container is None or self.last_index is None or self._audio is None:
            return
        assert self.t0_us is not None
        rate = self.audio_rate
        assert rate is not None
        end = self._video_end_sample()
        keep: list[AudioBlock] = []
        for block in self._pending:
            start = round((block.timestamp_us - self.t0_us) * rate / 1_000_000)
            samples = block.samples
            if abs(start - self._audio_next) <= _SLACK_SAMPLES:
                start = self._audio_next
            if start < self._audio_next:  # before t0, or overlapping what is written
                samples = samples[self._audio_next - start :]
                start = self._audio_next
            if len(samples) == 0:
                continue
            if start >= end:
                keep.append(AudioBlock(samples, self._time_of(start), rate))
                continue
            if start > self._audio_next:  # samples were lost: keep the timeline
                gap = start - self._audio_next
                self._encode_audio(np.zeros(gap, np.int16))
                self.audio_gap_samples += gap
            room = end - start
            self._encode_audio(samples[:room])
            if len(samples) > room:
                keep.append(AudioBlock(samples[room:], self._time_of(end), rate))
        self._pending = keep

    @property
    def frame_periods(self) -> int:
        """Frame periods from the first frame written to the last (0 before any)."""
        if self.first_index is None or self.last_index is None:
            return 0
        return self.last_index - self.first_index + 1

    @property
    def audio_reaches_end(self) -> bool:
        """True once audio has arrived up to the end of the video written so far."""
        return bool(self._pending)

    def _time_of(self, sample: int) -> int:
        assert self.t0_us is not None and self.audio_rate
        return self.t0_us + sample * 1_000_000 // self.audio_rate

    def _encode_audio(self, samples: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.audio_rate
        frame.pts = self._audio_next
        frame.time_base = Fraction(1, self.audio_rate)
        for packet in self._audio.encode(frame):
            self._container.mux(packet)
        self._audio_next += len(samples)
        self.audio_samples += len(samples)

    def close(self) -> None:
        """Finish the file. Audio past the last video frame is dropped."""
        if self._container is None:
            return
        self._flush_audio()
        if self._audio is not None:
            for packet in self._audio.encode(None):
                self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class CaptureReport:
    path: str
    backend: str
    video_frames: int
    first_index: int | None
    last_index: int | None
    dropped_frames: int  # gaps in the index inside the file
    audio_samples: int
    audio_gap_samples: int
    audio_rate: int | None
    fps: int

    @property
    def seconds(self) -> float:
        if self.first_index is None or self.last_index is None:
            return 0.0
        return (self.last_index - self.first_index + 1) / self.fps

    def summary(self) -> str:
        text = (
            f"{self.path}: {self.video_frames} frames ({self.seconds:.2f} s at {self.fps} fps, "
            f"index {self.first_index}..{self.last_index}, {self.dropped_frames} dropped)"
        )
        if self.audio_rate:
            text += (
                f", {self.audio_samples} audio samples at {self.audio_rate} Hz"
                f" ({self.audio_gap_samples} filled as silence)"
            )
        return text + f" [{self.backend}]"


def capture(
    factory: HardwareFactory,
    seconds: float,
    out: str | os.PathLike[str],
    *,
    camera_config: CameraConfig | None = None,
    microphone: str | None = None,
    audio: bool = True,
    timeout: float | None = None,
    mic_timeout: float = 5.0,
) -> CaptureReport:
    """Record ``seconds`` of camera (+ microphone) through ``factory`` into ``out``.

    ``microphone`` picks the microphone backend (None: the factory's default).
    """
    config = camera_config or factory.camera_config()
    wanted = max(1, round(seconds * config.fps))
    mic = factory.microphone(backend=microphone) if audio else None
    camera = factory.camera(config)
    writer = Mp4Writer(out, config.fps, mic.rate if mic is not None else None)
    # Generous: opening PortAudio alone can take two seconds.
    deadline_s = timeout if timeout is not None else seconds + 20.0
    give_up = time.monotonic() + deadline_s
    try:
        if mic is not None:
            mic.start()
            # PortAudio can take seconds to deliver its first block: start the camera
            # only once audio flows, so the file has sound from its first frame.
            first = mic.read(timeout=mic_timeout)
            if first is None:
                raise RuntimeError(f"the microphone delivered nothing in {mic_timeout:.0f} s")
            writer.add_audio(first)
        camera.start()
        while time.monotonic() < give_up:
            frame = camera.read(timeout=0.1)
            if mic is not None:
                _drain(mic, writer)
            if frame is None:
                if not camera.is_active:
                    break
                continue
            writer.add_video(frame)
            # Enough frame periods (lost frames count too: the file covers the time).
            if writer.frame_periods >= wanted:
                break
        camera.stop()
        if mic is not None:
            # Let the microphone deliver the audio under the last frames.
            settle = time.monotonic() + 1.0
            while not writer.audio_reaches_end and time.monotonic() < settle:
                block = mic.read(timeout=0.1)
                if block is not None:
                    writer.add_audio(block)
            _drain(mic, writer)
            mic.stop()
    finally:
        camera.close()
        if mic is not None:
            mic.close()
        writer.close()
    first, last = writer.first_index, writer.last_index
    dropped = writer.frame_periods - writer.video_frames
    return CaptureReport(
        path=writer.path,
        backend=factory.name,
        video_frames=writer.video_frames,
        first_index=first,
        last_index=last,
        dropped_frames=dropped,
        audio_samples=writer.audio_samples,
        audio_gap_samples=writer.audio_gap_samples,
        audio_rate=writer.audio_rate,
        fps=config.fps,
    )


def _drain(mic: Any, writer: Mp4Writer) -> None:
    while True:
        block = mic.read(timeout=0)
        if block is None:
            return
        writer.add_audio(block)
