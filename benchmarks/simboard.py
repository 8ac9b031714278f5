"""The simulated board a benchmark's agent runs on, provisioned as ``custody sim`` does.

The agent loads its signing key only wrapped by the board's OTP secret
(docs/key-custody in device/key_custody.py): program the simulated OTP, wrap
the enrolled key with it, and give the agent both places.
"""

from __future__ import annotations

from pathlib import Path

from daemon.provision import device_key_path, load_signing_key
from device.key_custody import wrap_signing_key, write_wrapped_key
from device.otp_cli import program_otp
from hardware.sim.otp import SimOtp


def simulated_board(root: Path, keys: Path, device: str) -> dict[str, str]:
    """Program ``root/otp`` and wrap ``device``'s key into ``root/device-keys``; the settings."""
    otp_dir, key_file = root / "otp", root / "device-keys" / "signing.key"
    otp = SimOtp(otp_dir)
    program_otp(otp, dry_run=False, confirm=lambda _: True)
    write_wrapped_key(key_file, wrap_signing_key(
        load_signing_key(device_key_path(keys, device)), otp.read() or b"", device))
    return {"key_file": str(key_file), "otp_state_dir": str(otp_dir)}
