"""The pre-record buffer: the moments before the officer pressed record (Art. 4).

In standby the camera and microphone keep running into this buffer, which
holds the last ``seconds`` of capture, always starting at a keyframe (so it
can begin a segment). At the press, :meth:`PreRecordBuffer.drain` hands the
whole buffer to the recording and the live capture continues right after it:
no frame or sample between the two is lost or repeated.

At the press the buffer is cut at its last keyframe (:func:`split_at_last_keyframe`):
what comes before it is the span's *pre-record part*, its own segment(s),
muxed on a thread of its own (``device/recorder/prerecord_mux.py``); the
last group of pictures begins the live segment, so the first frame after the
press reaches the muxer after at most one group of pictures, however full
the buffer was (ADR 0061).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from device.segmenter import split_audio_block
from hardware.frames import AudioBlock, VideoFrame


def coalesce(blocks: list[AudioBlock], max_samples: int = 48_000) -> list[AudioBlock]:
    """Join contiguous blocks into larger ones (up to ``max_samples``).

    At a press the whole buffer is muxed at once; a few large blocks encode
    far faster than thousands of 20 ms ones.
    """
    out: list[AudioBlock] = []
    run: list[AudioBlock] = []

    def flush() -> None:
        if run:
            out.append(AudioBlock(np.concatenate([b.samples for b in run]), run[0].timestamp_us,
                                  run[0].rate))
            run.clear()

    for block in blocks:
        if run and (abs(block.timestamp_us - run[-1].end_us) > 1 or block.rate != run[0].rate
                    or sum(len(b.samples) for b in run) + len(block.samples) > max_samples):
            flush()
        run.append(block)
    flush()
    return out


def split_at_last_keyframe(
    frames: list[VideoFrame], blocks: list[AudioBlock],
) -> tuple[tuple[list[VideoFrame], list[AudioBlock]], tuple[list[VideoFrame], list[AudioBlock]]]:
    """A drained buffer cut at its last keyframe: (the pre-record part, the live head).

    The part holds every frame before that keyframe and every sample captured
    before it (the block across the cut split at the exact sample); the head,
    the rest. Empty part: the buffer held one group of pictures or none.

    >>> key = VideoFrame(b"", 0, True, 0)
    >>> (part, _), (head, _) = split_at_last_keyframe([key, VideoFrame(b"", 1, False, 1)], [])
    >>> len(part), len(head)
    (0, 2)
    """
    last = max((i for i, f in enumerate(frames) if f.keyframe), default=0)
    if last == 0:
        return ([], []), (frames, blocks)
    cut_us = frames[last].timestamp_us
    before, after = [], []
    for block in blocks:
        head, rest = split_audio_block(block, cut_us)
        if head is not None:
            before.append(head)
        if rest is not None:
            after.append(rest)
    return (frames[:last], before), (frames[last:], after)


def segments_in(frames: list[VideoFrame], segment_us: int) -> int:
    """How many segments :class:`~device.segmenter.Segmenter` cuts ``frames`` into
    (they begin at a keyframe): a new one at the first keyframe at or after
    ``segment_us`` from the current one's first keyframe. Known before muxing,
    so the live segment's file can be named while the part is still muxed."""
    if not frames:
        return 0
    count, start_us = 1, frames[0].timestamp_us
    for frame in frames[1:]:
        if frame.keyframe and frame.timestamp_us - start_us >= segment_us:
            count, start_us = count + 1, frame.timestamp_us
    return count


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
        if self.span_us > 0 and self.keep_audio:
            # Kept even before the first keyframe arrives (audio comes first):
            # drain() trims it to the first frame.
            self._audio.append(block)
            if not self._video:
                while self._audio and block.end_us - self._audio[0].end_us > self.span_us:
                    self._audio.popleft()

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
        if not frames:
            return [], []
        start = frames[0].timestamp_us
        kept = []
        for block in blocks:
            if block.end_us <= start:
                continue
            _, after = split_audio_block(block, start)
            if after is not None:
                kept.append(after)
        return frames, coalesce(kept)

    def clear(self) -> None:
        self._video.clear()
        self._audio.clear()
