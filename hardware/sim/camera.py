"""Simulated camera: real H.264 (libx264 through PyAV) of a generated test picture.

Frames are paced in real time on the capture clock; each carries its frame index
in the picture (see :mod:`hardware.sim.pattern`). A lagging encoder is carried by a
few frame buffers (``buffer_frames``, six as in picamera2's video configuration);
beyond that frames are skipped, as a sensor would skip them, and the index jumps.

    >>> from hardware.camera import CameraConfig
    >>> with SimCamera(CameraConfig(width=320, height=180, fps=30)) as camera:
    ...     camera.start()
    ...     frame = camera.read(timeout=2)
    >>> frame.keyframe
    True

The encoder loop (:func:`encoder_loop`) takes only picklable arguments and talks to
its camera through queue-like objects, so ``isolation="process"`` runs it in its
own process (a spawned one: forking a process that holds audio and GPIO threads
is unsafe) to keep the encoder's memory out of the recorder's.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from hardware.camera import Camera, CameraConfig, monotonic_us
from hardware.frames import VideoFrame
from hardware.overlay import OverlayText
from hardware.sim.pattern import TestPicture


class _EventLike(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = ...) -> bool: ...


@dataclass(frozen=True, slots=True)
class EncoderJob:
    """Everything the encoder loop needs; picklable, so it can cross to a process."""

    config: CameraConfig
    epoch_us: int
    first_index: int  # frames before this one were already produced (restart)
    realtime: bool = True
    officer_id: str = ""
    wall_clock: Callable[[], float] = time.time
    threads: int = 0  # libx264 threads; 0 lets x264 choose
    buffer_frames: int = 6  # frames the "sensor" can hold while the encoder lags


def open_encoder(config: CameraConfig, threads: int = 0) -> Any:
    """A libx264 encoder set up like the Pi's: Annex B, SPS/PPS before every IDR."""
    import av  # PyAV is heavy; only the simulator and the muxer need it

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = config.width, config.height, "yuv420p"
    ctx.time_base = Fraction(1, config.fps)
    ctx.framerate = Fraction(config.fps)
    ctx.bit_rate = config.bitrate
    ctx.gop_size = config.keyframe_interval
    ctx.thread_count = threads
    k = config.keyframe_interval
    ctx.options = {
        "preset": "ultrafast",
        # zerolatency: no B-frames and no lookahead, so every frame leaves the
        # encoder as it enters (one in, one out) - like the Pi's encoders.
        "tune": "zerolatency",
        # A fixed GOP: keyframes exactly every keyframe_interval frames.
        "x264-params": f"keyint={k}:min-keyint={k}:scenecut=0",
    }
    # No GLOBAL_HEADER flag: x264 then repeats SPS/PPS before every IDR, which is
    # what picamera2's repeat=True gives and what a segment cut at an IDR needs.
    ctx.open()
    return ctx


def encoder_loop(
    job: EncoderJob,
    emit: Callable[[VideoFrame], None],
    stop: _EventLike,
    commands: Any,
) -> int:
    """Generate, encode and emit frames until ``stop`` is set. Returns the next index.

    ``commands`` is a queue of tuples: ``("keyframe",)`` or ``("officer", id)``.
    """
    import av
    from av.video.frame import PictureType

    config = job.config
    ctx = open_encoder(config, job.threads)
    picture = TestPicture(config.width, config.height, config.fps)
    overlay = (
        OverlayText(config.device_id, job.officer_id, job.wall_clock) if config.overlay else None
    )
    time_base = Fraction(1, config.fps)
    period_us = 1_000_000 / config.fps
    index = job.first_index
    if job.realtime:
        # The sensor runs from now, not from when the job was made: a spawned
        # encoder process can take a good part of a second to come up, and
        # frames stamped for that time were never captured. Stamped as caught
        # up, they would begin a recording before its press, with no sound there.
        index = max(index, -(-(monotonic_us() - job.epoch_us) * config.fps // 1_000_000))
    force_keyframe = False

    def send(frame: Any) -> None:
        for packet in ctx.encode(frame):
            emit(
                VideoFrame(
                    data=bytes(packet),
                    timestamp_us=config.time_of(packet.pts, job.epoch_us),
                    keyframe=bool(packet.is_keyframe),
                    index=int(packet.pts),
                )
            )

    while not stop.is_set():
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                break
            if command[0] == "keyframe":
                force_keyframe = True
            elif command[0] == "officer" and overlay is not None:
                overlay.officer_id = command[1]
        if job.realtime:
            due = config.time_of(index, job.epoch_us)
            wait_us = due - monotonic_us()
            if wait_us > 0 and stop.wait(wait_us / 1_000_000):
                break
            late_us = monotonic_us() - due
            if late_us >= period_us * job.buffer_frames:
                # Like the Pi's camera, frames wait in a few buffers for a lagging
                # encoder; once those are full the sensor does not wait: frames in
                # between are lost, and the index jump says so.
                index = config.index_at(monotonic_us(), job.epoch_us)
        yuv = picture.render(index, overlay)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = index
        frame.time_base = time_base
        if force_keyframe:
            frame.pict_type = PictureType.I
            force_keyframe = False
        send(frame)
        index += 1
    send(None)  # flush (with zerolatency nothing should be pending)
    return index


def _process_main(job: EncoderJob, frames: Any, stop: Any, commands: Any) -> None:
    try:
        next_index = encoder_loop(job, frames.put, stop, commands)
        frames.put(("end", next_index))
    except BaseException as exc:  # report, so the parent does not wait forever
        frames.put(("error", repr(exc)))
        raise


class SimCamera(Camera):
    """A camera made of PyAV and a test picture. See the module docstring.

    ``realtime=False`` produces frames as fast as the encoder can (timestamps stay
    nominal: frame n is at epoch + n/fps), for benchmarks and quick tests.
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        epoch_us: int | None = None,
        realtime: bool = True,
        isolation: str = "thread",
        wall_clock: Callable[[], float] = time.time,
        threads: int = 0,
        buffer_frames: int = 6,
    ) -> None:
        if isolation not in ("thread", "process"):
            raise ValueError("isolation must be 'thread' or 'process'")
        super().__init__(config, epoch_us=epoch_us)
        self.realtime = realtime
        self.isolation = isolation
        self.wall_clock = wall_clock
        self.threads = threads
        self.buffer_frames = buffer_frames
        self._next_index: int | None = None
        self._stop_event: Any = None
        self._commands: Any = None
        self._worker: Any = None
        self._pump: threading.Thread | None = None
        self.error: str | None = None

    def _job(self) -> EncoderJob:
        now_index = -(-(monotonic_us() - self.epoch_us) * self.config.fps // 1_000_000)
        first = now_index if self._next_index is None else max(now_index, self._next_index)
        if not self.realtime and self._next_index is not None:
            first = self._next_index
        return EncoderJob(
            config=self.config,
            epoch_us=self.epoch_us,
            first_index=max(0, first),
            realtime=self.realtime,
            officer_id=self.officer_id,
            wall_clock=self.wall_clock,
            threads=self.threads,
            buffer_frames=self.buffer_frames,
        )

    def _start(self) -> None:
        job = self._job()
        if self.isolation == "thread":
            self._stop_event = threading.Event()
            self._commands = queue.Queue()
            self._worker = threading.Thread(
                target=self._run_thread, args=(job,), name="sim-camera", daemon=True
            )
            self._worker.start()
        else:
            mp = multiprocessing.get_context("spawn")
            self._stop_event = mp.Event()
            self._commands = mp.Queue()
            frames = mp.Queue()
            self._worker = mp.Process(
                target=_process_main,
                args=(job, frames, self._stop_event, self._commands),
                name="sim-camera",
                daemon=True,
            )
            self._worker.start()
            self._pump = threading.Thread(
                target=self._run_pump, args=(frames,), name="sim-camera-pump", daemon=True
            )
            self._pump.start()

    def _run_thread(self, job: EncoderJob) -> None:
        try:
            self._next_index = encoder_loop(job, self._deliver, self._stop_event, self._commands)
        except Exception as exc:  # surface it; a dead camera must not look idle
            self.error = repr(exc)
            self._active = False
            self._put_marker()
            raise

    def _run_pump(self, frames: Any) -> None:
        while True:
            try:
                item = frames.get(timeout=0.5)
            except queue.Empty:
                if self._worker.is_alive():
                    continue
                item = ("error", f"encoder process exited with code {self._worker.exitcode}")
            if isinstance(item, VideoFrame):
                self._deliver(item)
                continue
            kind, value = item
            if kind == "end":
                self._next_index = value
            else:
                self.error = value
                self._active = False
                self._put_marker()
            return

    def _stop(self) -> None:
        self._stop_event.set()
        if self.isolation == "thread":
            self._worker.join()
        else:
            assert self._pump is not None
            self._pump.join(timeout=10)
            self._worker.join(timeout=5)
            if self._worker.is_alive():  # pragma: no cover - a wedged encoder
                self._worker.terminate()

    def _request_keyframe(self) -> None:
        if self._commands is not None:
            self._commands.put(("keyframe",))

    def _overlay_changed(self) -> None:
        if self._commands is not None:
            self._commands.put(("officer", self.officer_id))
