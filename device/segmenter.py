"""Cutting a span's capture into segments: gapless cuts at keyframes, audio at the sample.

:class:`Segmenter` feeds one :class:`~device.muxer.SegmentMuxer` at a time and
starts the next at the first keyframe at or after ``segment_us``; audio is
split at the exact sample (:func:`split_audio_block`), so consecutive segments
abut and no sample is lost or repeated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from fractions import Fraction

from device.mp4boxes import FragmentInfo, Sink
from device.muxer import (
    DEFAULT_SEGMENT_US,
    MAX_FRAGMENT_US,
    SegmentMuxer,
    SegmentSummary,
    _sample_time_us,
)
from hardware.frames import AudioBlock, VideoFrame


def split_audio_block(
    block: AudioBlock, cut_us: int
) -> tuple[AudioBlock | None, AudioBlock | None]:
    """Split ``block`` at capture time ``cut_us``: (samples before it, samples at or after it).

    Sample i is captured at ``timestamp_us + i / rate``; the split is at the first
    sample whose time is >= ``cut_us``, so every sample lands in exactly one part.
    """
    delta_us = cut_us - block.timestamp_us
    first_after = -((-delta_us * block.rate) // 1_000_000)  # ceil, in integers
    if first_after <= 0:
        return None, block
    if first_after >= len(block.samples):
        return block, None
    before = AudioBlock(block.samples[:first_after], block.timestamp_us, block.rate)
    after = AudioBlock(
        block.samples[first_after:],
        _sample_time_us(block.timestamp_us, first_after, block.rate),
        block.rate,
    )
    return before, after


class Segmenter:
    """Cuts a span's capture into segments at keyframes, losing no frame and no sample.

    It rolls over at the first keyframe at or after ``segment_us`` from the
    current segment's first keyframe. Audio captured before that keyframe goes
    to the old segment, the rest to the new one; the block straddling the cut
    is split at the exact sample. The two streams may arrive out of step (audio
    in blocks, late or early), so a frame is held until audio has reached its
    capture time, and audio is held until a frame shows whether a cut comes
    first. If one stream stalls for more than ``max_wait_us``, the other goes
    on without it. Audio captured before the span's first keyframe goes into
    the first segment, whose origin then moves back to that audio.

    A microphone later than that (a starved audio thread, a USB hiccup) does
    not lose the sound of a segment's last moments: the cut waits for the
    audio to reach it — the segment goes on to a later keyframe — but no more
    than ``late_audio_wait_us`` past where it was due. Only audio later still,
    or from before the span's first segment, is dropped: each such stretch is
    counted in ``audio_samples_dropped`` and given to ``on_audio_dropped(first_us,
    end_us, samples)`` for the caller to declare (ADR 0064).

    ``open_sink(n)`` gives the sink for segment ``n`` (0, 1, ...);
    ``on_segment_end(n, summary)`` runs once segment ``n`` is finished, which is
    where the caller seals and closes that sink.

    >>> import io
    >>> sinks = []
    >>> def open_sink(n):
    ...     sinks.append(io.BytesIO())
    ...     return sinks[-1]
    >>> segmenter = Segmenter(open_sink, width=1280, height=720, fps=30, segment_us=60_000_000)
    >>> # for each captured item: segmenter.add_video(frame) / segmenter.add_audio(block)
    >>> segmenter.close()
    []
    """

    def __init__(
        self,
        open_sink: Callable[[int], Sink],
        *,
        width: int,
        height: int,
        fps: Fraction | int,
        audio_rate: int | None = 48_000,
        segment_us: int = DEFAULT_SEGMENT_US,
        max_wait_us: int = 1_000_000,
        on_fragment_end: Callable[[int, FragmentInfo], None] | None = None,
        on_segment_end: Callable[[int, SegmentSummary], None] | None = None,
        max_fragment_us: int = MAX_FRAGMENT_US,
        late_audio_wait_us: int = 10_000_000,
        on_audio_dropped: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if segment_us <= 0:
            raise ValueError("segment_us must be positive")
        self._open_sink = open_sink
        self._video = {"width": width, "height": height, "fps": fps}
        self._audio_rate = audio_rate
        self._segment_us = segment_us
        self._max_wait_us = max_wait_us
        self._on_fragment_end = on_fragment_end
        self._on_segment_end = on_segment_end
        self._max_fragment_us = max_fragment_us
        self._late_audio_wait_us = late_audio_wait_us
        self._on_audio_dropped = on_audio_dropped

        self.summaries: list[SegmentSummary] = []
        self.video_frames_dropped = 0  # non-keyframes before the span's first keyframe
        self.audio_samples_dropped = 0  # audio no open segment could take (on_audio_dropped)
        #: After :meth:`close`: audio held for a segment that never began (no keyframe
        #: came), for the caller to put elsewhere (an audio-only segment), not dropped.
        self.unplaced_audio: list[AudioBlock] = []
        self._muxer: SegmentMuxer | None = None
        self._dropped: tuple[int, int, int] | None = None  # (first_us, end_us, samples)
        self._segment_start_us = 0  # capture time of the current segment's first keyframe
        self._pending_video: deque[VideoFrame] = deque()
        self._pending_audio: deque[AudioBlock] = deque()
        self._latest_video_us: int | None = None
        self._audio_until_us: int | None = None  # capture time just after the newest sample
        self._closed = False

    def add_video(self, frame: VideoFrame) -> None:
        self._check_open()
        self._pending_video.append(frame)
        self._latest_video_us = frame.timestamp_us
        self._pump()

    def add_audio(self, block: AudioBlock) -> None:
        self._check_open()
        if self._audio_rate is None:
            raise ValueError("this segmenter was opened without audio")
        if len(block.samples) == 0:
            return
        self._pending_audio.append(block)
        self._audio_until_us = block.end_us
        self._pump()

    def close(self) -> list[SegmentSummary]:
        """Route everything still held, finish the last segment, return all summaries."""
        if self._closed:
            return self.summaries
        self._closed = True
        self._pump(final=True)
        if self._muxer is not None:
            self._route_audio_before(None)
            self._end_dropped()
            self._finish_segment()
        else:  # no keyframe came (a camera late to start): the caller places this audio
            self.unplaced_audio = list(self._pending_audio)
            self._pending_audio.clear()
        return self.summaries

    def _pump(self, final: bool = False) -> None:
        while self._pending_video:
            frame = self._pending_video[0]
            audio_caught_up = self._audio_rate is None or (
                self._audio_until_us is not None and self._audio_until_us >= frame.timestamp_us
            )
            assert self._latest_video_us is not None
            audio_stalled = self._latest_video_us - frame.timestamp_us >= self._max_wait_us
            if not (final or audio_caught_up or audio_stalled):
                break
            self._pending_video.popleft()
            self._take_video(frame)
        # A stalled camera must not hold the audio back forever either.
        if self._muxer is not None and self._audio_until_us is not None and not final:
            held_since_us = max(self._latest_video_us or 0, self._segment_start_us)
            if self._audio_until_us - held_since_us >= self._max_wait_us:
                self._route_audio_before(self._audio_until_us - self._max_wait_us)

    def _take_video(self, frame: VideoFrame) -> None:
        if self._muxer is None:
            if not frame.keyframe:
                self.video_frames_dropped += 1
                return
            origin_us = frame.timestamp_us
            if self._pending_audio:
                origin_us = min(origin_us, self._pending_audio[0].timestamp_us)
            self._start_segment(frame, origin_us)
        elif frame.keyframe and self._cut_due(frame.timestamp_us):
            self._route_audio_before(frame.timestamp_us)
            self._finish_segment()
            self._start_segment(frame, frame.timestamp_us)
        assert self._muxer is not None
        self._muxer.add_video(frame)
        self._route_audio_before(frame.timestamp_us)

    def _cut_due(self, keyframe_us: int) -> bool:
        """Whether to cut at this keyframe: the segment is long enough, and the audio
        from before it has come (a late microphone is waited for, but not forever)."""
        elapsed_us = keyframe_us - self._segment_start_us
        if elapsed_us < self._segment_us:
            return False
        heard_us = self._audio_until_us or 0
        return (self._audio_rate is None or heard_us >= keyframe_us
                or elapsed_us >= self._segment_us + self._late_audio_wait_us)

    def _start_segment(self, frame: VideoFrame, origin_us: int) -> None:
        number = len(self.summaries)
        on_fragment_end = None
        if self._on_fragment_end is not None:
            callback = self._on_fragment_end

            def on_fragment_end(fragment: FragmentInfo) -> None:
                callback(number, fragment)

        self._muxer = SegmentMuxer(
            self._open_sink(number),
            **self._video,
            audio_rate=self._audio_rate,
            origin_us=origin_us,
            on_fragment_end=on_fragment_end,
            max_fragment_us=self._max_fragment_us,
        )
        self._segment_start_us = frame.timestamp_us

    def _finish_segment(self) -> None:
        assert self._muxer is not None
        summary = self._muxer.close()
        self._muxer = None
        self.summaries.append(summary)
        if self._on_segment_end is not None:
            self._on_segment_end(len(self.summaries) - 1, summary)

    def _route_audio_before(self, cut_us: int | None) -> None:
        """Give the current segment every held sample captured before ``cut_us`` (None: all)."""
        assert self._muxer is not None and self._muxer.origin_us is not None
        origin_us = self._muxer.origin_us
        while self._pending_audio:
            block = self._pending_audio.popleft()
            if cut_us is not None:
                block, rest = split_audio_block(block, cut_us)
                if rest is not None:
                    self._pending_audio.appendleft(rest)
            if block is None:
                break
            # Older than this segment: the one it belonged to was finished (the
            # microphone later than late_audio_wait_us), or it is from before the
            # span's first segment. Dropped, and said.
            late, block = split_audio_block(block, origin_us)
            if late is not None:
                self._drop(late)
            if block is not None:
                self._end_dropped()
                self._muxer.add_audio(block)

    def _drop(self, late: AudioBlock) -> None:
        self.audio_samples_dropped += len(late.samples)
        if self._dropped is None:
            self._dropped = (late.timestamp_us, late.end_us, len(late.samples))
        else:
            first_us, _, samples = self._dropped
            self._dropped = (first_us, late.end_us, samples + len(late.samples))

    def _end_dropped(self) -> None:
        """A stretch of dropped audio has ended: tell the caller, once for the stretch."""
        if self._dropped is not None:
            dropped, self._dropped = self._dropped, None
            if self._on_audio_dropped is not None:
                self._on_audio_dropped(*dropped)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the segmenter is closed")
