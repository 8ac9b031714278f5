"""What the recorder's status says of the latest press: when its first frame came
(``press_to_frame_ms``), or that none came yet so long after it (``since_press_ms``).

The fault trials judge each cut's loss from it (tests/faults/trials.py): after a
restart the camera is late (its own process starting, or declared faulted and
back), and the status just before the cut must still speak of that press —
never of the press before it, never nothing.
"""

from __future__ import annotations

import numpy as np

from device.recorder.messages import Barrier, Session, Stop
from hardware.camera import monotonic_us
from hardware.frames import VideoFrame
from protocol.entries import RecordStart
from tests.conftest import Unit
from tests.device.conftest import FPS, EncodedClip
from tests.device.test_stage_gaps import late_camera_then_cut, stages

S = 1_000_000  # µs


def press(rec, press_us: int) -> Session:
    session = Session()
    rec.router.begin(session, False, RecordStart(trigger="button", category="scene",
                                                 officer="PC-0042", pre_record_seconds=0),
                     rec.appender.utc_offset_ns, press_us)
    return session


def settle(rec) -> None:
    barrier = Barrier()
    rec.router.queue.put(barrier)
    assert barrier.passed.wait(30)


def test_the_status_speaks_of_the_latest_press_only(unit: Unit, clip: EncodedClip) -> None:
    with stages(unit) as rec:
        assert rec.stats.latest_press(monotonic_us()) == {"press_to_frame_ms": None,
                                                          "since_press_ms": None}
        first_us = monotonic_us() - 10 * S
        press(rec, first_us)
        settle(rec)
        before = rec.stats.latest_press(monotonic_us())
        assert before["press_to_frame_ms"] is None and before["since_press_ms"] >= 10_000
        key = clip.frames()[0]
        rec.router.queue.put(VideoFrame(key.data, first_us + S // FPS, True, key.index))
        settle(rec)
        framed = rec.stats.latest_press(monotonic_us())["press_to_frame_ms"]
        assert framed is not None and framed >= 10_000
        rec.router.end(Stop("button"), first_us + 2 * S)
        rec.router.finish_ending()
        second_us = monotonic_us() - 5 * S
        press(rec, second_us)
        settle(rec)
        # A new press, no frame yet: not the first press's figure.
        after = rec.stats.latest_press(monotonic_us())
        assert after["press_to_frame_ms"] is None and 5_000 <= after["since_press_ms"] < 10_000


def test_a_camera_late_past_its_watchdog_still_gives_the_press_its_first_frame(
        unit: Unit, clip: EncodedClip, pcm: np.ndarray) -> None:
    """The camera late after a boot: a camera fault declared at 1 s, audio alone, the
    camera back at 2.7 s in a new span. That span's first frame is the press's
    (before: the new span counted as having had it, and the status said nothing)."""
    with stages(unit) as rec:
        press_us = late_camera_then_cut(rec, clip, pcm)
        seen = rec.stats.latest_press(monotonic_us())
        assert rec.stats.press_us == press_us
        assert seen["press_to_frame_ms"] is not None
        assert seen["press_to_frame_ms"] >= 2_700  # its first frame, 2.7 s after the press
