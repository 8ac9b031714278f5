"""One console on one serial port: banner, login, the command loop, logout.

    >>> # session = ConsoleSession(config, port, technicians)
    >>> # session.serve_forever()      # what ``custody console`` runs

A command ends with one result line: ``OK`` (perhaps with a short message) or
``ERR <reason>``. Nothing a technician types can end the process: a command
that fails unexpectedly is an ``ERR``, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device.config import RecorderConfig
from device.console.credentials import LoginThrottle, TechnicianStore
from device.console.terminal import BytePort, Hangup, IdleTimeout, LineRejected, LineTerminal
from device.control import ControlClient, ControlError

log = logging.getLogger("custody.console")

# A button check waits up to 10 s for the press; a forced reboot up to 60 s for the seal.
CONTROL_TIMEOUT_S = 75.0
NAME_LIMIT = 32


class CommandError(Exception):
    """A command refused or failed; the message follows ``ERR``."""


class Logout(Exception):
    """The technician asked to log out."""


@dataclass
class ConsoleSession:
    config: RecorderConfig
    port: BytePort
    technicians: TechnicianStore
    port_name: str = "console"
    version: str = ""
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    run_command: Callable[[list[str]], int] | None = None  # reboot/poweroff (tests swap it)

    def __post_init__(self) -> None:
        self.terminal = LineTerminal(self.port, idle_timeout=self.config.console_idle_seconds)
        self.client = ControlClient(self.config.control_socket, timeout=CONTROL_TIMEOUT_S)
        self.technician: str | None = None
        if not self.version:
            self.version = software_version()

    # --- talking --------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        self.terminal.write_line(text)

    def ask(self, prompt: str, *, echo: bool = True, max_line: int | None = None) -> str:
        return self.terminal.read_line(prompt, echo=echo, max_line=max_line)

    def call(self, cmd: str, **args: Any) -> dict:
        """A control-socket command to the recorder; ControlError if it refuses or is down."""
        return self.client.call(cmd, **args)

    def audited(self, cmd: str, line: str, **args: Any) -> dict:
        """A change the recorder carries out and signs as this technician's console_action."""
        assert self.technician is not None
        return self.call(cmd, technician=self.technician, command=line, **args)

    # --- the loop -------------------------------------------------------------------------

    def banner(self) -> None:
        self.out()
        self.out(f"Custody maintenance console - device {self.config.device_id or '?'}, "
                 f"software {self.version}")
        self.out("Authorised technicians only. Every login is logged; every change is signed "
                 "into the ledger.")

    def serve_forever(self) -> None:
        """Banner, login, commands; again after each logout. Returns when the line is gone."""
        while True:
            try:
                self.banner()
                if self.login():
                    self.command_loop()
            except Hangup as e:
                if self.technician:
                    log.info("logout: %s on %s (%s)", self.technician, self.port_name, e)
                    self.technician = None
                if "logged out" not in str(e):
                    return  # the port itself failed: systemd restarts us
            except IdleTimeout:
                continue

    def login(self) -> bool:
        try:
            name = self.ask("login: ")
        except LineRejected as e:
            self.out(f"ERR {e}")
            return False
        if not name.strip():
            return False
        name = name.strip()[:NAME_LIMIT]
        locked = self.throttle.locked_for()
        if locked > 0:
            log.warning("login refused for %r on %s: locked out for %.0f s more", name,
                        self.port_name, locked)
            self.out(f"ERR login locked for {locked:.0f} s after "
                     f"{self.throttle.failures} failed attempts")
            return False
        try:
            password = self.ask("password: ", echo=False)
        except LineRejected:
            password = "\0"  # never matches; counted as a failure below
        if self.technicians.check(name, password):
            self.throttle.succeeded()
            self.technician = name
            log.info("login: %s on %s", name, self.port_name)
            self.out(f"OK logged in as {name}; 'help' lists the commands")
            return True
        delay = self.throttle.failed()
        log.warning("failed login for %r on %s (%d in a row)", name, self.port_name,
                    self.throttle.failures)
        lock = f"; login locked for {delay:.0f} s" if delay else ""
        self.out(f"ERR login incorrect{lock}")
        return False

    def command_loop(self) -> None:
        from device.console.commands import run_line

        while True:
            try:
                line = self.ask(f"{self.config.device_id or 'custody'}> ")
            except LineRejected as e:
                self.out(f"ERR {e}")
                continue
            except IdleTimeout:
                log.info("logout: %s on %s (idle %.0f s)", self.technician, self.port_name,
                         self.config.console_idle_seconds)
                self.out(f"idle for {self.config.console_idle_seconds:g} s: logged out")
                self.technician = None
                raise
            if not line.strip():
                continue
            try:
                result = run_line(self, line.strip())
            except Logout:
                log.info("logout: %s on %s", self.technician, self.port_name)
                self.out("OK logged out")
                self.technician = None
                return
            self.out(result)


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("custody")
    except PackageNotFoundError:
        return "unknown"


__all__ = ["CommandError", "ConsoleSession", "ControlError", "Logout"]
