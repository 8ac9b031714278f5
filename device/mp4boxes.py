"""Reading what FFmpeg wrote: the few MP4 boxes that say what a fragment holds.

The muxer watches the top-level boxes of its own output
(:class:`FragmentSpotter`): it parses the ``moov`` (each track's ``tkhd`` id,
``hdlr`` kind, ``mdhd`` timescale, ``mvex/trex`` defaults) and every ``moof``
(``mfhd``; per ``traf``: ``tfhd`` defaults, ``tfdt`` base decode time, each
``trun``'s sample count and durations), and signals each fragment, with what it
holds (:class:`FragmentInfo`), right after its last byte went to the sink.
Used by :mod:`device.muxer`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


def ignore_fragment(fragment: FragmentInfo) -> None:
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


class FragmentSpotter:
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
