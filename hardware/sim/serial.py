"""A simulated console cable: a pty pair, the device end opened with pyserial.

    >>> cable = SimSerialCable()
    >>> port = cable.open_device_end()      # a hardware.serialport.SerialPort
    >>> cable.technician.write(b"status\\n")
    >>> port.readline()
    b'status\\n'
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import tty

from hardware.serialport import SerialPort


class TechnicianEnd:
    """The technician's side of the cable (the pty master), with simple blocking I/O."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def read_until(self, marker: bytes = b"\n", timeout: float = 2.0) -> bytes:
        """Bytes up to and including ``marker``, or what arrived before ``timeout``."""
        buf = b""
        while marker not in buf:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the device end closed
                break
            if not chunk:
                break
            buf += chunk
        return buf

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class SimSerialCable:
    """A pty pair in raw mode: no echo, no line editing, bytes as sent - like a UART."""

    def __init__(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._slave = slave
        self.device_path = os.ttyname(slave)
        self.technician = TechnicianEnd(master)

    def open_device_end(self, baudrate: int = 115_200) -> SerialPort:
        return SerialPort(self.device_path, baudrate)

    def close(self) -> None:
        self.technician.close()
        with contextlib.suppress(OSError):
            os.close(self._slave)

    def __enter__(self) -> SimSerialCable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
