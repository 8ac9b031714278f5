"""sd_notify readiness and watchdog, received on a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardware.host.sdnotify import SystemdNotifier, WatchdogPinger, watchdog_interval
from tests.device.conftest import wait_for


@dataclass
class NotifySocket:
    """What systemd listens on: ``env`` is the $NOTIFY_SOCKET value for it."""

    env: str
    sock: socket.socket

    def receive(self, timeout: float = 1.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def drain(self) -> list[bytes]:
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(4096))
        except BlockingIOError:
            return messages


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    if request.param == "path":
        address = str(directory / "notify")
        sock.bind(address)
        env = address
    else:
        name = f"custody-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        env = "@" + name
    yield NotifySocket(env, sock)
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_messages_arrive_exactly(notify_socket: NotifySocket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.env})
    assert notifier.enabled
    assert notifier.ready() is True
    assert notify_socket.receive() == b"READY=1"
    assert notifier.ready(status="recording idle") is True
    assert notify_socket.receive() == b"READY=1\nSTATUS=recording idle"
    assert notifier.status("recording r0003, segment 12") is True
    assert notify_socket.receive() == b"STATUS=recording r0003, segment 12"
    assert notifier.watchdog() is True
    assert notify_socket.receive() == b"WATCHDOG=1"
    assert notifier.stopping() is True
    assert notify_socket.receive() == b"STOPPING=1"
    notifier.close()


def test_status_text_cannot_inject_other_assignments(notify_socket: NotifySocket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.env})
    notifier.status("storage full\nREADY=1")
    assert notify_socket.receive() == b"STATUS=storage full READY=1"


def test_notify_socket_is_read_from_the_environment(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env)
    assert SystemdNotifier().watchdog() is True
    assert notify_socket.receive() == b"WATCHDOG=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:99"}])
def test_outside_systemd_every_call_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = SystemdNotifier(environ)
    assert not notifier.enabled
    assert [notifier.ready("x"), notifier.status("x"), notifier.stopping(),
            notifier.watchdog()] == [False] * 4


def test_a_vanished_notify_socket_returns_false_instead_of_raising() -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/tmp/custody-no-such-dir/notify"})
    assert notifier.enabled
    assert notifier.ready() is False


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(environ) == interval


def test_watchdog_interval_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 4.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


class Health:
    """A health callback the test can turn off, counting how often it was asked."""

    def __init__(self) -> None:
        self.ok = True
        self.raise_instead = False
        self.checks_since_change = 0
        self._lock = threading.Lock()

    def set(self, ok: bool, raise_instead: bool = False) -> None:
        with self._lock:
            self.ok, self.raise_instead, self.checks_since_change = ok, raise_instead, 0

    def __call__(self) -> bool:
        with self._lock:
            self.checks_since_change += 1
            if self.raise_instead:
                raise RuntimeError("health check itself broke")
            return self.ok


@pytest.mark.parametrize("failure", ["returns_false", "raises"])
def test_pinger_pings_only_while_healthy(notify_socket: NotifySocket, failure: str) -> None:
    interval = 0.02
    health = Health()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.env})
    with WatchdogPinger(notifier, interval, health) as pinger:
        assert [notify_socket.receive() for _ in range(3)] == [b"WATCHDOG=1"] * 3

        health.set(False, raise_instead=failure == "raises")
        # Once the check has said "unhealthy" twice, any ping decided before is already sent.
        assert wait_for(lambda: health.checks_since_change >= 2)
        assert set(notify_socket.drain()) <= {b"WATCHDOG=1"}
        pings_while_healthy = pinger.pings
        with pytest.raises(TimeoutError):
            notify_socket.receive(timeout=8 * interval)  # silence: systemd would restart us
        assert pinger.pings == pings_while_healthy

        health.set(True)
        assert notify_socket.receive() == b"WATCHDOG=1"  # recovered in time: pings resume
    # After stop() the pinger is silent too.
    notify_socket.drain()
    with pytest.raises(TimeoutError):
        notify_socket.receive(timeout=5 * interval)


def test_pinger_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        WatchdogPinger(SystemdNotifier({}), 0, lambda: True)
