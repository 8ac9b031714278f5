"""The lifecycle every capture device shares: start, stop, close, and reading its output.

A :class:`CaptureSource` owns a bounded queue between a capture thread (a driver
callback, an encoder thread) and one consumer. The camera and the microphone are
both capture sources; they differ only in what they capture and how it is stamped.

    >>> from hardware.sim.microphone import SimMicrophone
    >>> with SimMicrophone() as mic:        # any CaptureSource
    ...     mic.start()
    ...     block = mic.read(timeout=1)     # the next item, or None
    ...     mic.stop()                      # a reader blocked in read() wakes with None
"""

from __future__ import annotations

import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Generic, Self, TypeVar

T = TypeVar("T")


class CaptureSource(ABC, Generic[T]):
    """A device that captures items of type ``T`` and hands them over through a queue.

    The public vocabulary is :meth:`start`, :meth:`stop`, :meth:`close`,
    :meth:`read`, :attr:`is_active` and :attr:`closed`; a source is also a context
    manager that closes on exit. A backend implements:

    * ``_start()`` - begin capturing (open the stream, start the thread);
    * ``_stop()`` - stop capturing; items already queued stay readable;
    * ``_close()`` - release the device for good (optional: the default does nothing);

    and puts each captured item on the queue itself, without blocking (the
    subclass's ``_deliver`` decides what a full queue costs). ``_prepare()`` may
    reset per-run state just before ``_start()``. All three ``_start``/``_stop``/
    ``_close`` run under the source's lock, so they never overlap each other.
    """

    #: What the device is called in error messages: "camera is closed".
    _kind = "capture source"

    def __init__(self, queue_size: int) -> None:
        # None on the queue is a marker, not an item: it means "stopped" (see stop()).
        self._queue: queue.Queue[T | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._active = False
        self._closed = False

    @property
    def is_active(self) -> bool:
        """True while the device is capturing."""
        return self._active

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Start capturing. Items arrive through :meth:`read`."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._kind} is closed")
            if self._active:
                return
            # Items left from an earlier run stay readable; its stop marker does not.
            self._drain_markers()
            self._prepare()
            self._start()
            self._active = True

    def stop(self) -> None:
        """Stop capturing; items already captured stay readable."""
        with self._lock:
            if not self._active:
                return
            self._active = False
            self._stop()
            self._put_marker()

    def close(self) -> None:
        """Stop and release the device. Safe to call twice."""
        self.stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    def read(self, timeout: float | None = None) -> T | None:
        """The next item, or None on timeout or once the device has stopped."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses --------------------------------------------------------

    def _items(self, timeout: float) -> Iterator[T]:
        """Items until the device stops or ``timeout`` passes with none.

        The public iterators (``Camera.frames``, ``Microphone.blocks``) are this,
        under the name that fits what they capture.
        """
        while True:
            item = self.read(timeout)
            if item is None:
                return
            yield item

    def _put_marker(self) -> None:
        # A None wakes a reader blocked in read() when the device stops. If the queue
        # is full the reader is not blocked, and will see the items first anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _drain_markers(self) -> None:
        """Drop stop markers left in the queue, keeping the items around them."""
        kept = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)

    def _prepare(self) -> None:
        return None  # no per-run state by default

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...

    def _close(self) -> None:
        return None  # nothing to release by default
