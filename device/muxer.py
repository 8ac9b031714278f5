"""Muxing captured H.264 and PCM into segments of fragmented MP4, and cutting segments.

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
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

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


def _ignore_fragment(fragment: FragmentInfo) -> None:
    return None


class Sink(Protocol):
    """What the muxer writes to: only ``write`` is ever called (never seek/tell/flush)."""

    def write(self, data: bytes, /) -> int | None: ...


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    """One fragment (``moof`` + ``mdat``) completely handed to the sink, and what it holds.

    The counts are read from the fragment's ``moof``; the capture times are
    those the muxer was given for the frames and samples counted. ``total_*``
    and ``first_*``/``last_*`` describe the whole segment up to ``end_offset``:
    everything durable once the caller has made these bytes durable.

    >>> info = FragmentInfo(0, 1209, 75007, video_frames=13, total_video_frames=13)
    >>> info.total_video_frames, info.first_frame_us is None
    (13, True)
    """

    index: int  # 0 for the segment's first fragment
    start_offset: int  # byte offset of its moof within the segment
    end_offset: int  # byte offset just after its mdat: all bytes before it are in the sink
    # This fragment alone (0 / None: the track has nothing in it):
    sequence_number: int = 0  # its mfhd sequence number (1 for the first)
    video_frames: int = 0
    audio_samples: int = 0  # PCM samples per channel (sum of its FLAC frames' durations)
    # Decode time of its first and last frame (start of the sample), in the file's video
    # track time (VIDEO_CLOCK_HZ ticks, 0 at the segment's first frame).
    video_decode_first: int | None = None
    video_decode_last: int | None = None
    # Decode time of its first and last PCM sample, in samples from the segment's first one.
    audio_decode_first: int | None = None
    audio_decode_last: int | None = None
    # The segment up to end_offset (this fragment and every one before it):
    total_video_frames: int = 0
    total_audio_samples: int = 0
    first_frame_us: int | None = None  # capture time of the segment's first frame
    last_frame_us: int | None = None  # capture time of the last frame up to end_offset
    first_sample_us: int | None = None  # capture time of the segment's first PCM sample
    last_sample_us: int | None = None  # capture time of the last PCM sample up to end_offset


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
    fps: Fraction, audio_rate: int | None, flac_block_samples: int, max_fragment_us: int
) -> int:
    """The ``frag_duration`` to give FFmpeg so no fragment exceeds ``max_fragment_us``.

    Either track may trigger a cut and the other may then overshoot by one of its
    packets, and a track's first packet may start up to one packet after the cut
    before it: two packets of the longer kind bound the excess.
    """
    frame_us = math.ceil(1_000_000 / fps) + _FRAME_JITTER_US
    block_us = math.ceil(flac_block_samples * 1_000_000 / audio_rate) if audio_rate else 0
    return max(max_fragment_us - 2 * max(frame_us, block_us), frame_us)


# --- reading what FFmpeg wrote: the few MP4 boxes that say what a fragment holds ---------

_MAX_PARSED_BOX = 16 * 1024 * 1024  # a moov or moof this large is not one of ours
_HANDLER_KINDS = {b"vide": "video", b"soun": "audio"}
# tfhd flags: which optional fields follow the track id, in this order, and their sizes.
_TFHD_FIELDS = ((0x01, 8, "base_data_offset"), (0x02, 4, "sample_description_index"),
                (0x08, 4, "default_sample_duration"), (0x10, 4, "default_sample_size"),
                (0x20, 4, "default_sample_flags"))
_TRUN_DATA_OFFSET, _TRUN_FIRST_SAMPLE_FLAGS = 0x01, 0x04
_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTO = 0x100, 0x200, 0x400, 0x800


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of each box laid end to end in ``data[start:end]``.

    >>> list(_boxes(b"\\x00\\x00\\x00\\x0cfree1234", 0, 12))
    [(b'free', 8, 12)]
    """
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            if at + 16 > end:
                raise ValueError(f"MP4 box {kind!r}: truncated 64-bit size")
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise ValueError(f"malformed MP4 box {kind!r} of size {size}")
        yield kind, at + header, at + size
        at += size


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


@dataclass(slots=True)
class _Track:
    """What the ``moov`` says about one track."""

    kind: str = ""  # "video", "audio", or "" for anything else
    timescale: int = 0  # ticks per second (mdhd)
    default_sample_duration: int = 0  # trex: used when neither tfhd nor trun give one


def _parse_moov(data: bytes) -> dict[int, _Track]:
    """Track id -> its kind, timescale and trex defaults, from a ``moov`` body."""
    tracks: dict[int, _Track] = {}
    defaults: dict[int, int] = {}
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"trak":
            track_id, track = 0, _Track()
            for child, cstart, cend in _boxes(data, start, end):
                if child == b"tkhd":
                    version = data[cstart]
                    track_id = _u32(data, cstart + (12 if version == 0 else 20))
                elif child == b"mdia":
                    for part, pstart, _ in _boxes(data, cstart, cend):
                        if part == b"mdhd":
                            version = data[pstart]
                            track.timescale = _u32(data, pstart + (12 if version == 0 else 20))
                        elif part == b"hdlr":
                            track.kind = _HANDLER_KINDS.get(data[pstart + 8 : pstart + 12], "")
            tracks[track_id] = track
        elif kind == b"mvex":
            for child, cstart, _ in _boxes(data, start, end):
                if child == b"trex":
                    defaults[_u32(data, cstart + 4)] = _u32(data, cstart + 12)
    for track_id, duration in defaults.items():
        if track_id in tracks:
            tracks[track_id].default_sample_duration = duration
    return tracks


@dataclass(slots=True)
class _TrackRun:
    """One track's samples in one fragment: count, total duration, first/last decode time."""

    samples: int = 0
    duration: int = 0  # in the track's timescale
    first_decode: int | None = None
    last_decode: int | None = None


@dataclass(slots=True)
class _MoofContent:
    sequence_number: int = 0
    runs: dict[int, _TrackRun] = field(default_factory=dict)  # by track id


def _parse_moof(data: bytes, tracks: dict[int, _Track],
                next_decode: dict[int, int]) -> _MoofContent:
    """Count each track's samples in a ``moof`` body.

    ``next_decode`` holds, per track, the decode time just after the previous
    fragment's last sample: used when a ``traf`` has no ``tfdt``, and updated.
    """
    content = _MoofContent()
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"mfhd":
            content.sequence_number = _u32(data, start + 4)
        elif kind != b"traf":
            continue
        track_id, default_duration, decode = 0, 0, None
        for child, cstart, _ in _boxes(data, start, end):
            if child == b"tfhd":
                flags = _u32(data, cstart) & 0xFFFFFF
                track_id = _u32(data, cstart + 4)
                track = tracks.get(track_id, _Track())
                default_duration = track.default_sample_duration
                at = cstart + 8
                for flag, size, name in _TFHD_FIELDS:
                    if flags & flag:
                        if name == "default_sample_duration":
                            default_duration = _u32(data, at)
                        at += size
                decode = next_decode.get(track_id, 0)
            elif child == b"tfdt":
                version = data[cstart]
                decode = int.from_bytes(
                    data[cstart + 4 : cstart + (12 if version == 1 else 8)], "big")
            elif child == b"trun":
                if decode is None:
                    raise ValueError("MP4 trun before its tfhd")
                flags = _u32(data, cstart) & 0xFFFFFF
                count = _u32(data, cstart + 4)
                at = cstart + 8
                at += 4 * bool(flags & _TRUN_DATA_OFFSET) + 4 * bool(
                    flags & _TRUN_FIRST_SAMPLE_FLAGS)
                stride = 4 * sum(bool(flags & f) for f in (_TRUN_DURATION, _TRUN_SIZE,
                                                           _TRUN_FLAGS, _TRUN_CTO))
                run = content.runs.setdefault(track_id, _TrackRun())
                for i in range(count):
                    duration = (_u32(data, at + i * stride) if flags & _TRUN_DURATION
                                else default_duration)
                    if run.first_decode is None:
                        run.first_decode = decode
                    run.last_decode = decode
                    run.samples += 1
                    run.duration += duration
                    decode += duration
                next_decode[track_id] = decode
    return content


class _FragmentSpotter:
    """The write-only file PyAV writes into: passes bytes on, spots where fragments end.

    It follows the top-level MP4 boxes by their size fields, and reads the
    ``moov`` and each ``moof`` (kept whole while they pass: a few hundred bytes)
    to count what every fragment holds. It has no ``seek``/``tell``, so PyAV
    opens it as a non-seekable stream and FFmpeg can only append.
    """

    def __init__(self, sink: Sink, on_fragment_end: Callable[[FragmentInfo], None],
                 audio_rate: int | None = None) -> None:
        self._sink = sink
        self._on_fragment_end = on_fragment_end
        self._audio_rate = audio_rate
        self.bytes_written = 0  # bytes the sink has accepted
        self.fragments = 0
        self.video_frames = 0  # in the fragments signalled so far
        self.audio_samples = 0
        self._received = 0  # bytes PyAV has given us before the current write()
        self._header = bytearray()  # the box header being gathered
        self._body_left: int | None = None  # None while reading a header; -1: box runs to EOF
        self._box_type = b""
        self._box_offset = 0
        self._moof_offset = 0
        self._kept_body: bytearray | None = None  # the moov or moof body being gathered
        self._tracks: dict[int, _Track] = {}
        self._next_decode: dict[int, int] = {}
        self._moof: _MoofContent | None = None

    def write(self, data: bytes) -> int:
        data = bytes(data)
        passed = 0  # bytes of ``data`` already handed to the sink
        pos = 0
        while pos < len(data):
            if self._body_left is None:
                pos = self._read_header(data, pos)
            elif self._body_left < 0:
                pos = len(data)
            else:
                step = min(self._body_left, len(data) - pos)
                if self._kept_body is not None:
                    self._kept_body += data[pos : pos + step]
                pos += step
                self._body_left -= step
                if self._body_left == 0:
                    self._body_left = None
                    self._box_done()
                    if self._box_type == b"mdat":
                        self._write_all(data[passed:pos])
                        passed = pos
                        self._fragment_done()
        self._write_all(data[passed:])
        self._received += len(data)
        return len(data)

    def _read_header(self, data: bytes, pos: int) -> int:
        if not self._header:
            self._box_offset = self._received + pos
        # A header is 8 bytes (size, type), or 16 when size == 1 (a 64-bit size follows).
        wanted = 16 if self._header[:4] == b"\x00\x00\x00\x01" else 8
        take = min(wanted - len(self._header), len(data) - pos)
        self._header += data[pos : pos + take]
        pos += take
        if len(self._header) < 8:
            return pos
        size = int.from_bytes(self._header[:4], "big")
        if size == 1:
            if len(self._header) < 16:
                return pos
            size = int.from_bytes(self._header[8:16], "big")
        header_length = len(self._header)
        self._box_type = bytes(self._header[4:8])
        self._header.clear()
        if size == 0:
            self._body_left = -1
        elif size < header_length:
            raise ValueError(f"malformed MP4 box {self._box_type!r} of size {size}")
        else:
            self._body_left = size - header_length
        self._kept_body = None
        if self._box_type in (b"moov", b"moof") and 0 <= self._body_left <= _MAX_PARSED_BOX:
            self._kept_body = bytearray()
        if self._box_type == b"moof":
            self._moof_offset = self._box_offset
        return pos

    def _box_done(self) -> None:
        body, self._kept_body = self._kept_body, None
        if body is None:
            return
        if self._box_type == b"moov":
            self._tracks = _parse_moov(bytes(body))
        elif self._box_type == b"moof":
            self._moof = _parse_moof(bytes(body), self._tracks, self._next_decode)

    def _write_all(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            written = self._sink.write(bytes(view))
            # Like PyAV, take a non-integer answer (many sinks return None) as "all of it".
            count = written if isinstance(written, int) else len(view)
            if count <= 0:
                raise OSError("the segment sink accepted no bytes")
            view = view[count:]
            self.bytes_written += count

    def _fragment_done(self) -> None:
        moof, self._moof = self._moof, None
        video, audio = _TrackRun(), _TrackRun()
        audio_timescale = 0
        for track_id, run in (moof.runs.items() if moof else ()):
            track = self._tracks.get(track_id, _Track())
            if track.kind == "video":
                video = run
            elif track.kind == "audio":
                audio, audio_timescale = run, track.timescale
        audio_samples = audio.duration
        if self._audio_rate and audio_timescale and audio_timescale != self._audio_rate:
            audio_samples = audio.duration * self._audio_rate // audio_timescale
        self.video_frames += video.samples
        self.audio_samples += audio_samples
        info = FragmentInfo(
            self.fragments, self._moof_offset, self.bytes_written,
            sequence_number=moof.sequence_number if moof else 0,
            video_frames=video.samples, audio_samples=audio_samples,
            video_decode_first=video.first_decode, video_decode_last=video.last_decode,
            audio_decode_first=audio.first_decode, audio_decode_last=audio.last_decode,
            total_video_frames=self.video_frames, total_audio_samples=self.audio_samples)
        self.fragments += 1
        self._on_fragment_end(info)


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
    """

    def __init__(
        self,
        sink: Sink,
        *,
        width: int,
        height: int,
        fps: Fraction | int,
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
        makes a video-only segment.
        """
        self._fps = Fraction(fps)
        if width <= 0 or height <= 0 or self._fps <= 0:
            raise ValueError("width, height and fps must be positive")
        if audio_rate is not None and audio_rate <= 0:
            raise ValueError("audio_rate must be positive")
        if audio_channels not in _LAYOUTS:
            raise ValueError(f"audio_channels must be one of {sorted(_LAYOUTS)}")
        self._audio_rate = audio_rate
        self._audio_channels = audio_channels
        self._origin_us = origin_us
        self._on_fragment_end = on_fragment_end
        self._frame_ticks = max(1, round(VIDEO_CLOCK_HZ / self._fps))
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

        self._spotter = _FragmentSpotter(sink, self._fragment_ended, audio_rate)
        self._container = av.open(
            self._spotter,
            mode="w",
            format="mp4",
            # FFmpeg hands its output over in writes of this size (and a shorter one
            # at each fragment end): one encryption chunk each, which the sealer
            # seals straight from the bytes given instead of assembling chunks.
            buffer_size=MAX_CHUNK_PLAINTEXT,
            container_options={
                "movflags": "empty_moov+default_base_moof+frag_keyframe",
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

    def add_video(self, frame: VideoFrame) -> None:
        """Add one encoded access unit (Annex B) in capture order."""
        self._check_open()
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
        if self._frames == 0:
            # The header (and so the audio encoder's first packet) waits for the
            # first keyframe's SPS/PPS; keep the PCM until then.
            self._early_audio.append(block)
        else:
            self._encode_audio(block)

    def _encode_audio(self, block: AudioBlock) -> None:
        assert self._audio_stream is not None and self._audio_rate is not None
        assert self._origin_us is not None
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
            self._spotter._on_fragment_end = _ignore_fragment
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

        self.summaries: list[SegmentSummary] = []
        self.video_frames_dropped = 0  # non-keyframes before the span's first keyframe
        self.audio_samples_dropped = 0  # only if the microphone stalled past a cut
        self._muxer: SegmentMuxer | None = None
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
            self._finish_segment()
        else:
            self.audio_samples_dropped += sum(len(b.samples) for b in self._pending_audio)
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
        elif frame.keyframe and frame.timestamp_us - self._segment_start_us >= self._segment_us:
            self._route_audio_before(frame.timestamp_us)
            self._finish_segment()
            self._start_segment(frame, frame.timestamp_us)
        assert self._muxer is not None
        self._muxer.add_video(frame)
        self._route_audio_before(frame.timestamp_us)

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
            # Samples older than this segment belonged to one already finished: that
            # only happens when the microphone stalled longer than max_wait_us.
            late, block = split_audio_block(block, origin_us)
            if late is not None:
                self.audio_samples_dropped += len(late.samples)
            if block is not None:
                self._muxer.add_audio(block)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the segmenter is closed")
