"""A microphone late past a segment cut loses no sound, and what it cannot keep it says.

On a loaded Pi Zero 2 W the audio thread can be starved (or a USB microphone
hiccup) for more than the second the segmenter waits for audio: video goes on
without it, and a segment is cut at a keyframe while its last second of sound
is still on its way. The samples come late, with their true capture times.
These tests put exactly that on the capture queue of the real mux and seal
stages (no real time, as in test_stage_gaps.py), then judge the ledger.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from device.recorder import Recorder
from device.recorder.messages import Barrier, Session, Stop
from device.recorder.router import MIC_TIMEOUT_S
from device.segmenter import Segmenter
from hardware.camera import monotonic_us
from hardware.frames import AudioBlock, VideoFrame
from protocol.entries import RecordStart
from tests.conftest import Unit
from tests.device.conftest import AUDIO_RATE, FPS, HEIGHT, WIDTH, EncodedClip, audio_blocks
from tests.device.simrun import recorder_on_sim
from tests.device.test_stage_gaps import segments, stages

S = 1_000_000  # µs


def capture(clip: EncodedClip, pcm: np.ndarray, start_us: int,
            seconds: float) -> tuple[list[VideoFrame], list[AudioBlock]]:
    """``seconds`` of frames (a keyframe each second) and audio from ``start_us``."""
    count = int(seconds * FPS)
    source = clip.frames()
    frames = [VideoFrame(source[i % len(source)].data, start_us + i * S // FPS,
                         source[i % len(source)].keyframe, i) for i in range(count)]
    sound = np.tile(pcm, int(seconds // (len(pcm) / AUDIO_RATE)) + 1)
    return frames, audio_blocks(sound[: int(seconds * AUDIO_RATE)], start_us)


def delivered(frames: list[VideoFrame], blocks: list[AudioBlock], stall_from_us: int,
              stall_to_us: int) -> list[VideoFrame | AudioBlock]:
    """Capture in the order it reaches the mux stage: each item when captured, but the
    audio captured from ``stall_from_us`` comes all at once at ``stall_to_us``."""
    def at(item: VideoFrame | AudioBlock) -> tuple[int, int]:
        if isinstance(item, VideoFrame):
            return item.timestamp_us, 0
        late = stall_from_us <= item.end_us <= stall_to_us
        return (stall_to_us if late else item.end_us), 1

    return sorted([*frames, *blocks], key=at)


def record(rec: Recorder, items: list, press_us: int, mic_fault_at_us: int | None = None
           ) -> Session:
    """A press at ``press_us``, ``items`` routed, a stop; the mic watchdog's fault when the
    capture reaches ``mic_fault_at_us`` (if given)."""
    router, q = rec.router, rec.router.queue
    session = Session()
    router.begin(session, False, RecordStart(trigger="button", category="scene",
                                             officer="PC-0042", pre_record_seconds=0),
                 rec.appender.utc_offset_ns, press_us)
    for item in items:
        # What the router notes as it routes: each source delivered.
        watch = router.mic_watch if isinstance(item, AudioBlock) else router.camera_watch
        watch.seen(item.end_us if isinstance(item, AudioBlock) else item.timestamp_us)
        if mic_fault_at_us is not None and item.timestamp_us >= mic_fault_at_us:
            router.mic_watch.last_at -= MIC_TIMEOUT_S  # no block for a second
            assert router.check_sources() == (False, True)
            mic_fault_at_us = None
        q.put(item)
    q.put(Stop("button"))
    barrier = Barrier()
    q.put(barrier)
    assert barrier.passed.wait(60)
    return session


def test_a_segment_cut_while_the_microphone_is_late_keeps_its_sound(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    """The audio thread starved 1.5 s from 1.7 s, across the cut at 2 s: longer than
    the segmenter waits (1 s after the cut's keyframe), shorter than the watchdog
    sees for sure (no block for 1 s, looked at every 0.5 s). Before ADR 0064 the
    0.3 s before the cut were dropped, and nothing in the ledger said so."""
    with stages(unit) as rec:
        press_us = monotonic_us() - 30 * S
        frames, blocks = capture(clip, pcm, press_us, 5)
        items = delivered(frames, blocks, press_us + 17 * S // 10, press_us + 32 * S // 10)
        session = record(rec, items, press_us)
        dropped = rec.stats.dropped_samples
    recording = session.seq.result(0)
    kept = segments(unit, recording)
    assert dropped == 0
    assert sum(s.audio_samples for s in kept) == sum(len(b.samples) for b in blocks)
    # Every segment holds its sound up to the next one's first frame: none has a hole.
    for before, after in zip(kept, kept[1:], strict=False):
        held_ns = before.audio_samples * 10**9 // before.audio_rate
        assert held_ns == pytest.approx(after.first_capture_utc_ns - before.first_capture_utc_ns,
                                        abs=10**9 // AUDIO_RATE + 1)
    report = unit.verify()
    assert report.verdict == "intact", report.findings
    assert report.interruptions == [] and report.audio_gaps == []


def test_sound_too_late_for_its_segment_is_declared_where_it_was_lost(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    """A microphone 12 s late: the cut due at 2 s waited 10 s for the sound (the
    segment went on to 12 s) and then came without it. The 10.5 s of sound that
    came after are a declared hole (``mic_fault``, ``audio_late``) from where they
    begin; the next segment keeps its sound."""
    with stages(unit) as rec:
        press_us = monotonic_us() - 30 * S
        frames, blocks = capture(clip, pcm, press_us, 16)
        stall_us = press_us + 15 * S // 10
        items = delivered(frames, blocks, stall_us, press_us + 135 * S // 10)
        session = record(rec, items, press_us, mic_fault_at_us=stall_us + S)
        dropped, offset_ns = rec.stats.dropped_samples, rec.appender.utc_offset_ns
    assert dropped == pytest.approx(105 * AUDIO_RATE // 10, abs=2500)  # 1.5 s to 12 s
    recording = session.seq.result(0)
    kept = segments(unit, recording)
    assert sum(s.audio_samples for s in kept) == sum(len(b.samples) for b in blocks) - dropped
    report = unit.verify()
    assert not report.errors, report.errors
    late = [i for i in report.interruptions if i.detected_by == "audio_late"]
    assert [(i.reason, i.recording) for i in late] == [("mic_fault", recording)]
    [cut] = late
    first_lost_us = next(b.timestamp_us for b in blocks if b.end_us >= stall_us)
    assert cut.cut_utc_ns == first_lost_us * 1000 + offset_ns
    assert cut.resumed_by is not None
    # The hole is in the first segment's sound, declared; the other segment is whole.
    assert kept[1].first_capture_utc_ns == (press_us + 12 * S) * 1000 + offset_ns
    [hole] = report.audio_gaps
    assert hole.declared and hole.seq == next(
        e.entry.seq for e in unit.entries() if e.entry.body == kept[0])
    assert hole.seconds == pytest.approx(10.5, abs=0.06)


def feed(segmenter: Segmenter, items: list[VideoFrame | AudioBlock]) -> None:
    for item in items:
        if isinstance(item, AudioBlock):
            segmenter.add_audio(item)
        else:
            segmenter.add_video(item)


def test_the_segmenter_keeps_a_late_tail_and_says_what_it_drops(
        clip: EncodedClip, pcm: np.ndarray) -> None:
    """The segmenter alone: a cut waits for late audio, which lands in the segment it
    belongs to; audio later than the wait is dropped, counted and given to
    ``on_audio_dropped`` once per stretch."""
    frames, blocks = capture(clip, pcm, 10 * S, 7)
    said: list[tuple[int, int, int]] = []
    ended: list[int] = []

    def segmenter(wait_us: int) -> Segmenter:
        return Segmenter(lambda n: io.BytesIO(), width=WIDTH, height=HEIGHT, fps=FPS,
                         segment_us=2 * S, late_audio_wait_us=wait_us,
                         on_segment_end=lambda n, _: ended.append(n),
                         on_audio_dropped=lambda *x: said.append(x))

    kept = segmenter(10 * S)
    feed(kept, delivered(frames, blocks, 11 * S + S // 2, 13 * S))
    summaries = kept.close()
    assert kept.audio_samples_dropped == 0 and said == []
    assert sum(s.audio_samples for s in summaries) == sum(len(b.samples) for b in blocks)
    # The cut due at 12 s came at the next keyframe (13 s), once the sound had.
    assert [s.origin_us for s in summaries[:2]] == [10 * S, 13 * S]
    assert summaries[0].last_sample_timestamp_us <= 13 * S <= summaries[1].first_sample_timestamp_us
    assert ended == list(range(len(summaries)))

    ended.clear()
    short = segmenter(S // 2)  # waits for the sound half a second past the cut due
    feed(short, delivered(frames, blocks, 11 * S + S // 2, 14 * S + S // 2))
    summaries = short.close()
    [(first_us, end_us, samples)] = said
    assert samples == short.audio_samples_dropped > 0
    assert first_us >= 11 * S + S // 2 - 60_000 and abs(end_us - 13 * S) <= 21
    assert sum(s.audio_samples for s in summaries) + samples == sum(len(b.samples)
                                                                   for b in blocks)
    assert ended == list(range(len(summaries)))


def test_a_cut_while_a_segment_waits_for_its_sound_is_declared(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    """The power goes while the cut due at 2 s still waits for the sound (the
    microphone silent since 1.5 s, its watchdog's fault declared): at the next
    start the one open segment is recovered from its durable fragments and the
    cut declared; every hole, in the video or in the sound, is a declared one."""
    with stages(unit) as rec:
        router, q = rec.router, rec.router.queue
        press_us = monotonic_us() - 30 * S
        frames, blocks = capture(clip, pcm, press_us, 4)
        session = Session()
        router.begin(session, False, RecordStart(trigger="button", category="scene",
                                                 officer="PC-0042", pre_record_seconds=0),
                     rec.appender.utc_offset_ns, press_us)
        faulted = False
        heard = [b for b in blocks if b.end_us < press_us + 15 * S // 10]  # then no more
        for item in sorted([*frames, *heard], key=lambda x: x.timestamp_us):
            if not faulted and item.timestamp_us >= press_us + 25 * S // 10:
                router.mic_watch.last_at -= MIC_TIMEOUT_S
                router.camera_watch.seen(item.timestamp_us)
                assert router.check_sources() == (False, True)
                faulted = True
            q.put(item)
        barrier = Barrier()
        q.put(barrier)
        assert barrier.passed.wait(30)
        waiting = [f for f in rec.seal._files.values() if f.sealer is not None]
        assert len(waiting) == 1  # no cut yet: the segment goes on, waiting for its sound
        for file in waiting:  # what the cut leaves on the medium
            file.sealer.wait_durable()
    with recorder_on_sim(unit, segment_seconds=2, video=f"{WIDTH}x{HEIGHT}@{FPS}") as rec:
        rec.recover_cut()
    report = unit.verify()
    assert not report.errors, report.errors
    recording = session.seq.result(0)
    kept = segments(unit, recording)
    [alone] = kept
    assert alone.recovered and alone.last_capture_utc_ns > (press_us + 2 * S) * 1000
    assert report.audio_gaps and all(g.declared for g in report.audio_gaps)
    assert all(g.declared for g in report.gaps)
