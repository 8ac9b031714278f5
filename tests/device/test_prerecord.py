"""The pre-record buffer keeps the last N seconds from a keyframe, and nothing is lost at drain."""

from __future__ import annotations

import numpy as np

from device.prerecord import PreRecordBuffer
from hardware.frames import AudioBlock, VideoFrame

FPS, GOP, RATE = 10, 5, 48_000


def frame(i: int) -> VideoFrame:
    return VideoFrame(b"x", i * 100_000, i % GOP == 0, i)


def block(i: int) -> AudioBlock:  # 100 ms blocks aligned with frames
    return AudioBlock(np.arange(4800, dtype=np.int16) + i, i * 100_000, RATE)


def fill(buffer: PreRecordBuffer, frames: int) -> None:
    for i in range(frames):
        buffer.add_video(frame(i))
        buffer.add_audio(block(i))


def test_keeps_at_least_the_span_starting_at_a_keyframe():
    buffer = PreRecordBuffer(seconds=2, keep_audio=True)
    fill(buffer, 73)  # newest frame at 7.2 s
    frames, blocks = buffer.drain()
    assert frames[0].keyframe
    assert frames[-1].index == 72
    assert [f.index for f in frames] == list(range(frames[0].index, 73))
    # covers >= 2 s and less than 2 s + one GOP
    assert 2.0 <= (frames[-1].timestamp_us - frames[0].timestamp_us) / 1e6 < 2.0 + GOP / FPS
    assert blocks[0].timestamp_us == frames[0].timestamp_us
    assert sum(len(b.samples) for b in blocks) == 4800 * (73 - frames[0].index)


def test_drain_empties_it():
    buffer = PreRecordBuffer(seconds=2, keep_audio=True)
    fill(buffer, 30)
    buffer.drain()
    assert buffer.drain() == ([], [])


def test_zero_seconds_keeps_nothing():
    buffer = PreRecordBuffer(seconds=0, keep_audio=True)
    fill(buffer, 30)
    assert buffer.drain() == ([], [])


def test_audio_off_keeps_video_only():
    buffer = PreRecordBuffer(seconds=1, keep_audio=False)
    fill(buffer, 30)
    frames, blocks = buffer.drain()
    assert frames and blocks == []


def test_never_starts_with_a_non_keyframe():
    buffer = PreRecordBuffer(seconds=5, keep_audio=True)
    for i in range(2, 5):  # frames 2..4 are not keyframes
        buffer.add_video(frame(i))
        buffer.add_audio(block(i))
    assert buffer.drain() == ([], [])


def test_audio_straddling_the_first_frame_is_split_at_the_exact_sample():
    buffer = PreRecordBuffer(seconds=1, keep_audio=True)
    buffer.add_video(frame(0))
    buffer.add_audio(AudioBlock(np.zeros(9600, np.int16), -100_000, RATE))  # -0.1 .. +0.1 s
    _, blocks = buffer.drain()
    assert blocks[0].timestamp_us == 0 and len(blocks[0].samples) == 4800


def test_audio_that_arrives_before_the_first_keyframe_is_kept():
    """Audio comes before the encoder's first keyframe: the recording's sound must
    still begin exactly at its first frame."""
    buffer = PreRecordBuffer(seconds=5, keep_audio=True)
    for i in range(-3, 0):  # 0.3 s of audio before any frame
        buffer.add_audio(block(i))
    buffer.add_audio(AudioBlock(np.zeros(4800, np.int16), -50_000, RATE))  # straddles 0
    buffer.add_video(frame(0))
    frames, blocks = buffer.drain()
    assert frames[0].timestamp_us == 0
    assert blocks[0].timestamp_us == 0 and len(blocks[0].samples) == 2400


def test_contiguous_audio_is_joined_into_few_blocks():
    buffer = PreRecordBuffer(seconds=3, keep_audio=True)
    fill(buffer, 25)
    _, blocks = buffer.drain()
    assert len(blocks) <= 3 and sum(len(b.samples) for b in blocks) == 25 * 4800
