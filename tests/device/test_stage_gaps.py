"""Every gap the recorder leaves is declared, whatever the CPU does: the mux and seal
stages fed timed capture with a stall, then cut, in process and faster than real time.

On a loaded machine (and a Pi Zero 2 W always is one) the camera starts late:
the watchdog declares a camera fault, audio goes on alone, the camera comes
back. These tests put exactly that timeline on the capture queue as the
router would — so they need no load and no real time — then cut the power
before the first video segment is sealed, recover it as the next start does,
and judge the ledger with ``verify``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from device.recorder import Recorder
from device.recorder.messages import Barrier, CameraBack, End, Session, Stop
from device.recorder.router import CAMERA_TIMEOUT_S
from device.segmenter import Segmenter
from hardware.camera import monotonic_us
from hardware.frames import AudioBlock, VideoFrame
from protocol.entries import Interruption, RecordStart, Segment
from tests.conftest import Unit
from tests.device.conftest import AUDIO_RATE, FPS, HEIGHT, WIDTH, EncodedClip, audio_blocks
from tests.device.simrun import recorder_on_sim

S = 1_000_000  # µs


@contextmanager
def stages(unit: Unit) -> Iterator[Recorder]:
    """A recorder's mux and seal stages running on their own (no capture threads)."""
    with recorder_on_sim(unit, segment_seconds=2, video=f"{WIDTH}x{HEIGHT}@{FPS}") as rec:
        threads = [threading.Thread(target=rec.mux.run, daemon=True),
                   threading.Thread(target=rec.seal.run, daemon=True)]
        for t in threads:
            t.start()
        try:
            yield rec
        finally:
            rec.router.queue.put(End())
            for t in threads:
                t.join(timeout=30)


def late_camera_then_cut(rec: Recorder, clip: EncodedClip, pcm: np.ndarray) -> int:
    """Press at 0 with the camera not yet delivering; the watchdog's fault at 1 s; the
    camera's first frame at 2.7 s; the power cut at 3.9 s, before the first video
    segment (which holds audio from 2.6 s, before its first keyframe) is sealed.

    The press and the fault go through the capture router as the façade and the
    watchdog make them; capture goes on the queue as the router would route it.
    Returns the press's capture time.
    """
    router, q = rec.router, rec.router.queue
    press_us = monotonic_us() - 10 * S  # in the past: capture is never after its entry
    blocks = audio_blocks(pcm[: 4 * AUDIO_RATE], press_us)
    frames = [VideoFrame(f.data, press_us + 27 * S // 10 + i * S // FPS, f.keyframe, f.index)
              for i, f in enumerate(clip.frames()[: 18])]  # 2.7 s to 3.83 s: two keyframes
    session = Session()
    router.begin(session, False, RecordStart(trigger="button", category="scene",
                                             officer="PC-0042", pre_record_seconds=0),
                 rec.appender.utc_offset_ns, press_us)
    timeline: list[tuple[int, object]] = [(b.timestamp_us, b) for b in blocks]
    timeline += [(f.timestamp_us, f) for f in frames]
    timeline.sort(key=lambda x: (x[0], isinstance(x[1], AudioBlock)))
    fault_at, back_at = press_us + S, press_us + 26 * S // 10
    faulted = back = False
    for at, item in timeline:
        if at > press_us + 39 * S // 10:
            break
        if not faulted and at >= fault_at:  # the watchdog: no frame for a second
            router.camera_watch.last_at -= CAMERA_TIMEOUT_S
            assert router.check_sources() == (True, False)
            faulted = True
        if not back and at >= back_at:
            q.put(CameraBack())  # the camera's first frame, routed: video resumes
            back = True
        if isinstance(item, AudioBlock):
            router.mic_watch.seen(item.end_us)
        q.put(item)
    barrier = Barrier()
    q.put(barrier)
    assert barrier.passed.wait(30)
    for file in list(rec.seal._files.values()):  # what the cut leaves on the medium
        if file.sealer is not None:
            file.sealer.wait_durable()
    assert session.seq.result(0) > 0
    return press_us


def segments(unit: Unit, recording: int) -> list[Segment]:
    return [e.entry.body for e in unit.entries()
            if isinstance(e.entry.body, Segment) and e.entry.body.recording == recording]


def test_a_cut_after_a_late_camera_leaves_no_undeclared_gap(unit: Unit, clip: EncodedClip,
                                                            pcm: np.ndarray) -> None:
    with stages(unit) as rec:
        press_us = late_camera_then_cut(rec, clip, pcm)
        offset_ns = rec.appender.utc_offset_ns
    # The next start: what the cut left in pending/ is sealed, the cut declared.
    with recorder_on_sim(unit, segment_seconds=2, video=f"{WIDTH}x{HEIGHT}@{FPS}") as rec:
        rec.recover_cut()
    report = unit.verify()
    assert not report.errors, report.errors
    recording = report.recordings[-1].recording
    *audio_only, video = segments(unit, recording)
    # the whole fragments of 18 frames given: all but the one in flight at the cut
    assert audio_only and all(s.frames == 0 for s in audio_only)
    assert video.recovered and 10 <= video.frames < 18
    # Each segment begins where the one before ends; the recovered one with the audio
    # it holds from before its first keyframe, not at that keyframe.
    for before, after in zip(audio_only, [*audio_only[1:], video], strict=True):
        assert after.first_capture_utc_ns - before.last_capture_utc_ns == pytest.approx(
            before.frame_period_ns, abs=1_000)
    assert {g.reason for g in report.gaps} <= {"camera_fault", "crash", "power_loss"}
    assert all(g.declared for g in report.gaps)
    # Nothing lost to the late camera: the audio from the press on is kept (audio-only),
    # and the camera fault is declared from the press, when video was first missing.
    assert audio_only[0].first_capture_utc_ns == press_us * 1000 + offset_ns
    [fault] = [i for i in report.interruptions if i.reason == "camera_fault"]
    cut = unit.entries()[fault.seq].entry.body
    assert cut.cut_utc_ns == press_us * 1000 + offset_ns


def test_a_stop_before_the_cameras_first_frame_keeps_the_audio(unit: Unit,
                                                               pcm: np.ndarray) -> None:
    """Under load a press and a stop can both come before the camera delivers (and
    before its watchdog fires): the span's audio is sealed alone, not dropped."""
    with stages(unit) as rec:
        router, q = rec.router, rec.router.queue
        press_us = monotonic_us() - 10 * S
        session = Session()
        router.begin(session, False, RecordStart(trigger="button", category="scene",
                                                 officer="PC-0042", pre_record_seconds=0),
                     rec.appender.utc_offset_ns, press_us)
        blocks = audio_blocks(pcm[: 3 * AUDIO_RATE // 10], press_us)  # 0.3 s
        for block in blocks:
            q.put(block)
        q.put(Stop("button"))  # no frame came: the router does not wait for the camera
        barrier = Barrier()
        q.put(barrier)
        assert barrier.passed.wait(30)
        offset_ns = rec.appender.utc_offset_ns
        assert rec.stats.dropped_samples == 0
    recording = session.seq.result(0)
    [alone] = segments(unit, recording)
    assert (alone.frames, alone.audio_samples) == (0, sum(len(b.samples) for b in blocks))
    assert alone.first_capture_utc_ns == press_us * 1000 + offset_ns
    assert unit.entries()[-1].entry.kind == "record_stop"
    report = unit.verify()
    assert not report.errors, report.errors


def test_the_segmenter_leaves_audio_without_a_segment_to_its_caller(
        clip: EncodedClip, pcm: np.ndarray) -> None:
    """No keyframe came: its audio is left for the caller, not dropped. A keyframe held
    (waiting for the audio to catch up) still begins a segment at close, with that
    audio: it is not taken from it."""
    blocks = audio_blocks(pcm[: AUDIO_RATE // 2], 10 * S)  # 10 s to 10.5 s
    opened: list = []

    def segmenter() -> Segmenter:
        return Segmenter(lambda n: opened.append(io.BytesIO()) or opened[-1], width=WIDTH,
                         height=HEIGHT, fps=FPS, segment_us=2 * S)

    alone = segmenter()
    for block in blocks:
        alone.add_audio(block)
    assert alone.close() == [] and alone.unplaced_audio == blocks
    assert alone.audio_samples_dropped == 0

    held = segmenter()
    for block in blocks:
        held.add_audio(block)
    key = clip.frames()[0]
    held.add_video(VideoFrame(key.data, 10 * S + 6 * S // 10, True, key.index))  # after it
    [summary] = held.close()
    assert held.unplaced_audio == [] and held.audio_samples_dropped == 0
    assert summary.origin_us == 10 * S
    assert summary.audio_samples == sum(len(b.samples) for b in blocks)


@pytest.mark.parametrize("reason, declared_again", [
    ("camera_fault", True), ("mic_fault", True), ("battery", False), ("storage_full", False)])
def test_a_cut_after_an_unresumed_interruption_is_declared_unless_it_ended_capture(
        unit: Unit, reason: str, declared_again: bool) -> None:
    """The cut between a capture fault's ``interruption`` and its ``resume`` (a hard-kill
    fault trial found one): the recorder was still running, so the next start declares
    the cut too. After a battery or storage interruption it was not (it stopped on
    purpose), and the cut is that interruption's own."""
    with recorder_on_sim(unit) as rec:
        start = rec.appender.append(RecordStart(
            trigger="button", category="scene", officer="PC-0042", pre_record_seconds=0))
        cut_ns = time.time_ns()
        rec.appender.append(Interruption(reason=reason, detected_by="test", cut_utc_ns=cut_ns,
                                         recording=start.entry.seq))
    with recorder_on_sim(unit) as rec:  # the power came back
        rec.recover_cut()
    report = unit.verify()
    assert not report.errors, report.errors
    reasons = [i.reason for i in report.interruptions]
    assert reasons == ([reason, "crash"] if declared_again else [reason])
