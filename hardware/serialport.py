"""The maintenance console's serial port (UART ``ttyS0``/``ttyAMA0`` or USB gadget ``ttyGS0``).

    >>> from hardware.factory import get_factory
    >>> with get_factory().serial_port() as port:
    ...     port.write(b"custody> ")
    ...     line = port.readline(timeout=5)

The first candidate port that exists is opened with pyserial, so one board file
serves a device wired to the UART and one plugged in as a USB gadget.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def find_console_port(candidates: Sequence[str], dev: str = "/dev") -> str | None:
    """The first candidate that exists (names like ``ttyGS0`` or full paths)."""
    for name in candidates:
        path = name if os.path.isabs(name) else os.path.join(dev, name)
        if os.path.exists(path):
            return path
    return None


class SerialPort:
    """A pyserial port with the small vocabulary the console needs."""

    def __init__(self, candidates: Sequence[str] | str, baudrate: int = 115_200) -> None:
        import serial  # pyserial

        names = [candidates] if isinstance(candidates, str) else list(candidates)
        path = find_console_port(names)
        if path is None:
            raise FileNotFoundError(f"no console serial port among {', '.join(names)}")
        self.path = path
        self._serial: Any = serial.Serial(path, baudrate=baudrate, timeout=1.0)

    @property
    def is_open(self) -> bool:
        return bool(self._serial.is_open)

    @property
    def baudrate(self) -> int:
        return int(self._serial.baudrate)

    def write(self, data: bytes) -> int:
        count = self._serial.write(data)
        self._serial.flush()
        return int(count or 0)

    def read(self, size: int = 1, timeout: float | None = 1.0) -> bytes:
        self._serial.timeout = timeout
        return bytes(self._serial.read(size))

    def readline(self, timeout: float | None = 1.0) -> bytes:
        """One line including its newline; what arrived so far on timeout."""
        self._serial.timeout = timeout
        return bytes(self._serial.readline())

    @property
    def in_waiting(self) -> int:
        return int(self._serial.in_waiting)

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> SerialPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
