"""The pre-record buffer: the moments before the officer pressed record (Art. 4).

In standby the camera and microphone keep running into this buffer, which
holds the last ``seconds`` of capture, always starting at a keyframe (so it
can begin a segment). At the press, :meth:`PreRecordBuffer.drain` hands the
whole buffer to the recording and the live capture continues right after it:
no frame or sample between the two is lost or repeated.
"""

from __future__ import annotations

from collections import deque

from device.muxer import split_audio_block
from hardware.frames import AudioBlock, VideoFrame


class PreRecordBuffer:
    """Last ``seconds`` of video (from a keyframe) and, if ``keep_audio``, audio.

    >>> buffer = PreRecordBuffer(seconds=30, keep_audio=True)
    >>> buffer.add_video(VideoFrame(b"\\x00\\x00\\x01\\x65", 0, True, 0))
    >>> frames, blocks = buffer.drain()
    >>> len(frames), len(blocks)
    (1, 0)
    """

    def __init__(self, seconds: float, keep_audio: bool):
        self.span_us = int(seconds * 1_000_000)
        self.keep_audio = keep_audio
        self._video: deque[VideoFrame] = deque()
        self._audio: deque[AudioBlock] = deque()

    @property
    def seconds(self) -> float:
        """How much video the buffer holds now."""
        if not self._video:
            return 0.0
        return (self._video[-1].timestamp_us - self._video[0].timestamp_us) / 1e6

    def add_video(self, frame: VideoFrame) -> None:
        if self.span_us <= 0:
            return
        if not self._video and not frame.keyframe:
            return  # a buffer must start at a keyframe
        self._video.append(frame)
        self._trim(frame.timestamp_us - self.span_us)

    def add_audio(self, block: AudioBlock) -> None:
        if self.span_us > 0 and self.keep_audio and self._video:
            self._audio.append(block)

    def _trim(self, keep_from_us: int) -> None:
        # Drop whole groups of pictures from the front while the rest still
        # covers the span: the buffer holds at least `seconds`, never less.
        while True:
            second_key = next((i for i, f in enumerate(self._video)
                               if i > 0 and f.keyframe), None)
            if second_key is None or self._video[second_key].timestamp_us > keep_from_us:
                break
            for _ in range(second_key):
                self._video.popleft()
        start = self._video[0].timestamp_us
        while self._audio and self._audio[0].end_us <= start:
            self._audio.popleft()

    def drain(self) -> tuple[list[VideoFrame], list[AudioBlock]]:
        """Everything buffered, oldest first; audio starts at the first frame."""
        frames, blocks = list(self._video), list(self._audio)
        self.clear()
        if frames and blocks:
            _, first = split_audio_block(blocks[0], frames[0].timestamp_us)
            blocks = ([first] if first is not None else []) + blocks[1:]
        return frames, blocks

    def clear(self) -> None:
        self._video.clear()
        self._audio.clear()
