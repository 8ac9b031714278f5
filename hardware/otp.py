"""The board's one-time-programmable secret: 256 bits that never leave the board.

The device's keys are stored on the SD card wrapped by a key derived from this
secret (``device/key_custody.py``), so a card read in another machine yields
no usable key. On a Raspberry Pi the secret is read through the firmware
mailbox (``vcmailbox``), as root only:

- Pi 4 / Pi 5 (BCM2711 / BCM2712, also CM4 / CM5): the 256-bit *device
  private key* rows, which ``vcgencmd otp_dump`` does not show (mailbox tags
  0x00030081 read, 0x00038081 program; what ``rpi-otp-private-key`` does);
- Zero 2 W (and older): the eight *customer OTP* rows 36–43 (tags 0x00030021 /
  0x00038021).

Programming is permanent: bits only ever go from 0 to 1, so it is done once
(:meth:`OtpSecret.program`, from ``custody provision otp``). The simulator
keeps its secret in a state folder of its own, outside the store
(``hardware/sim/otp.py``).

>>> # otp = PiOtp()                      # as root, on the Pi
>>> # otp.read()                         # None before provisioning
>>> # otp.program(os.urandom(32))        # once, for good
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SECRET_BYTES = 32
_ROWS = SECRET_BYTES // 4


class OtpError(Exception):
    """The OTP secret could not be read or written; the message says why."""


class OtpSecret:
    """A board's 256-bit OTP secret. Read it; program it once."""

    def read(self) -> bytes | None:
        """The secret, or None if none is programmed (all zeros)."""
        words = self._read_rows()
        secret = b"".join(w.to_bytes(4, "big") for w in words)
        return None if secret == bytes(SECRET_BYTES) else secret

    @property
    def programmed(self) -> bool:
        return self.read() is not None

    def program(self, secret: bytes) -> None:
        """Write ``secret`` for good. Refused if a secret is there already."""
        if len(secret) != SECRET_BYTES:
            raise OtpError(f"an OTP secret is {SECRET_BYTES} bytes, not {len(secret)}")
        if secret == bytes(SECRET_BYTES):
            raise OtpError("an all-zero secret reads as no secret")
        if self.programmed:
            raise OtpError(f"{self}: a secret is programmed already; OTP is written once")
        self._write_rows([int.from_bytes(secret[i:i + 4], "big")
                          for i in range(0, SECRET_BYTES, 4)])
        if self.read() != secret:
            raise OtpError(f"{self}: the secret read back differs from the one written")

    def _read_rows(self) -> list[int]:
        raise NotImplementedError

    def _write_rows(self, words: list[int]) -> None:
        raise NotImplementedError


class PiOtp(OtpSecret):
    """The OTP of the Raspberry Pi this runs on, through the firmware mailbox (root only).

    ``region`` is ``"device_private_key"`` (Pi 4 / 5) or ``"customer"``
    (Zero 2 W); by default the one the board's SoC has (:func:`pi_otp_region`).

    >>> # otp = PiOtp()          # as root, on the Pi
    >>> # otp.read()             # 32 bytes, or None before provisioning
    """

    _TAGS = {"device_private_key": (0x00030081, 0x00038081), "customer": (0x00030021, 0x00038021)}

    def __init__(self, region: str | None = None, vcmailbox: str = "vcmailbox"):
        self.region = region or pi_otp_region()
        if self.region not in self._TAGS:
            raise OtpError(f"OTP region {self.region!r} is not one of {', '.join(self._TAGS)}")
        self.vcmailbox = vcmailbox

    def __str__(self) -> str:
        return f"the Pi's OTP ({self.region})"

    def _mailbox(self, tag: int, words: list[int]) -> list[int]:
        exe = shutil.which(self.vcmailbox)
        if exe is None:
            raise OtpError(f"{self.vcmailbox}: not found (Raspberry Pi OS has it in "
                           "raspi-utils / libraspberrypi-bin)")
        # Buffer and request size 40 bytes: first row 0, row count 8, then 8 words.
        args = [exe, hex(tag), "40", "40", "0", str(_ROWS), *(hex(w) for w in words)]
        try:
            out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=10)
        except subprocess.CalledProcessError as e:
            raise OtpError(f"{self}: vcmailbox failed ({e.stderr.strip() or e.returncode}); "
                           "it needs root") from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OtpError(f"{self}: vcmailbox: {e}") from e
        reply = [int(w, 16) for w in out.stdout.split()]
        # The reply: size, response code, tag, sizes, first row, count, then the rows.
        if len(reply) < 7 + _ROWS or reply[1] != 0x80000000:
            raise OtpError(f"{self}: the firmware refused the request ({out.stdout.strip()})")
        return reply[7:7 + _ROWS]

    def _read_rows(self) -> list[int]:
        return self._mailbox(self._TAGS[self.region][0], [0] * _ROWS)

    def _write_rows(self, words: list[int]) -> None:
        self._mailbox(self._TAGS[self.region][1], words)


def pi_otp_region(compatible: Path = Path("/proc/device-tree/compatible")) -> str:
    """``device_private_key`` on a BCM2711/2712 (Pi 4/5, CM4/5), else ``customer``."""
    try:
        soc = compatible.read_bytes().decode(errors="replace")
    except OSError as e:
        raise OtpError(f"{compatible}: cannot tell which Raspberry Pi this is ({e.strerror})") \
            from e
    return "device_private_key" if ("bcm2711" in soc or "bcm2712" in soc) else "customer"
