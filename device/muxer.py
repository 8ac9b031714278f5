"""Muxing captured H.264 and PCM into one segment of fragmented MP4 (:class:`SegmentMuxer`).

Cutting a span into segments is :mod:`device.segmenter`; reading the boxes
FFmpeg wrote, :mod:`device.mp4boxes`.

A segment is one independently playable fragmented MP4 (H.264 video remuxed as
the camera encoded it, FLAC audio encoded here). Its bytes go, strictly in
order and without any seek, to a *sink*: a write-only binary stream supplied by
the caller (on the device, the encrypting and hashing sealer).

Fragments
---------
FFmpeg's mp4 muxer writes ``ftyp`` + an empty ``moov`` first
(``empty_moov``), then one ``moof`` + ``mdat`` pair per fragment, with sample
offsets relative to each ``moof`` (``default_base_moof``), so no byte ever has
to be rewritten. A fragment is cut at every video keyframe (``frag_keyframe``)
and, because the camera's keyframe interval may be longer than a second, also
whenever a track has gathered ``frag_duration`` of media. FFmpeg checks that
limit per track when a packet arrives and cuts *before* that packet, so a
fragment can overshoot the limit by up to one packet on each track. The
trigger is therefore set to ``max_fragment_us - 2 * max(video frame period,
FLAC block)``, which keeps every fragment, both tracks together, within
``max_fragment_us`` (1 s) as long as frames come at the nominal rate. With the
default 96 ms FLAC blocks that is about 0.8 s. Set the camera's keyframe
interval at or below :attr:`SegmentMuxer.fragment_trigger_us` (e.g. 24 frames at
30 fps): every fragment is then exactly one GOP and decodes on its own. A GOP of
exactly 1 s is the worst choice: each would be split into ~0.8 s + ~0.2 s.

Fragment signal
---------------
The muxer watches the top-level boxes of its own output and calls
``on_fragment_end(FragmentInfo)`` right after the last byte of each ``mdat``
has been handed to ``sink.write()``. At that moment everything the sink has
received is a decodable prefix of the segment, so the caller can close an
encryption chunk and fdatasync there. The sink's own ``flush()`` is never
called: a flush has other meanings for buffered writers, and a callback can
carry the fragment's byte range. The ``ftyp``/``moov`` header is not signalled
on its own; it is part of the bytes before the first signal. After the last
fragment, ``close()`` writes a small ``mfra`` index and returns.

Fragment contents
-----------------
FFmpeg interleaves the two tracks and decides alone when a fragment ends, so a
packet given to ``mux()`` may still be waiting in FFmpeg when a fragment is
signalled. What a fragment holds is therefore read from the bytes themselves:
the muxer parses the ``moov`` (each track's ``tkhd`` id, ``hdlr`` kind, ``mdhd``
timescale, ``mvex/trex`` defaults) and every ``moof`` (``mfhd``; per ``traf``:
``tfhd`` defaults, ``tfdt`` base decode time, each ``trun``'s sample count and
durations). Each :class:`FragmentInfo` then says how many frames and PCM
samples that fragment holds, and how many the segment holds up to its end.
Since FFmpeg neither drops nor reorders packets (no B-frames), the k-th video
sample in the file is the k-th frame given to :meth:`SegmentMuxer.add_video`,
and the n-th PCM sample is the n-th sample given to ``add_audio``: the muxer
maps the counts read from the bytes to the exact capture times it was given.
(FFmpeg starts each track's decode time at 0 in the file, at its first frame
or sample, not at the segment's origin: the decode times in ``FragmentInfo``
are the file's, in each track's own timescale.)

Timing
------
Every capture timestamp is in microseconds on the monotonic capture clock.
PTS 0 of a segment is its *origin*: by default the capture time of its first
frame, which must be a keyframe carrying SPS and PPS. Video runs on a 90 kHz
clock: exact for every common frame rate (including 30000/1001) and it keeps
the true capture times to 11 µs instead of snapping them to a nominal grid that
drifts from the real sensor rate. Audio runs on a 1/rate clock and is counted
in samples from the first sample's capture time, so no sample can be dropped
or repeated by timestamp rounding. The camera's frames must carry no B-frames
(decode order = capture order), which is how the Pi's encoder works.

Audio only
----------
Opened without a picture size (``width=None``), the muxer writes an
audio-only segment: FLAC alone, its origin the first sample, fragments cut by
duration only (every FLAC packet is a keyframe, so cutting at keyframes would
make one fragment, and one fsync, per packet). The recorder writes the
segments of a span without camera this way, and every voice note and
exemption memo: one writer, one sealer, one recovery for all media
(ADR 0048).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from device.mp4boxes import FragmentInfo, FragmentSpotter, Sink, ignore_fragment
from hardware.frames import AudioBlock, VideoFrame
from protocol.segment_crypto import MAX_CHUNK_PLAINTEXT

VIDEO_CLOCK_HZ = 90_000  # MPEG's 90 kHz: exact for 24, 25, 30, 60 and 30000/1001 fps
# A fragment is what a power cut may lose, so fragments are kept short: cut by
# duration between keyframes too (a recovered file is a prefix of a segment that
# starts at a keyframe, so it decodes whatever the fragment boundaries). h12b, ADR 0015.
MAX_FRAGMENT_US = 400_000
DEFAULT_SEGMENT_US = 60_000_000
# FFmpeg's own choice at 48 kHz (96 ms), the largest block the FLAC "subset" allows
# up to 48 kHz; bigger blocks compress slightly better and cost fewer packets.
DEFAULT_FLAC_BLOCK_SAMPLES = 4608
# Jitter allowance on top of the nominal frame period when sizing fragments.
_FRAME_JITTER_US = 5_000

_NAL_SPS, _NAL_PPS = 7, 8
_ANNEX_B_START = (b"\x00\x00\x01", b"\x00\x00\x00\x01")
_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What went into one segment, for the ``segment`` entry and for checks."""

    origin_us: int | None  # capture time of PTS 0
    frames: int
    first_frame_timestamp_us: int | None
    last_frame_timestamp_us: int | None
    first_frame_index: int | None
    last_frame_index: int | None
    audio_samples: int
    first_sample_timestamp_us: int | None
    last_sample_timestamp_us: int | None
    # Largest gap between a block's capture time and where the sample count puts
    # it: a few ms of clock drift is normal; more means the microphone lost samples.
    audio_timing_error_us: int
    bytes_written: int
    fragments: int


def _ticks(duration_us: int, clock_hz: int) -> int:
    """Round a duration in µs to the nearest tick of ``clock_hz`` (integers only)."""
    return (duration_us * clock_hz + 500_000) // 1_000_000


def _sample_time_us(block_timestamp_us: int, sample_index: int, rate: int) -> int:
    """Capture time of a block's ``sample_index``-th sample, rounded to the µs."""
    return block_timestamp_us + (2 * sample_index * 1_000_000 + rate) // (2 * rate)


def _nal_unit_types(access_unit: bytes) -> set[int]:
    """The NAL unit types in an Annex B access unit."""
    types: set[int] = set()
    start = access_unit.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(access_unit):
        types.add(access_unit[start + 3] & 0x1F)
        start = access_unit.find(b"\x00\x00\x01", start + 3)
    return types


def fragment_trigger_us(
    fps: Fraction | None, audio_rate: int | None, flac_block_samples: int, max_fragment_us: int
) -> int:
    """The ``frag_duration`` to give FFmpeg so no fragment exceeds ``max_fragment_us``.

    Either track may trigger a cut and the other may then overshoot by one of its
    packets, and a track's first packet may start up to one packet after the cut
    before it: two packets of the longer kind bound the excess.
    """
    block_us = math.ceil(flac_block_samples * 1_000_000 / audio_rate) if audio_rate else 0
    if not fps:  # audio only: the FLAC block, with the same jitter allowance, is the packet
        block_us += _FRAME_JITTER_US
        return max(max_fragment_us - 2 * block_us, block_us)
    frame_us = math.ceil(1_000_000 / fps) + _FRAME_JITTER_US
    return max(max_fragment_us - 2 * max(frame_us, block_us), frame_us)


def split_audio(block: AudioBlock, samples: int) -> tuple[AudioBlock, AudioBlock | None]:
    """``block``'s first ``samples`` samples, and the rest (None if none) with its capture time.

    >>> head, rest = split_audio(AudioBlock(np.zeros(960, np.int16), 1_000_000, 48_000), 480)
    >>> len(head.samples), rest.timestamp_us
    (480, 1010000)
    """
    if samples >= len(block.samples):
        return block, None
    samples = max(0, samples)
    return (AudioBlock(block.samples[:samples], block.timestamp_us, block.rate),
            AudioBlock(block.samples[samples:],
                       _sample_time_us(block.timestamp_us, samples, block.rate), block.rate))


class SegmentMuxer:
    """Writes one segment: camera H.264 access units plus PCM, as fragmented MP4.

    Video is remuxed untouched; audio is encoded to FLAC (lossless, and its
    frames are independent, so a segment cut loses nothing). The first frame
    must be a keyframe carrying SPS and PPS. Not thread-safe: feed it from one
    thread. ``on_fragment_end`` runs inside ``add_*``/``close`` calls and must
    not call back into the muxer.

    >>> import io
    >>> sink = io.BytesIO()
    >>> muxer = SegmentMuxer(sink, width=1280, height=720, fps=30,
    ...                      on_fragment_end=lambda fragment: None)
    >>> # for each captured item: muxer.add_video(frame) / muxer.add_audio(block)
    >>> muxer.close().frames
    0

    Audio only (a voice note, or a span without camera): no picture size.

    >>> muxer = SegmentMuxer(io.BytesIO(), audio_rate=48_000)
    >>> muxer.add_audio(AudioBlock(np.zeros(48_000, np.int16), 5_000_000, 48_000))
    >>> summary = muxer.close()
    >>> summary.audio_samples, summary.origin_us, summary.fragments
    (48000, 5000000, 4)
    """

    def __init__(
        self,
        sink: Sink,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: Fraction | int | None = None,
        audio_rate: int | None = 48_000,
        audio_channels: int = 1,
        origin_us: int | None = None,
        on_fragment_end: Callable[[FragmentInfo], None] | None = None,
        max_fragment_us: int = MAX_FRAGMENT_US,
        flac_block_samples: int = DEFAULT_FLAC_BLOCK_SAMPLES,
    ) -> None:
        """Open a segment.

        ``origin_us`` is the capture time that becomes PTS 0; leave it None to use
        the first frame's. Give an earlier one to keep audio captured just before
        the first keyframe (the first segment of a span). ``audio_rate=None``
        makes a video-only segment; no ``width`` (nor height, fps), an audio-only one.
        """
        self._video = width is not None
        if self._video:
            if height is None or fps is None or width <= 0 or height <= 0 or fps <= 0:
                raise ValueError("width, height and fps must be positive")
        elif height is not None or fps is not None:
            raise ValueError("an audio-only segment has no height or fps: give width too")
        elif audio_rate is None:
            raise ValueError("a segment needs video or audio")
        self._fps = Fraction(fps) if fps is not None else None
        if audio_rate is not None and audio_rate <= 0:
            raise ValueError("audio_rate must be positive")
        if audio_channels not in _LAYOUTS:
            raise ValueError(f"audio_channels must be one of {sorted(_LAYOUTS)}")
        self._audio_rate = audio_rate
        self._audio_channels = audio_channels
        self._origin_us = origin_us
        self._on_fragment_end = on_fragment_end
        self._frame_ticks = max(1, round(VIDEO_CLOCK_HZ / self._fps)) if self._fps else 0
        #: FFmpeg's ``frag_duration``; a keyframe interval at or below it gives one
        #: GOP per fragment.
        self.fragment_trigger_us = fragment_trigger_us(
            self._fps, audio_rate, flac_block_samples, max_fragment_us
        )

        # Capture times of what was given to FFmpeg but not yet counted in a signalled
        # fragment, in order: the counts read from the bytes pick them off the front.
        self._uncounted_frame_us: deque[int] = deque()
        self._uncounted_blocks: deque[tuple[int, int, int]] = deque()  # number of its
        # first sample in the segment, capture time of that sample, samples
        self._first_given_frame_us: int | None = None
        self._last_counted_frame_us: int | None = None
        self._last_counted_sample_us: int | None = None

        self._spotter = FragmentSpotter(sink, self._fragment_ended, audio_rate)
        self._container = av.open(
            self._spotter,
            mode="w",
            format="mp4",
            # FFmpeg hands its output over in writes of this size (and a shorter one
            # at each fragment end): one encryption chunk each, which the sealer
            # seals straight from the bytes given instead of assembling chunks.
            buffer_size=MAX_CHUNK_PLAINTEXT,
            container_options={
                # Audio alone is cut by duration only: every FLAC packet is a keyframe.
                "movflags": "empty_moov+default_base_moof"
                + ("+frag_keyframe" if self._video else ""),
                "frag_duration": str(self.fragment_trigger_us),
                # Never triggered here (no timestamp precedes the origin); if it were,
                # both streams would shift together and stay non-negative.
                "avoid_negative_ts": "make_non_negative",
                # If the microphone stalls, video must not wait in FFmpeg's
                # interleaving queue longer than a fragment.
                "max_interleave_delta": str(max_fragment_us),
                # FFmpeg 8's mp4 muxer already empties its AVIO buffer at each fragment
                # end; this keeps a fragment from waiting there on any other version.
                "flush_packets": "1",
            },
        )
        # A stream without a codec context: packets pass through untouched. PyAV takes
        # SPS/PPS from the first packet (extract_extradata) before writing the header.
        self._video_stream = None
        if self._video:
            self._video_stream = self._container.add_mux_stream(
                "h264", rate=self._fps, width=width, height=height
            )
            self._video_stream.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        self._audio_stream = None
        if audio_rate is not None:
            self._audio_stream = self._container.add_stream(
                "flac", rate=audio_rate, options={"frame_size": str(flac_block_samples)}
            )
            self._audio_stream.codec_context.layout = _LAYOUTS[audio_channels]
            self._audio_stream.codec_context.format = "s16"
            self._audio_stream.codec_context.time_base = Fraction(1, audio_rate)

        self._closed = False
        self._summary: SegmentSummary | None = None
        self._early_audio: deque[AudioBlock] = deque()  # audio given before the first frame
        self._last_video_pts = -1
        self._frames = 0
        self._first_frame: VideoFrame | None = None
        self._last_frame: VideoFrame | None = None
        self._audio_samples = 0  # samples given to the encoder
        self._audio_pts0 = 0
        self._first_sample_us: int | None = None
        self._last_sample_us: int | None = None
        self._audio_timing_error_us = 0

    @property
    def origin_us(self) -> int | None:
        """Capture time of PTS 0 (None until known)."""
        return self._origin_us

    @property
    def audio_samples(self) -> int:
        """PCM samples given so far (per channel)."""
        return self._audio_samples + sum(len(b.samples) for b in self._early_audio)

    def add_video(self, frame: VideoFrame) -> None:
        """Add one encoded access unit (Annex B) in capture order."""
        self._check_open()
        if self._video_stream is None:
            raise ValueError("this segment was opened without video")
        if not frame.data.startswith(_ANNEX_B_START):
            raise ValueError("video frame is not an Annex B H.264 access unit")
        if self._frames == 0:
            if not frame.keyframe:
                raise ValueError(
                    f"a segment must start with a keyframe; frame {frame.index} is not one"
                )
            if not {_NAL_SPS, _NAL_PPS} <= _nal_unit_types(frame.data):
                raise ValueError(
                    f"the first keyframe (frame {frame.index}) carries no SPS/PPS; "
                    "the camera encoder must repeat them at every keyframe"
                )
            if self._origin_us is None:
                self._origin_us = frame.timestamp_us
        if frame.timestamp_us < self._origin_us:
            raise ValueError(
                f"frame {frame.index} was captured before the segment origin "
                f"({frame.timestamp_us} < {self._origin_us} µs)"
            )
        pts = _ticks(frame.timestamp_us - self._origin_us, VIDEO_CLOCK_HZ)
        if pts <= self._last_video_pts:
            raise ValueError(
                f"frame {frame.index} does not come after the previous frame in capture time"
            )
        packet = av.Packet(frame.data)
        packet.stream = self._video_stream
        # Set the packet's own time base; the stream's may be rewritten by the muxer.
        packet.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        packet.pts = packet.dts = pts
        packet.duration = self._frame_ticks
        packet.is_keyframe = frame.keyframe
        # Noted before mux(): the fragment it completes may already hold this frame.
        self._uncounted_frame_us.append(frame.timestamp_us)
        if self._first_given_frame_us is None:
            self._first_given_frame_us = frame.timestamp_us
        self._container.mux(packet)

        self._last_video_pts = pts
        self._frames += 1
        if self._first_frame is None:
            self._first_frame = frame
        self._last_frame = frame
        while self._early_audio:
            self._encode_audio(self._early_audio.popleft())

    def add_audio(self, block: AudioBlock) -> None:
        """Add PCM captured after everything given before (int16, mono: shape (n,))."""
        self._check_open()
        if self._audio_stream is None:
            raise ValueError("this segment was opened without audio")
        if block.rate != self._audio_rate:
            raise ValueError(f"audio block at {block.rate} Hz, segment at {self._audio_rate} Hz")
        if block.samples.dtype != np.int16:
            raise ValueError(f"audio samples must be int16, not {block.samples.dtype}")
        expected_ndim = 1 if self._audio_channels == 1 else 2
        if block.samples.ndim != expected_ndim or (
            expected_ndim == 2 and block.samples.shape[1] != self._audio_channels
        ):
            raise ValueError(f"audio samples of shape {block.samples.shape} do not fit "
                             f"{self._audio_channels} channel(s)")
        if len(block.samples) == 0:
            return
        if self._video and self._frames == 0:
            # The header (and so the audio encoder's first packet) waits for the
            # first keyframe's SPS/PPS; keep the PCM until then.
            self._early_audio.append(block)
        else:
            self._encode_audio(block)

    def _encode_audio(self, block: AudioBlock) -> None:
        assert self._audio_stream is not None and self._audio_rate is not None
        if self._origin_us is None:  # audio only: PTS 0 is the first sample
            self._origin_us = block.timestamp_us
        if block.timestamp_us < self._origin_us:
            raise ValueError(
                f"audio captured before the segment origin ({block.timestamp_us} < "
                f"{self._origin_us} µs); split the block at the origin first"
            )
        rate = self._audio_rate
        if self._first_sample_us is None:
            self._first_sample_us = block.timestamp_us
            self._audio_pts0 = _ticks(block.timestamp_us - self._origin_us, rate)
        else:
            counted_us = _sample_time_us(self._first_sample_us, self._audio_samples, rate)
            self._audio_timing_error_us = max(
                self._audio_timing_error_us, abs(block.timestamp_us - counted_us)
            )
        pcm = np.ascontiguousarray(block.samples).reshape(1, -1)  # s16 is packed
        frame = av.AudioFrame.from_ndarray(
            pcm, format="s16", layout=_LAYOUTS[self._audio_channels]
        )
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        # Sample-counted PTS: contiguous by construction, whatever the block jitter.
        frame.pts = self._audio_pts0 + self._audio_samples
        self._uncounted_blocks.append((self._audio_samples, block.timestamp_us,
                                       len(block.samples)))
        for packet in self._audio_stream.encode(frame):
            self._container.mux(packet)
        self._audio_samples += len(block.samples)
        self._last_sample_us = _sample_time_us(block.timestamp_us, len(block.samples) - 1, rate)

    def close(self) -> SegmentSummary:
        """Finish the segment (last fragment + mfra index) and describe it.

        Calling it again returns the same summary. The sink is left open.
        """
        if self._summary is not None:
            return self._summary
        self._closed = True
        unwritten = sum(len(block.samples) for block in self._early_audio)
        try:
            if self._audio_stream is not None and self._audio_samples:
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
            # The spotter calls back into this muxer: break that cycle, or each
            # closed segment's PyAV state (~7 MiB at 720p) waits for the cyclic GC.
            self._spotter._on_fragment_end = ignore_fragment
        if unwritten:
            raise ValueError(f"segment closed without any video: {unwritten} audio "
                             "samples could not be written")
        first, last = self._first_frame, self._last_frame
        self._summary = SegmentSummary(
            origin_us=self._origin_us,
            frames=self._frames,
            first_frame_timestamp_us=first.timestamp_us if first else None,
            last_frame_timestamp_us=last.timestamp_us if last else None,
            first_frame_index=first.index if first else None,
            last_frame_index=last.index if last else None,
            audio_samples=self._audio_samples,
            first_sample_timestamp_us=self._first_sample_us,
            last_sample_timestamp_us=self._last_sample_us,
            audio_timing_error_us=self._audio_timing_error_us,
            bytes_written=self._spotter.bytes_written,
            fragments=self._spotter.fragments,
        )
        return self._summary

    def __enter__(self) -> SegmentMuxer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # On an error, still finish what was written: it stays a playable prefix.
        if self._summary is None:
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the segment is closed")

    def _fragment_ended(self, fragment: FragmentInfo) -> None:
        fragment = self._with_capture_times(fragment)
        if self._on_fragment_end is not None:
            self._on_fragment_end(fragment)

    def _with_capture_times(self, fragment: FragmentInfo) -> FragmentInfo:
        """Add the capture times of the frames and samples the fragment's moof counts."""
        for _ in range(fragment.video_frames):
            if not self._uncounted_frame_us:
                raise ValueError(f"fragment {fragment.index} holds more frames than were given")
            self._last_counted_frame_us = self._uncounted_frame_us.popleft()
        total_samples = fragment.total_audio_samples
        if fragment.audio_samples:
            assert self._audio_rate is not None
            last = total_samples - 1  # number of the last sample in the fragment
            blocks = self._uncounted_blocks
            while blocks and blocks[0][0] + blocks[0][2] <= last:
                blocks.popleft()  # wholly in this fragment or before: its times are done
            if not blocks or blocks[0][0] > last:
                raise ValueError(f"fragment {fragment.index} holds more audio than was given")
            first_number, first_us, _ = blocks[0]
            self._last_counted_sample_us = _sample_time_us(first_us, last - first_number,
                                                           self._audio_rate)
        return dataclasses.replace(
            fragment,
            first_frame_us=self._first_given_frame_us if fragment.total_video_frames else None,
            last_frame_us=self._last_counted_frame_us,
            first_sample_us=self._first_sample_us if total_samples else None,
            last_sample_us=self._last_counted_sample_us,
        )
