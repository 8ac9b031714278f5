"""A technician at the console, scripted: for ``custody sim``'s ``console`` step and the tests.

:class:`ConsoleDriver` types into the technician's end of a serial cable and
reads back what the console printed, as a person at picocom would;
:func:`run_console_session` starts ``custody console`` on a fresh pty pair, logs
in as the simulator's technician and runs a list of commands. When a self-test
asks for a button, the ``press`` callback presses it (``custody sim`` presses
the simulated button through the recorder's control socket).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from device.console.credentials import add_technician

SIM_TECHNICIAN = "tech"
PASSWORD_FILE = "technician-password"
TECHNICIANS_FILE = "technicians.json"
RESULT = re.compile(rb"^(OK|ERR)\b[^\r\n]*\r\n", re.M)
PRESS = re.compile(rb"press the (\w+) button within")


def provision_sim_technician(keys: Path) -> Path:
    """Technician ``tech`` with a fresh password in ``keys/technician-password`` (tests and
    demos only: a real unit never writes a password down); the credentials file's path."""
    password = secrets.token_urlsafe(12)
    fd = os.open(keys / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    add_technician(keys / TECHNICIANS_FILE, SIM_TECHNICIAN, password)
    return keys / TECHNICIANS_FILE


class ConsoleDriver:
    """The technician's side: ``send`` a line, ``expect`` text, run a ``command``."""

    def __init__(self, fd: int, press: Callable[[str], None] | None = None):
        self.fd = fd
        self.press = press
        self.buffer = b""  # what arrived and was not consumed yet
        self.transcript = b""  # everything the console printed

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:
            return False
        self.buffer += chunk
        self.transcript += chunk
        return bool(chunk)

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float = 10.0) -> bytes:
        """Everything up to and including ``pattern``; TimeoutError if it does not come."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        pressed = 0
        while True:
            for match in list(PRESS.finditer(self.buffer))[pressed:]:
                pressed += 1
                if self.press is not None:
                    time.sleep(0.3)  # as a person would, after reading the prompt
                    self.press(match.group(1).decode().lower())
            found = regex.search(self.buffer)
            if found:
                out, self.buffer = self.buffer[: found.end()], self.buffer[found.end():]
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {regex.pattern!r} within {timeout} s; "
                                   f"got {self.buffer[-400:]!r}")
            self._read(min(0.2, left))

    def send(self, data: bytes | str) -> None:
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def login(self, name: str, password: str, timeout: float = 20.0) -> bytes:
        self.expect(b"login: ", timeout)
        self.send(name + "\r")
        self.expect(b"password: ", timeout)
        self.send(password + "\r")
        return self.expect(RESULT, timeout)

    def command(self, line: str, timeout: float = 60.0) -> str:
        """Type ``line`` at the prompt; the console's output up to its OK/ERR line."""
        self.expect(b"> ", timeout)  # the prompt: nothing else comes between a result and it
        self.send(line + "\r")
        return self.expect(RESULT, timeout).decode("ascii", "replace")


def run_console_session(config: Path, keys: Path, commands: list[str] | tuple[str, ...],
                        press: Callable[[str], None] | None = None) -> str:
    """Start ``custody console`` on a new pty pair, log in as ``tech``, run ``commands``,
    log out; the session as the technician saw it."""
    from hardware.sim.serial import SimSerialCable

    password = (keys / PASSWORD_FILE).read_text().strip()
    with SimSerialCable() as cable:
        proc = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", "console", "--port", cable.device_path,
             "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        driver = ConsoleDriver(cable.technician.fd, press)
        try:
            driver.login(SIM_TECHNICIAN, password)
            for line in commands:
                driver.command(line)
            driver.command("logout")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return driver.transcript.decode("ascii", "replace").replace("\r\n", "\n")
