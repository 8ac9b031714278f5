"""The simulated board's OTP secret: a file in a state folder of its own, not in the store.

>>> import tempfile
>>> otp = SimOtp(Path(tempfile.mkdtemp()) / "otp")
>>> otp.programmed
False
>>> otp.program(bytes(range(32)))
>>> otp.read() == bytes(range(32))
True
"""

from __future__ import annotations

from pathlib import Path

from hardware.host.durable import write_new
from hardware.otp import _ROWS, SECRET_BYTES, OtpError, OtpSecret


class SimOtp(OtpSecret):
    """A simulated board's OTP: one file in a state folder that is not the store.

    Another folder is another board. The file is created once, 0600, and never
    rewritten, as OTP bits never go back.
    """

    FILE = "otp-secret.bin"

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)

    def __str__(self) -> str:
        return f"the simulated OTP in {self.state_dir}"

    def _read_rows(self) -> list[int]:
        try:
            data = (self.state_dir / self.FILE).read_bytes()
        except FileNotFoundError:
            return [0] * _ROWS
        except OSError as e:
            raise OtpError(f"{self.state_dir / self.FILE}: {e.strerror}") from e
        if len(data) != SECRET_BYTES:
            raise OtpError(f"{self.state_dir / self.FILE}: not {SECRET_BYTES} bytes")
        return [int.from_bytes(data[i:i + 4], "big") for i in range(0, SECRET_BYTES, 4)]

    def _write_rows(self, words: list[int]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_new(self.state_dir / self.FILE, b"".join(w.to_bytes(4, "big") for w in words),
                  mode=0o600)
