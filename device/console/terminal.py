"""Line editing over a serial byte stream, as a router's console does it.

The device end of a serial line gets raw bytes: the terminal program (picocom,
minicom, screen, PuTTY) does not echo or edit, so this does::

    >>> from io import BytesIO
    >>> class Port:                      # anything with read(size, timeout) and write
    ...     def __init__(self, data): self.data, self.out = BytesIO(data), bytearray()
    ...     def read(self, size=1, timeout=None): return self.data.read(1)
    ...     def write(self, data): self.out += data
    >>> terminal = LineTerminal(Port(b"statsu\\x7f\\x7fus\\r\\n"))
    >>> terminal.read_line("> ")
    'status'

- a line ends at CR, LF or CRLF (the LF of a CRLF, or a NUL after CR, is not a
  second, empty line);
- backspace (BS or DEL) erases a character, Ctrl-U the line, Ctrl-W a word,
  Ctrl-C abandons the line, Ctrl-D on an empty line logs out; arrow keys and
  other escape sequences are swallowed;
- a line longer than ``max_line`` characters, or holding bytes that are not
  printable ASCII, is rejected whole when it ends (:class:`LineRejected`), and
  noise that never ends a line is rejected once it passes ``max_noise`` bytes,
  and what follows is dropped until the line is quiet;
- nothing for ``idle_timeout`` seconds raises :class:`IdleTimeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

MAX_LINE = 200
MAX_NOISE = 4096
BS, DEL, CTRL_C, CTRL_D, CTRL_U, CTRL_W, ESC, BEL = 8, 127, 3, 4, 21, 23, 27, b"\x07"
CR, LF, NUL, TAB = 13, 10, 0, 9


class BytePort(Protocol):
    def read(self, size: int = 1, timeout: float | None = 1.0) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...


class IdleTimeout(Exception):
    """No input for the idle timeout."""


class Hangup(Exception):
    """The technician logged out (Ctrl-D) or the line went away."""


class LineRejected(Exception):
    """A line that is too long or not text; the message says which, for ``ERR``."""


class LineTerminal:
    """Reads edited lines from ``port`` and writes text to it (``\\n`` becomes CRLF)."""

    def __init__(self, port: BytePort, *, max_line: int = MAX_LINE, max_noise: int = MAX_NOISE,
                 idle_timeout: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.port = port
        self.max_line, self.max_noise = max_line, max_noise
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._pending = bytearray()
        self._after_cr = False

    # -- output ----------------------------------------------------------------

    def write(self, text: str) -> None:
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii", "replace")
        self.port.write(data)

    def write_line(self, text: str = "") -> None:
        self.write(text + "\n")

    # -- input -----------------------------------------------------------------

    def _next_byte(self, deadline: float) -> int:
        while not self._pending:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise IdleTimeout
            try:
                chunk = self.port.read(256, timeout=min(remaining, 0.5))
            except OSError as e:  # the port went away (a USB gadget unplugged)
                raise Hangup(str(e)) from e
            self._pending += chunk
        byte = self._pending[0]
        del self._pending[0]
        return byte

    def _drain(self, quiet: float = 0.3, longest: float = 5.0) -> None:
        """Drop input until the line has been quiet for ``quiet`` seconds (line noise)."""
        self._pending.clear()
        until = self.clock() + longest
        while self.clock() < until:
            try:
                if not self.port.read(4096, timeout=quiet):
                    return
            except OSError:
                return

    def read_line(self, prompt: str = "", *, echo: bool = True,
                  max_line: int | None = None) -> str:
        """The next line, edited; raises IdleTimeout, Hangup or LineRejected."""
        limit = max_line or self.max_line
        self.write(prompt)
        line = bytearray()
        too_long = False
        noise = 0  # bytes that are not printable text
        escape: bytearray | None = None
        while True:
            byte = self._next_byte(self.clock() + self.idle_timeout)
            if self._after_cr:
                self._after_cr = False
                if byte in (LF, NUL):
                    continue
            if escape is not None:  # inside ESC [ ... final, or ESC O x
                escape.append(byte)
                if len(escape) == 1 and byte not in b"[O":
                    escape = None  # a lone ESC: ignore it and this byte
                elif len(escape) > 1 and (0x40 <= byte <= 0x7E or escape[0] == ord("O")):
                    escape = None
                elif len(escape) > 16:
                    escape, noise = None, noise + len(escape)
                continue
            if byte in (CR, LF):
                self._after_cr = byte == CR
                self.write("\n")
                if noise:
                    raise LineRejected(f"binary input rejected ({noise} bytes are not "
                                       "printable text)")
                if too_long:
                    raise LineRejected(f"line longer than {limit} characters rejected")
                return line.decode("ascii")
            if 0x20 <= byte < 0x7F:
                if len(line) >= limit:
                    too_long = True
                    self.port.write(BEL)
                    continue
                line.append(byte)
                if echo:
                    self.port.write(bytes([byte]))
            elif byte in (BS, DEL):
                if line:
                    line.pop()
                    if echo:
                        self.port.write(b"\b \b")
            elif byte == CTRL_U:
                if echo:
                    self.port.write(b"\b \b" * len(line))
                line.clear()
                too_long = False
            elif byte == CTRL_W:
                keep = line.rstrip(b" ")
                cut = keep.rfind(b" ") + 1
                if echo:
                    self.port.write(b"\b \b" * (len(line) - cut))
                del line[cut:]
            elif byte == CTRL_C:
                self.write("^C\n")
                line.clear()
                too_long, noise = False, 0
                self.write(prompt)
            elif byte == CTRL_D and not line:
                self.write("\n")
                raise Hangup("logged out (Ctrl-D)")
            elif byte == ESC:
                escape = bytearray()
            elif byte == TAB:
                continue
            else:
                noise += 1
                if noise + len(line) > self.max_noise:
                    self._drain()
                    self.write("\n")
                    raise LineRejected(f"binary input rejected ({noise} bytes without a line "
                                       "end)")
