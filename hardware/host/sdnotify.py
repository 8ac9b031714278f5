"""systemd readiness and watchdog notifications (sd_notify), stdlib only.

The recorder and the dock run as ``Type=notify`` services with ``WatchdogSec=``. systemd
passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace) and, with a watchdog, its timeout in ``$WATCHDOG_USEC``.
A notification is one datagram of newline-separated ``KEY=value`` lines.

Outside systemd (tests, ``custody sim``, a developer's shell) every call is a
no-op returning False, so callers never need to ask where they run. A failed
send is logged and returns False; it never raises into the recorder.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


def _socket_address(notify_socket: str) -> str | bytes:
    # "@name" is the abstract namespace: the address is a NUL byte then the name.
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


def _one_line(text: str) -> str:
    # A newline would start another KEY=value assignment in the datagram.
    return " ".join(text.splitlines())


class SystemdNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``, or does nothing outside systemd.

    >>> notifier = SystemdNotifier(environ={})
    >>> notifier.enabled
    False
    >>> notifier.ready(status="recording idle")
    False
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        notify_socket = env.get("NOTIFY_SOCKET", "")
        # Only paths and abstract names are AF_UNIX; systemd also allows
        # "vsock:" addresses (VMs), which a body-worn device never gets.
        usable = notify_socket.startswith(("/", "@"))
        self.address: str | bytes | None = _socket_address(notify_socket) if usable else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one datagram; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # Never block the recorder on a busy systemd: a dropped
                    # ping is retried at the next interval.
                    self._sock.setblocking(False)
                self._sock.sendto(message, self.address)
            except OSError as exc:
                logger.warning("sd_notify %r failed: %s", assignments, exc)
                return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
        if status:
            return self.notify("READY=1", f"STATUS={_one_line(status)}")
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        """Tell systemd a clean shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None if no watchdog.

    None also when ``$WATCHDOG_PID`` names another process: the variables were
    inherited from a parent that systemd watches, not meant for us.

    >>> watchdog_interval({"WATCHDOG_USEC": "20000000"})
    10.0
    >>> watchdog_interval({}) is None
    True
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != os.getpid():
                return None
        except ValueError:
            return None
    # Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping is not fatal.
    return usec / 2 / 1_000_000


class WatchdogPinger:
    """Pings the systemd watchdog every ``interval`` seconds while ``healthy()`` is True.

    ``healthy`` should say whether the recorder is making progress (e.g. the
    sealer closed a fragment recently). While it returns False, or raises, or
    hangs, no ping is sent, so systemd restarts a stuck recorder; pings resume
    if it recovers before the timeout.

    >>> import time
    >>> notifier = SystemdNotifier()
    >>> interval = watchdog_interval()
    >>> if interval:
    ...     with WatchdogPinger(notifier, interval, healthy=lambda: True):
    ...         time.sleep(0)  # run the recorder here
    """

    def __init__(self, notifier: SystemdNotifier, interval: float, healthy: Callable[[], bool]):
        if interval <= 0:
            raise ValueError(f"watchdog interval must be positive, not {interval}")
        self.notifier = notifier
        self.interval = interval
        self.healthy = healthy
        self.pings = 0  # pings sent, for status and tests
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WatchdogPinger:
        if self._thread is not None:
            raise RuntimeError("WatchdogPinger already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog-pinger", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A hung health check may never return; the thread is a daemon.
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> WatchdogPinger:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        was_healthy = True
        # Ping at once, then every interval: start-up may have used part of the timeout.
        while not self._stop.is_set():
            try:
                is_healthy = bool(self.healthy())
            except Exception:
                logger.exception("watchdog health check failed")
                is_healthy = False
            if self._stop.is_set():
                return
            if is_healthy:
                if not was_healthy:
                    logger.warning("recorder healthy again: resuming watchdog pings")
                if self.notifier.watchdog():
                    self.pings += 1
            elif was_healthy:
                logger.error("recorder unhealthy: withholding watchdog pings")
            was_healthy = is_healthy
            self._stop.wait(self.interval)
