"""The segment muxer and segmenter, judged by decoding their output with PyAV and ffprobe."""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from device.muxer import SegmentMuxer, SegmentSummary
from device.segmenter import Segmenter, split_audio_block
from hardware.frames import AudioBlock, VideoFrame
from tests.device.conftest import (
    AUDIO_RATE,
    CAPTURE_EPOCH_US,
    CLIP_FRAMES,
    FPS,
    HEIGHT,
    WIDTH,
    EncodedClip,
    StrictSink,
    audio_blocks,
    read_counter,
)

VIDEO = {"width": WIDTH, "height": HEIGHT, "fps": FPS}


@dataclass
class RecordingSink(StrictSink):
    signalled_before_close: int = 0  # fragment ends signalled before close()


@dataclass
class Decoded:
    counters: list[int]  # the frame number shown by each decoded picture
    pcm: np.ndarray
    first_video_pts: float | None
    damaged_packets: int  # packets the decoders refused (a torn last packet)


def decode(data: bytes) -> Decoded:
    """Decode every picture and sample PyAV can get out of ``data``, like a lenient player."""
    counters: list[int] = []
    chunks: list[np.ndarray] = []
    first_video_pts = None
    damaged = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        for packet in container.demux(*container.streams):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                damaged += 1
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    if first_video_pts is None:
                        first_video_pts = float(frame.time)
                    counters.append(read_counter(frame.to_ndarray()[:HEIGHT]))
                else:
                    chunks.append(frame.to_ndarray().reshape(-1))
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return Decoded(counters, pcm, first_video_pts, damaged)


def ffprobe(path: Path, entries: str) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    return json.loads(result.stdout)


def top_level_boxes(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, size) of each top-level box, walked independently of the muxer."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        boxes.append((at, data[at + 4 : at + 8], size))
        at += size
    return boxes


def mux_whole(frames: list[VideoFrame], blocks: list[AudioBlock]) -> tuple[RecordingSink,
                                                                            SegmentSummary]:
    """One segment: all frames, then the audio, fed in capture order."""
    sink = RecordingSink()
    origin_us = min(frames[0].timestamp_us, blocks[0].timestamp_us)
    muxer = SegmentMuxer(sink, **VIDEO, origin_us=origin_us, on_fragment_end=sink.on_fragment_end)
    events = [(f.timestamp_us, 0, f) for f in frames] + [(b.timestamp_us, 1, b) for b in blocks]
    for _, kind, item in sorted(events, key=lambda e: e[:2]):
        if kind == 0:
            muxer.add_video(item)
        else:
            muxer.add_audio(item)
    sink.signalled_before_close = len(sink.fragment_ends)
    return sink, muxer.close()


def test_segments_are_playable_and_lose_nothing_across_boundaries(
    clip: EncodedClip, pcm: np.ndarray, tmp_path: Path
) -> None:
    frames = clip.frames(jitter_us=800)
    # The microphone starts 40 ms before the camera and stops after it.
    blocks = audio_blocks(pcm, CAPTURE_EPOCH_US - 40_000)
    # Arrival order as on the device: a frame shortly after capture, an audio
    # block only once its last sample is in.
    arrivals = [(f.timestamp_us + 5_000, "video", f) for f in frames]
    arrivals += [(b.end_us + 2_000, "audio", b) for b in blocks]
    arrivals.sort(key=lambda a: a[0])

    sinks: list[RecordingSink] = []

    def open_sink(number: int) -> RecordingSink:
        assert number == len(sinks)
        sinks.append(RecordingSink())
        return sinks[-1]

    ended: list[int] = []
    segmenter = Segmenter(
        open_sink,
        **VIDEO,
        segment_us=2_500_000,  # keyframes every second: cuts at 3 s and 6 s
        on_fragment_end=lambda number, fragment: sinks[number].on_fragment_end(fragment),
        on_segment_end=lambda number, summary: ended.append(number),
    )
    for _, kind, item in arrivals:
        if kind == "video":
            segmenter.add_video(item)
        else:
            segmenter.add_audio(item)
    summaries = segmenter.close()

    assert len(summaries) == len(sinks) == 3 and ended == [0, 1, 2]
    assert segmenter.video_frames_dropped == 0 and segmenter.audio_samples_dropped == 0
    assert [s.first_frame_index for s in summaries] == [1000, 1045, 1090]

    all_counters: list[int] = []
    all_pcm: list[np.ndarray] = []
    for number, (sink, summary) in enumerate(zip(sinks, summaries, strict=True)):
        assert sink.forbidden_calls == []
        assert summary.bytes_written == len(sink.data)
        path = tmp_path / f"segment-{number}.mp4"
        path.write_bytes(sink.data)
        streams = ffprobe(path, "stream=codec_name,width,height,sample_rate")["streams"]
        assert [s["codec_name"] for s in streams] == ["h264", "flac"]
        assert (streams[0]["width"], streams[0]["height"]) == (WIDTH, HEIGHT)
        assert streams[1]["sample_rate"] == str(AUDIO_RATE)

        decoded = decode(bytes(sink.data))
        assert decoded.damaged_packets == 0
        assert len(decoded.counters) == summary.frames
        assert len(decoded.pcm) == summary.audio_samples
        all_counters += decoded.counters
        all_pcm.append(decoded.pcm)

        # The cut is exact: this segment's audio starts at or after its first
        # keyframe and the previous segment's audio ends before it.
        if number > 0:
            assert summary.first_sample_timestamp_us >= summary.first_frame_timestamp_us
            previous = summaries[number - 1]
            assert previous.last_sample_timestamp_us < summary.first_frame_timestamp_us
            assert decoded.first_video_pts == 0

    # Every frame exactly once, in order; every sample exactly once, bit for bit.
    assert all_counters == list(range(CLIP_FRAMES))
    assert sum(s.frames for s in summaries) == CLIP_FRAMES
    assert np.array_equal(np.concatenate(all_pcm), pcm)
    assert sum(s.audio_samples for s in summaries) == len(pcm)
    # The first segment kept the audio from before the first keyframe.
    assert summaries[0].origin_us == CAPTURE_EPOCH_US - 40_000


@pytest.mark.parametrize(("segment_us", "first_indexes"), [
    (2_000_000, [1000, 1030, 1060, 1090]),  # a keyframe exactly at the target length
    (1_999_999, [1000, 1030, 1060, 1090]),
    (2_000_001, [1000, 1045, 1090]),  # just missed: wait for the next keyframe
])
def test_segmenter_rolls_over_at_first_keyframe_at_or_after_target(
    clip: EncodedClip, pcm: np.ndarray, segment_us: int, first_indexes: list[int]
) -> None:
    segmenter = Segmenter(lambda number: io.BytesIO(), **VIDEO, segment_us=segment_us)
    # All the audio first, in one block: it waits for the frames that decide the cuts.
    segmenter.add_audio(AudioBlock(pcm, CAPTURE_EPOCH_US, AUDIO_RATE))
    for frame in clip.frames():
        segmenter.add_video(frame)
    summaries = segmenter.close()
    assert [s.first_frame_index for s in summaries] == first_indexes
    assert sum(s.audio_samples for s in summaries) == len(pcm)


def test_fragments_are_signalled_and_never_longer_than_a_second(
    long_gop_clip: EncodedClip, pcm: np.ndarray, tmp_path: Path
) -> None:
    # Keyframes only every 3 s: the muxer must cut fragments between them.
    frames = long_gop_clip.frames(jitter_us=800)
    sink, summary = mux_whole(frames, audio_blocks(pcm[: 8 * AUDIO_RATE], CAPTURE_EPOCH_US))
    assert sink.forbidden_calls == []
    assert summary.fragments == len(sink.fragment_ends) >= 8
    # Fragments leave as they complete, not at close(): only the last one waits for it.
    assert sink.signalled_before_close == summary.fragments - 1

    # Each signal falls exactly where an mdat ends, and every mdat end is signalled.
    boxes = top_level_boxes(bytes(sink.data))
    mdat_ends = [offset + size for offset, kind, size in boxes if kind == b"mdat"]
    moofs = [offset for offset, kind, _ in boxes if kind == b"moof"]
    assert [f.end_offset for f in sink.fragment_ends] == mdat_ends
    assert [f.start_offset for f in sink.fragment_ends] == moofs
    assert [f.index for f in sink.fragment_ends] == list(range(summary.fragments))
    assert [kind for _, kind, _ in boxes][:2] == [b"ftyp", b"moov"]
    assert boxes[-1][1] == b"mfra"

    path = tmp_path / "segment.mp4"
    path.write_bytes(sink.data)
    packets = ffprobe(path, "packet=stream_index,pts_time,duration_time,pos")["packets"]
    total_audio_s = summary.audio_samples / AUDIO_RATE
    audio_starts = [float(p["pts_time"]) for p in packets if p["stream_index"] == 1]
    audio_ends = dict(zip(audio_starts, audio_starts[1:] + [total_audio_s], strict=True))
    for fragment in sink.fragment_ends:
        spans = []
        for p in packets:
            if fragment.start_offset <= int(p["pos"]) < fragment.end_offset:
                start = float(p["pts_time"])
                if p["stream_index"] == 0:
                    spans.append((start, start + float(p["duration_time"])))
                else:
                    spans.append((start, audio_ends[start]))
        assert spans, f"fragment {fragment.index} holds no media"
        extent = max(end for _, end in spans) - min(start for start, _ in spans)
        assert extent <= 1.0, f"fragment {fragment.index} spans {extent:.3f} s"
    # All media sits in signalled fragments.
    assert all(int(p["pos"]) < sink.fragment_ends[-1].end_offset for p in packets)


def test_truncated_segment_decodes_up_to_its_last_complete_fragment(
    clip: EncodedClip, pcm: np.ndarray, tmp_path: Path
) -> None:
    frames = clip.frames()[: 4 * FPS]
    sink, summary = mux_whole(frames, audio_blocks(pcm[: 4 * AUDIO_RATE], CAPTURE_EPOCH_US))
    data = bytes(sink.data)
    full = tmp_path / "full.mp4"
    full.write_bytes(data)
    packets = ffprobe(full, "packet=stream_index,pos")["packets"]

    def media_before(offset: int) -> tuple[int, int]:
        """(frames, audio packets) stored wholly before ``offset``."""
        inside = [p for p in packets if int(p["pos"]) < offset]
        return (sum(p["stream_index"] == 0 for p in inside),
                sum(p["stream_index"] == 1 for p in inside))

    # A power cut right after a signalled fragment end: exactly what came before.
    last_kept = sink.fragment_ends[-2]
    cut = data[: last_kept.end_offset]
    frames_kept, _ = media_before(last_kept.end_offset)
    decoded = decode(cut)
    assert decoded.damaged_packets == 0
    assert 0 < frames_kept < len(frames)
    assert decoded.counters == list(range(frames_kept))
    assert 0 < len(decoded.pcm) < summary.audio_samples
    assert np.array_equal(decoded.pcm, pcm[: len(decoded.pcm)])
    (tmp_path / "cut.mp4").write_bytes(cut)
    ffprobe(tmp_path / "cut.mp4", "stream=codec_name")

    # A power cut in the middle of the next fragment: at least the complete ones.
    in_flight = sink.fragment_ends[-1]
    middle = (in_flight.start_offset + in_flight.end_offset) // 2
    decoded_mid = decode(data[:middle])
    assert decoded_mid.counters[:frames_kept] == list(range(frames_kept))
    assert decoded_mid.counters == list(range(len(decoded_mid.counters)))
    assert len(decoded_mid.pcm) >= len(decoded.pcm)
    assert np.array_equal(decoded_mid.pcm, pcm[: len(decoded_mid.pcm)])


def test_segment_must_start_at_a_keyframe_with_parameter_sets(clip: EncodedClip) -> None:
    frames = clip.frames()
    muxer = SegmentMuxer(io.BytesIO(), **VIDEO)
    with pytest.raises(ValueError, match="must start with a keyframe"):
        muxer.add_video(frames[1])

    # A keyframe flagged as such but without SPS/PPS in front of its slices.
    nal_units = frames[0].data.split(b"\x00\x00\x01")
    idr_only = b"".join(b"\x00\x00\x01" + unit for unit in nal_units[1:] if unit[0] & 0x1F == 5)
    bare = VideoFrame(idr_only, frames[0].timestamp_us, True, frames[0].index)
    with pytest.raises(ValueError, match="SPS/PPS"):
        SegmentMuxer(io.BytesIO(), **VIDEO).add_video(bare)


def test_muxer_refuses_frames_out_of_capture_order(clip: EncodedClip) -> None:
    frames = clip.frames()
    muxer = SegmentMuxer(io.BytesIO(), **VIDEO)
    muxer.add_video(frames[0])
    muxer.add_video(frames[1])
    with pytest.raises(ValueError, match="does not come after"):
        muxer.add_video(VideoFrame(frames[2].data, frames[1].timestamp_us, False, 1002))
    assert muxer.close().frames == 2


def test_split_audio_block_cuts_at_the_exact_sample() -> None:
    # At 48 kHz sample i is captured at 1_000_000 + i * 20.833 µs.
    block = AudioBlock(np.arange(100, dtype=np.int16), 1_000_000, 48_000)

    before, after = split_audio_block(block, 1_000_000 + 1_000)  # 48 samples = 1000 µs exactly
    assert before is not None and after is not None
    assert len(before.samples) == 48 and after.samples[0] == 48
    assert after.timestamp_us == 1_001_000

    before, after = split_audio_block(block, 1_000_000 + 1_001)  # between samples 48 and 49
    assert len(before.samples) == 49 and after.samples[0] == 49
    assert after.timestamp_us >= 1_001_001

    # Cuts outside the block leave it whole.
    assert split_audio_block(block, 999_000) == (None, block)
    assert split_audio_block(block, 1_000_000) == (None, block)
    assert split_audio_block(block, 1_002_063) == (block, None)  # just after sample 99


@pytest.mark.parametrize("clip_name", ["clip", "long_gop_clip"])
def test_fragment_info_says_exactly_what_the_bytes_up_to_it_decode_to(
    clip_name: str, request: pytest.FixtureRequest, pcm: np.ndarray
) -> None:
    """What a caller journals at a fragment end must be what a player gets from those bytes."""
    clip: EncodedClip = request.getfixturevalue(clip_name)
    frames = clip.frames(jitter_us=800, seed=3)
    # The microphone starts 40 ms before the camera: the origin is the audio's.
    blocks = audio_blocks(pcm[: 7 * AUDIO_RATE], CAPTURE_EPOCH_US - 40_000, seed=3)
    sink, summary = mux_whole(frames, blocks)
    data, fragments = bytes(sink.data), sink.fragment_ends
    assert len(fragments) == summary.fragments >= 8
    frame_us = {f.index - 1000: f.timestamp_us for f in frames}  # counter -> capture time

    rng = np.random.default_rng(11)
    for fragment in sorted(rng.choice(fragments, size=5, replace=False), key=lambda f: f.index):
        decoded = decode(data[: fragment.end_offset])
        assert decoded.damaged_packets == 0
        assert fragment.total_video_frames == len(decoded.counters) > 0
        assert fragment.total_audio_samples == len(decoded.pcm) > 0
        assert np.array_equal(decoded.pcm, pcm[: len(decoded.pcm)])
        assert fragment.first_frame_us == frames[0].timestamp_us
        assert fragment.last_frame_us == frame_us[decoded.counters[-1]]
        assert fragment.first_sample_us == CAPTURE_EPOCH_US - 40_000
        # The last sample's capture time, counted from the first (block stamps are floored
        # to the µs, the muxer rounds within a block: 1.5 µs at most).
        last = fragment.last_sample_us - CAPTURE_EPOCH_US + 40_000
        assert abs(last - (len(decoded.pcm) - 1) * 1_000_000 / AUDIO_RATE) <= 1.5

    # Per fragment: the counts add up, the decode times run on without a hole, and the
    # file's video clock (0 at the first frame) agrees with the capture times to 2 ticks.
    assert sum(f.video_frames for f in fragments) == summary.frames
    assert sum(f.audio_samples for f in fragments) == summary.audio_samples
    assert [f.sequence_number for f in fragments] == list(range(1, len(fragments) + 1))
    audio_next = 0
    for fragment in fragments:
        if fragment.audio_samples:
            assert fragment.audio_decode_first == audio_next
            audio_next += fragment.audio_samples
        if fragment.video_frames:
            ticks_us = fragment.video_decode_last * 1_000_000 / 90_000
            assert abs(fragment.first_frame_us + ticks_us - fragment.last_frame_us) <= 22
    # The last fragment accounts for the whole segment, as the summary does.
    final = fragments[-1]
    assert (final.total_video_frames, final.total_audio_samples) == (summary.frames,
                                                                      summary.audio_samples)
    assert (final.first_frame_us, final.last_frame_us) == (summary.first_frame_timestamp_us,
                                                           summary.last_frame_timestamp_us)
    assert (final.first_sample_us, final.last_sample_us) == (summary.first_sample_timestamp_us,
                                                             summary.last_sample_timestamp_us)


def test_fragment_info_of_a_video_only_segment(clip: EncodedClip) -> None:
    sink = RecordingSink()
    muxer = SegmentMuxer(sink, **VIDEO, audio_rate=None, on_fragment_end=sink.on_fragment_end)
    for frame in clip.frames()[:40]:
        muxer.add_video(frame)
    summary = muxer.close()
    final = sink.fragment_ends[-1]
    assert final.total_video_frames == summary.frames == 40
    assert final.total_audio_samples == 0 and final.first_sample_us is None
    assert final.last_frame_us == summary.last_frame_timestamp_us
    assert len(decode(bytes(sink.data)[: sink.fragment_ends[0].end_offset]).counters) == (
        sink.fragment_ends[0].total_video_frames)
