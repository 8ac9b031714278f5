"""Camera contract: the simulator here, picamera2 on a Pi (``pytest -m hardware``)."""

from __future__ import annotations

import io
import queue
import threading
import time

import av
import pytest

from hardware.camera import Camera, CameraConfig, monotonic_us
from hardware.factory import HardwareFactory
from hardware.overlay import INK, PAPER
from hardware.sim.camera import EncoderJob, SimCamera, encoder_loop
from hardware.sim.pattern import read_frame_index

SMALL = CameraConfig(width=320, height=180, fps=30, bitrate=400_000, keyframe_interval=15)


@pytest.fixture(params=["sim", pytest.param("pi", marks=pytest.mark.hardware)])
def factory(request, sim_hardware) -> HardwareFactory:
    if request.param == "pi":
        factory = request.getfixturevalue("pi_factory")  # skips off a Pi
        pytest.importorskip("picamera2", reason="picamera2 needs Raspberry Pi OS")
        return factory
    return sim_hardware


def nal_types(data: bytes) -> list[int]:
    """NAL unit types in an Annex B access unit."""
    types, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def take(camera: Camera, count: int, timeout: float = 3.0) -> list:
    frames = []
    while len(frames) < count:
        frame = camera.read(timeout)
        assert frame is not None, f"camera stopped delivering after {len(frames)} frames"
        frames.append(frame)
    return frames


def decode(frames) -> list:
    stream = b"".join(f.data for f in frames)
    return list(av.open(io.BytesIO(stream), format="h264").decode(video=0))


def test_frames_are_decodable_h264_with_times_and_indices(factory) -> None:
    with factory.camera(SMALL) as camera:
        assert not camera.is_active
        started = monotonic_us()
        camera.start()
        assert camera.is_active
        frames = take(camera, 31)
    assert not camera.is_active and camera.closed
    first = frames[0]
    assert first.keyframe, "a stream must start with an IDR"
    assert {7, 8, 5} <= set(nal_types(first.data)), "SPS, PPS and IDR slice"
    # One frame period apart, consecutive indices, on the monotonic capture clock.
    period = 1_000_000 / SMALL.fps
    for a, b in zip(frames, frames[1:], strict=False):
        assert b.index == a.index + 1
        assert abs(b.timestamp_us - a.timestamp_us - period) < period * 0.2
    assert started - 100_000 < first.timestamp_us < started + 3_000_000
    # A keyframe (with SPS/PPS repeated) every keyframe_interval frames.
    keyframes = [i for i, f in enumerate(frames) if f.keyframe]
    assert keyframes == [0, 15, 30]
    assert all({7, 8} <= set(nal_types(frames[i].data)) for i in keyframes)
    pictures = decode(frames)
    assert len(pictures) == len(frames)
    assert (pictures[0].width, pictures[0].height) == (SMALL.width, SMALL.height)


def test_forced_keyframe_comes_at_once(factory) -> None:
    with factory.camera(SMALL, keyframe_interval=300) as camera:
        camera.start()
        frames = take(camera, 5)
        camera.request_keyframe()
        frames += take(camera, 10)
    forced = [i for i, f in enumerate(frames) if f.keyframe and i > 0]
    assert forced, "request_keyframe() was ignored"
    assert forced[0] <= 5 + 3  # within a few frames of the request (queue latency)
    assert {7, 8} <= set(nal_types(frames[forced[0]].data))


def test_restart_continues_the_count_and_shows_lost_time(factory) -> None:
    with factory.camera(SMALL) as camera:
        camera.start()
        before = take(camera, 5)
        camera.stop()
        leftover = list(camera.frames(timeout=0.5))
        time.sleep(0.5)
        camera.start()
        after = take(camera, 5)
    last = (leftover or before)[-1]
    gap = after[0].index - last.index
    # ~0.5 s stopped (plus start-up) at 30 fps: about 15 frame periods, never a restart at 0.
    assert 12 <= gap <= 15 + 60
    assert after[0].keyframe
    assert after[0].timestamp_us - last.timestamp_us >= 500_000
    assert camera.dropped_frames == 0  # a stop is not a loss


def test_overlay_can_be_switched_off(factory) -> None:
    def overlay_box(overlay: bool):
        with factory.camera(SMALL, overlay=overlay, device_id="BWC-9", officer_id="77") as cam:
            cam.start()
            picture = decode(take(cam, 1))[0].to_ndarray(format="gray")
        box = picture[-10:-2, 2:200]  # where the text line sits at 180p
        return int((box > INK - 40).sum()), int((box < PAPER + 30).sum())

    ink, paper = overlay_box(True)
    assert ink > 40 and paper > 200  # light strokes on a dark box
    if factory.name == "sim":  # a real scene may be anything without the overlay
        ink_off, paper_off = overlay_box(False)
        assert ink_off < ink // 4 and paper_off < paper // 4


# -- simulator specifics ------------------------------------------------------------------


def test_sim_frames_carry_their_index_in_the_picture(sim_hardware) -> None:
    with sim_hardware.camera(SMALL) as camera:
        camera.start()
        frames = take(camera, 20)
    assert [read_frame_index(p) for p in decode(frames)] == [f.index for f in frames]
    # The index counts frame periods since the epoch; the timestamp is its start.
    for f in frames:
        assert f.timestamp_us == camera.epoch_us + f.index * 1_000_000 // SMALL.fps


def test_sim_is_paced_in_real_time() -> None:
    with SimCamera(SMALL) as camera:
        camera.start()
        take(camera, 1)
        t0 = time.monotonic()
        take(camera, 30)
        elapsed = time.monotonic() - t0
    assert 0.85 < elapsed < 1.5, f"30 frames at 30 fps took {elapsed:.2f} s"


def test_sim_epoch_is_a_setting() -> None:
    epoch = monotonic_us() - 10_000_000  # the "camera" has existed for ten seconds
    with SimCamera(SMALL, epoch_us=epoch) as camera:
        camera.start()
        frame = take(camera, 1)[0]
    assert 300 <= frame.index <= 300 + 30
    assert read_frame_index(decode([frame])[0]) == frame.index


def test_slow_consumer_loses_frames_visibly_not_silently() -> None:
    config = CameraConfig(width=320, height=180, fps=30, queue_frames=5)
    with SimCamera(config) as camera:
        camera.start()
        time.sleep(0.6)  # nobody reads: the queue fills, the camera keeps going
        frames = take(camera, 10)
    assert camera.dropped_frames > 5
    assert any(b.index - a.index > 1 for a, b in zip(frames, frames[1:], strict=False))


def test_unpaced_sim_runs_faster_than_real_time() -> None:
    with SimCamera(SMALL, realtime=False) as camera:
        camera.start()
        t0 = time.monotonic()
        frames = take(camera, 90)
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0  # 3 s of video
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 90))


def test_sim_encoder_runs_in_its_own_process() -> None:
    with SimCamera(SMALL, isolation="process") as camera:
        camera.start()
        frames = take(camera, 10, timeout=15)
        camera.request_keyframe()
        camera.officer_id = "4712"  # crosses to the encoder process like the keyframe
        frames += take(camera, 8)
    assert camera.error is None
    assert [read_frame_index(p) for p in decode(frames)] == [f.index for f in frames]
    assert sum(f.keyframe for f in frames) >= 2


def test_camera_config_is_validated() -> None:
    with pytest.raises(ValueError):
        CameraConfig(width=321)
    with pytest.raises(ValueError):
        CameraConfig(fps=0)
    with pytest.raises(ValueError):
        SimCamera(SMALL, isolation="fiber")


def test_sim_frames_are_not_stamped_before_the_encoder_ran() -> None:
    """A job made before a slow start (a spawned encoder process coming up under
    load) must not stamp frames for the time the encoder was not yet running:
    caught up, they began a recording 0.3 s before its press, with no sound there."""
    config = CameraConfig(width=320, height=180, fps=10, keyframe_interval=20)
    made_us = monotonic_us() - 300_000  # the job was made, the process took 0.3 s to start
    job = EncoderJob(config=config, epoch_us=made_us, first_index=0)
    stop, frames = threading.Event(), []

    def emit(frame) -> None:
        frames.append(frame)
        stop.set()

    started_us = monotonic_us()
    encoder_loop(job, emit, stop, queue.Queue())
    assert frames[0].keyframe
    assert frames[0].timestamp_us >= started_us, (
        f"first frame stamped {(started_us - frames[0].timestamp_us) / 1e6:.3f} s "
        f"before the encoder started")
