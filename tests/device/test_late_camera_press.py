"""A camera slower to deliver than the microphone at the press: the span begins at the
press for both, so no segment claims time before it that it holds no sound for.

Frames reach the router some time after their capture (the camera's pipeline; a
simulated encoder process coming up under load: 0.3 s in a booted container).
Audio of the moments before a press with no pre-record is in no buffer; a
frame from then, routed to the span because it came after the press, began the
first segment 0.3 s before the press with no sound there: ``undeclared_audio_gap``.
Routed through the real router, mux and seal stages, without real time.
"""

from __future__ import annotations

import numpy as np

from device.recorder.messages import Barrier, Session, Stop
from hardware.camera import monotonic_us
from hardware.frames import VideoFrame
from protocol.entries import RecordStart
from tests.conftest import Unit
from tests.device.conftest import AUDIO_RATE, FPS, EncodedClip, audio_blocks
from tests.device.test_stage_gaps import segments, stages

S = 1_000_000  # µs


def test_frames_from_before_the_press_delivered_after_it_leave_no_silent_start(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    source = clip.frames()
    idr = next(f for f in source if f.keyframe)
    inter = [f for f in source if not f.keyframe]
    with stages(unit) as rec:
        router, q = rec.router, rec.router.queue
        router.camera = rec.hardware.camera(width=320, height=180, fps=FPS)
        router.microphone = rec.hardware.microphone()
        press_us = monotonic_us() - 10 * S  # in the past: capture is never after its entry
        early = 6  # frames captured in the 0.4 s before the press
        # The camera's first keyframe 0.4 s before the press; the one the press asks for,
        # the first frame captured after it; then one a second.
        keys = {0, early, early + FPS, early + 2 * FPS}
        frames = [VideoFrame((idr if i in keys else inter[i % len(inter)]).data,
                             press_us + (i - early) * S // FPS, i in keys, i)
                  for i in range(early + 3 * FPS)]
        sound = np.tile(pcm, 4)[: 3 * AUDIO_RATE]  # to the end of the last frame
        blocks = audio_blocks(sound, press_us)  # the microphone, from the press
        session = Session()
        router.begin(session, False, RecordStart(trigger="button", category="scene",
                                                 officer="PC-0042", pre_record_seconds=0),
                     rec.appender.utc_offset_ns, press_us)
        # Delivered after the press: the frames from before it at once, then capture
        # as it comes.
        for frame in frames[:early]:
            router.route(frame, frame.timestamp_us)
        live = sorted([*frames[early:], *blocks], key=lambda x: x.timestamp_us)
        for item in live:
            router.route(item, item.timestamp_us)
        q.put(Stop("button"))
        barrier = Barrier()
        q.put(barrier)
        assert barrier.passed.wait(60)
        offset_ns = rec.appender.utc_offset_ns
    report = unit.verify()
    assert not report.errors, report.errors
    first, *_ = segments(unit, session.seq.result(0))
    # The span begins at the press, where its sound does; every frame from then is kept.
    assert first.first_capture_utc_ns == press_us * 1000 + offset_ns
    kept = sum(s.frames for s in segments(unit, session.seq.result(0)))
    assert kept == len(frames) - early
    assert sum(s.audio_samples for s in segments(unit, session.seq.result(0))) == len(sound)
