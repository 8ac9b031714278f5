"""A press with a full pre-record buffer: the live frame is not behind the buffer (ADR 0061).

The buffer's part before its last keyframe is muxed on a thread of its own;
the mux thread takes the first frame after the press at once, even while the
seal stage has not sealed a byte of the buffer. The ledger and the medium see
the same order as before: the pre-record part sealed first, then the live
segment, gapless, every frame and sample once. The time it takes is
``benchmarks/latency.py``'s (``press_to_frame_ms_full_prerecord``).
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from device.prerecord import segments_in, split_at_last_keyframe
from device.recorder.messages import Barrier, End, Session, Stop
from device.sealer import SegmentSealer
from device.segmenter import Segmenter
from hardware.camera import monotonic_us
from hardware.frames import VideoFrame
from protocol.entries import RecordStart, Segment
from tests.conftest import Unit
from tests.device.conftest import AUDIO_RATE, FPS, HEIGHT, WIDTH, EncodedClip, audio_blocks
from tests.device.simrun import recorder_on_sim

S = 1_000_000  # µs


class GatedSealer(SegmentSealer):
    """A medium that writes nothing until ``gate`` opens: the seal stage waits at the
    first file, and the seal queue fills up behind it."""

    gate = threading.Event()

    def _emit(self, stored: list) -> None:
        assert self.gate.wait(60)
        super()._emit(stored)


def restamped(clip: EncodedClip, start_us: int, count: int) -> list[VideoFrame]:
    return [VideoFrame(f.data, start_us + i * S // FPS, f.keyframe, f.index)
            for i, f in enumerate(clip.frames()[:count])]


def test_the_live_frame_reaches_the_muxer_before_the_buffer_is_sealed(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    settings = dict(segment_seconds=60, queue_seconds=1, video_bitrate=100_000,
                    pre_record_seconds=30, video=f"{WIDTH}x{HEIGHT}@{FPS}")
    with recorder_on_sim(unit, **settings) as rec:
        rec.sealer_class = GatedSealer
        GatedSealer.gate.clear()
        threads = [threading.Thread(target=rec.mux.run, daemon=True),
                   threading.Thread(target=rec.seal.run, daemon=True)]
        for t in threads:
            t.start()
        try:
            base = monotonic_us() - 20 * S  # in the past: capture is never after its entry
            frames = restamped(clip, base, 90)  # 6 s, a keyframe every second
            blocks = audio_blocks(pcm[: 6 * AUDIO_RATE], base)
            press_us = frames[53].timestamp_us - 1  # 3.5 s buffered: 3 s before its last key
            router = rec.router
            for item in sorted(frames[:53] + [b for b in blocks if b.end_us <= press_us],
                               key=lambda x: x.timestamp_us):
                (router.prerecord.add_video if isinstance(item, VideoFrame)
                 else router.prerecord.add_audio)(item)
            session = Session()
            router.begin(session, False, RecordStart(trigger="button", category="scene",
                                                     officer="PC-0042", pre_record_seconds=3.5),
                         rec.appender.utc_offset_ns, press_us)
            live = sorted(frames[53:] + [b for b in blocks if b.end_us > press_us],
                          key=lambda x: x.timestamp_us)
            # As the capture threads would: they wait if the capture queue is full.
            feeder = threading.Thread(target=lambda: [router.queue.put(x) for x in live],
                                      daemon=True)
            feeder.start()
            # The seal stage has not written a byte, the queue is full of the buffer's
            # part: the first live frame is muxed all the same (before: never, the mux
            # thread waited for the seal queue behind the buffer).
            deadline = time.monotonic() + 10
            while not rec.stats.press_to_frame_ms and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rec.stats.press_to_frame_ms, "the live frame waited behind the buffer"
            assert not [e for e in unit.entries() if isinstance(e.entry.body, Segment)
                        and e.entry.body.recording == session.seq.result(0)]
            assert rec._seal_q.qsize() > 0 and rec.mux.seal.holding
            GatedSealer.gate.set()
            feeder.join(30)  # all live capture queued: the stop comes after it
            assert not feeder.is_alive()
            router.queue.put(Stop("button"))
            barrier = Barrier()
            router.queue.put(barrier)
            assert barrier.passed.wait(60)
        finally:
            GatedSealer.gate.set()
            rec.router.queue.put(End())
            for t in threads:
                t.join(timeout=30)
        assert not rec.stats.last_error, rec.stats.last_error
    recording = session.seq.result(0)
    kinds = [e.entry.kind for e in unit.entries() if e.entry.seq >= recording]
    assert kinds == ["record_start", "segment", "segment", "record_stop"]
    part, live_segment = [e.entry.body for e in unit.entries()
                          if isinstance(e.entry.body, Segment)
                          and e.entry.body.recording == recording]
    offset_ns = rec.appender.utc_offset_ns
    # The part is the buffer up to its last keyframe; the live segment begins there.
    assert part.first_capture_utc_ns == frames[0].timestamp_us * 1000 + offset_ns
    assert live_segment.first_capture_utc_ns == frames[45].timestamp_us * 1000 + offset_ns
    assert (part.frames, live_segment.frames) == (45, 45)
    assert part.audio_samples + live_segment.audio_samples == 6 * AUDIO_RATE
    report = unit.verify()
    assert not report.errors, report.errors
    assert report.gaps == []


def test_the_buffer_is_cut_at_its_last_keyframe_at_the_exact_sample(
        clip: EncodedClip, pcm: np.ndarray) -> None:
    frames = restamped(clip, 10 * S, 40)  # keyframes at 0, 15, 30
    blocks = audio_blocks(pcm[: 3 * AUDIO_RATE], 10 * S)
    (part, part_audio), (head, head_audio) = split_at_last_keyframe(frames, blocks)
    assert part == frames[:30] and head == frames[30:] and head[0].keyframe
    cut_us = frames[30].timestamp_us
    assert all(b.end_us <= cut_us + S // AUDIO_RATE for b in part_audio)
    assert head_audio[0].timestamp_us >= cut_us
    joined = np.concatenate([b.samples for b in part_audio + head_audio])
    assert np.array_equal(joined, pcm[: 3 * AUDIO_RATE])
    one_gop = frames[:10]
    assert split_at_last_keyframe(one_gop, blocks) == (([], []), (one_gop, blocks))


@pytest.mark.parametrize("segment_s, frames_n", [(60, 90), (1, 90), (2, 100), (1.5, 61)])
def test_the_segments_a_part_needs_are_counted_as_the_segmenter_cuts_them(
        clip: EncodedClip, segment_s: float, frames_n: int) -> None:
    """The live segment's file is named while the part is still muxed: the count of
    the part's files must be the segmenter's own."""
    frames = restamped(clip, 10 * S, frames_n)
    segmenter = Segmenter(lambda n: io.BytesIO(), width=WIDTH, height=HEIGHT, fps=FPS,
                          audio_rate=None, segment_us=int(segment_s * S))
    for frame in frames:
        segmenter.add_video(frame)
    assert segments_in(frames, int(segment_s * S)) == len(segmenter.close())

