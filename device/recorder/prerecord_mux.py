"""The pre-record part of a span, muxed on its own thread while live capture goes on.

A press with a full pre-record buffer (30 s of 1280x720) used to mux and hand
to sealing the whole buffer before the mux thread took the first live frame:
~0.4 s from the press to that frame. Now the buffer is cut at its last
keyframe (``device/prerecord.py``): the part before it is muxed here, into
segment(s) of its own, by :class:`PreRecordPart` on its own thread, while the
mux thread starts the live segment at once with the last group of pictures.

Nothing changes in the ledger's or the medium's order. While the part is
being written, everything the mux stage sends to the seal stage (the live
segment's bytes, its fragment ends, declarations, stops, markers) waits in
:class:`OrderedSeal`, in order, and follows the part's last ``SealFile``: the
seal stage sees the files one after the other, exactly as before, so the part
is sealed, hashed and chained first, and a cut meanwhile is recovered as any
cut is. Only the handing over runs side by side. ADR 0061.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import deque
from collections.abc import Callable

from device.recorder.messages import SealMessage
from device.recorder.seal import SealQueue
from device.recorder.stats import RecorderStats
from device.segmenter import Segmenter
from hardware.frames import AudioBlock, VideoFrame

log = logging.getLogger(__name__)


class OrderedSeal:
    """The seal queue as the mux stage puts to it: behind a part still being written.

    ``hold()`` starts holding (the mux thread, before it starts a part);
    ``release()`` (the part's thread, after its last message) sends what was
    held, in order, and lets puts through again. What is held is bounded like
    the queue itself: past ``max_bytes`` a put waits for the release
    (back-pressure, as a full seal queue gives).

    >>> seal = OrderedSeal(SealQueue(1 << 20))
    >>> seal.hold(); seal.put("live bytes", 10); seal.queue.qsize(), seal.qsize()
    (0, 1)
    >>> seal.release(); seal.queue.qsize()
    1
    """

    def __init__(self, queue: SealQueue):
        self.queue = queue
        self.max_bytes = queue.max_bytes
        self._held: deque[tuple[SealMessage, int]] | None = None
        self._held_bytes = 0
        self._cv = threading.Condition()

    @property
    def holding(self) -> bool:
        return self._held is not None

    def qsize(self) -> int:
        """Messages on their way to the seal stage: in the queue, and held."""
        held = self._held
        return self.queue.qsize() + (len(held) if held is not None else 0)

    def put(self, message: SealMessage, nbytes: int = 0) -> None:
        with self._cv:
            while (self._held is not None and self._held_bytes
                   and self._held_bytes + nbytes > self.max_bytes):
                self._cv.wait()
            if self._held is not None:
                self._held.append((message, nbytes))
                self._held_bytes += nbytes
                return
        # Only the mux thread starts holding, and it is the one putting: no race here.
        self.queue.put(message, nbytes)

    def hold(self) -> None:
        with self._cv:
            while self._held is not None:  # a part before it is still being written
                self._cv.wait()
            self._held, self._held_bytes = deque(), 0

    def release(self) -> None:
        with self._cv:
            held, self._held = self._held or deque(), None
            # Under the lock: a put meanwhile waits, so it stays behind these.
            for message, nbytes in held:
                self.queue.put(message, nbytes)
            self._held_bytes = 0
            self._cv.notify_all()

    def wait_released(self, timeout: float | None = None) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._held is None, timeout)


class PreRecordPart:
    """One span's pre-record part: ``frames`` and ``blocks`` through ``segmenter`` into
    segment(s) of their own, on a thread, then :meth:`OrderedSeal.release`.

    ``segmenter`` is made by the mux stage (its files already named, its
    segment ends put straight on the seal queue, never held).
    """

    def __init__(self, segmenter: Segmenter, frames: list[VideoFrame], blocks: list[AudioBlock],
                 seal: OrderedSeal, stats: RecorderStats, expected_segments: int,
                 signal: Callable[[str], None]):
        self.segmenter, self.frames, self.blocks = segmenter, frames, blocks
        self.seal, self.stats, self.expected = seal, stats, expected_segments
        self._signal = signal
        self.thread = threading.Thread(target=self._run, name="recorder-prerecord", daemon=True)

    def start(self) -> None:
        self.seal.hold()
        self.thread.start()

    def _run(self) -> None:
        try:
            # In capture order, as live capture comes (see MuxStage).
            for item in heapq.merge(self.frames, self.blocks, key=lambda x: x.timestamp_us):
                if isinstance(item, VideoFrame):
                    self.segmenter.add_video(item)
                else:
                    self.segmenter.add_audio(item)
            summaries = self.segmenter.close()
            self.stats.dropped_samples += self.segmenter.audio_samples_dropped
            if len(summaries) != self.expected:  # the names given out would not match
                raise RuntimeError(f"the pre-record part made {len(summaries)} segments, "
                                   f"{self.expected} were named")
        except Exception as e:  # the live segment goes on; the fault is shown
            self.stats.last_error = f"mux (pre-record): {e}"
            log.exception("pre-record part")
            self._signal("error")
        finally:
            self.seal.release()
