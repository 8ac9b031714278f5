"""host/service.py: the life both services share — stop signals, READY, watchdog, STOPPING."""

from __future__ import annotations

import os
import signal

import pytest

from hardware.host.sdnotify import SystemdNotifier
from hardware.host.service import ServiceLife
from tests.hardware.host.test_sdnotify import NotifySocket


@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_life_with_stopping_and_no_ping_after_it(
        notify_socket: NotifySocket, sig: int) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.env, "WATCHDOG_USEC": "100000"}
    before = signal.getsignal(sig)
    life = ServiceLife(lambda: True, SystemdNotifier(env), env)
    assert life.interval == 0.05
    with life:
        assert notify_socket.drain() == []  # nothing before READY, not even a ping
        life.ready("serving")
        assert notify_socket.receive() == b"READY=1\nSTATUS=serving"
        assert notify_socket.receive() == b"WATCHDOG=1"
        os.kill(os.getpid(), sig)
        assert life.wait(5)
    after = notify_socket.drain()
    assert after[-1] == b"STOPPING=1" and set(after) <= {b"WATCHDOG=1", b"STOPPING=1"}
    assert signal.getsignal(sig) is before  # the process's own handler is back


@pytest.mark.parametrize("notify_socket", ["path"], indirect=True)
def test_pings_are_withheld_while_unhealthy(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.env, "WATCHDOG_USEC": "100000"}
    with ServiceLife(lambda: False, SystemdNotifier(env), env) as life:
        life.ready()
        assert notify_socket.receive() == b"READY=1"
        life.wait(0.3)
        assert notify_socket.drain() == []
    assert notify_socket.receive() == b"STOPPING=1"
