"""A whole technician's session in a real terminal program: Debian's picocom inside tmux.

picocom opens one pty, the console another; a relay joins their master ends as a
null-modem cable would. Keys go in with ``tmux send-keys`` and the screen comes
back with ``capture-pane``, so what is checked is what a technician sees.
Set ``CUSTODY_CONSOLE_TRANSCRIPT=FILE`` to keep the screen (docs/console.md).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.device.test_console import device, password  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(not (shutil.which("picocom") and shutil.which("tmux")),
                                reason="needs picocom and tmux (make setup installs them)")


class NullModem:
    """Two pty pairs whose master ends are joined: a cable with a device path at each end."""

    def __init__(self) -> None:
        self._fds = []
        self.paths = []
        for _ in range(2):
            master, slave = pty.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            self._fds.append((master, slave))
            self.paths.append(os.ttyname(slave))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        a, b = self._fds[0][0], self._fds[1][0]
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(b if fd == a else a, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for master, slave in self._fds:
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-500", "-t", "tech")

    def wait_for(self, text: str, timeout: float = 30.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen[after:]:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen within {timeout} s:\n{self.screen()}")

    def type(self, line: str) -> None:
        self("send-keys", "-t", "tech", "-l", line)
        self("send-keys", "-t", "tech", "Enter")


@pytest.fixture
def terminal(device) -> Iterator[tuple[Tmux, NullModem]]:  # noqa: F811
    cable = NullModem()
    console = subprocess.Popen(
        [sys.executable, "-m", "custody_cli", "console", "--port", cable.paths[0],
         "--config", str(device.config_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmux = Tmux(f"custody-console-test-{os.getpid()}")
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "tech", "-x", "110", "-y", "60",
         f"picocom -q -b 115200 -d 8 -p n -y n -f n {cable.paths[1]}")
    try:
        yield tmux, cable
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            tmux("kill-server")
        console.terminate()
        try:
            console.wait(timeout=10)
        except subprocess.TimeoutExpired:
            console.kill()
            console.wait()
        cable.close()


def test_a_technicians_whole_session_in_picocom(device, terminal):  # noqa: F811
    tmux, _ = terminal
    time.sleep(1.5)  # the console is up and picocom connected
    tmux("send-keys", "-t", "tech", "Enter")  # wake the line, as a technician does
    tmux.wait_for("login:")
    tmux.type("tech")
    tmux.wait_for("password:")
    tmux.type(password(device))
    tmux.wait_for("OK logged in as tech")
    tmux.type("status")
    screen = tmux.wait_for("last docking")
    tmux.wait_for("DEV-SIM-0001> ", after=screen.index("last docking"))
    tmux.type("selftest")
    for button in ("RECORD", "MARKER", "FUNCTION"):
        tmux.wait_for(f"press the {button} button", timeout=60)
        time.sleep(0.5)  # reading the prompt
        device.client.call("press", button=button.lower())
    screen = tmux.wait_for("checks passed", timeout=60)
    device.client.call("press", button="record")  # the officer starts recording
    device.wait_for("recording")
    tmux.type("assign PC-0123")
    screen = tmux.wait_for("ERR refused while recording")
    tmux.type("logout")
    screen = tmux.wait_for("OK logged out")
    device.client.call("press", button="record")
    device.wait_for("standby")

    assert "device DEV-SIM-0001, software 0.1.0" in screen
    assert password(device) not in screen  # not echoed
    for line in ("recorder       standby", "officer", "battery", "storage", "clock"):
        assert line in screen
    for check in ("camera frame", "microphone level", "record button", "RTC", "keys"):
        assert any(row.startswith(check) and " PASS " in row for row in screen.splitlines())
    assert "OK 11 of 11 checks passed" in screen
    assert "DEV-SIM-0001> assign PC-0123" in screen
    keep = os.environ.get("CUSTODY_CONSOLE_TRANSCRIPT")
    if keep:
        Path(keep).write_text(screen.rstrip() + "\n")
