"""The life of a systemd service, the same for the recorder and the dock.

SIGTERM and SIGINT end it (they only set :attr:`ServiceLife.stopped`: the
service winds down in its own thread, at its own pace); ``READY=1`` says it
has started, and from then the watchdog is pinged every half timeout while
``healthy()`` says it makes progress (a stuck service stops the pings, and
systemd restarts it); ``STOPPING=1`` says a clean stop has begun. Outside
systemd the notifications are no-ops (:mod:`host.sdnotify`).

>>> life = ServiceLife(healthy=lambda: True, environ={})
>>> with life:              # in the main thread: SIGTERM, SIGINT now end it
...     life.ready("serving")
...     life.stop()         # what a SIGTERM does
...     life.wait()
True
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Mapping

from hardware.host.sdnotify import SystemdNotifier, WatchdogPinger, watchdog_interval

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServiceLife:
    """Stop signals, readiness, the watchdog while healthy, and the stop notice."""

    def __init__(self, healthy: Callable[[], bool] = lambda: True,
                 notifier: SystemdNotifier | None = None,
                 environ: Mapping[str, str] | None = None):
        self.notifier = notifier or SystemdNotifier(environ)
        #: Seconds between watchdog pings, or None when systemd watches nothing.
        self.interval = watchdog_interval(environ)
        self.healthy = healthy
        self.stopped = threading.Event()
        self._pinger: WatchdogPinger | None = None
        self._lock = threading.Lock()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ServiceLife:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, lambda *_: self.stopped.set())
        return self

    def ready(self, status: str = "") -> None:
        """``READY=1`` (with a status line); the watchdog pings begin."""
        self.notifier.ready(status)
        with self._lock:
            if self.interval and self._pinger is None:
                self._pinger = WatchdogPinger(self.notifier, self.interval, self.healthy).start()

    def stop(self) -> None:
        self.stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until a stop signal or :meth:`stop`; True once stopped."""
        return self.stopped.wait(timeout)

    async def wait_async(self) -> None:
        """:meth:`wait` for a service whose main thread runs an asyncio loop."""
        await asyncio.to_thread(self.stopped.wait)

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()  # also releases a waiter, whatever ended the service
        self.notifier.stopping()
        with self._lock:
            if self._pinger is not None:
                self._pinger.stop()
                self._pinger = None
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
