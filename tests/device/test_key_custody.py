"""Key custody: the device's signing key on the card is useless without its board's OTP secret.

The attack: copy the card (store and key folder) into another board. The
recorder must refuse to start, say why, and sign nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device.config import RecorderConfig
from device.key_custody import (
    KeyCustodyError,
    load_signing_key,
    unwrap_signing_key,
    wrap_signing_key,
)
from hardware.otp import OtpError, PiOtp
from hardware.sim.otp import SimOtp
from protocol.keys import SigningKey
from tests.device.simrun import custody, run_sim

SHORT = """
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0

[[at]]
t = 0
do = "press_record"

[[at]]
t = 2.5
do = "press_record"

[[at]]
t = 3
do = "end"
"""


def test_a_wrapped_key_opens_only_with_its_boards_secret_device_and_purpose() -> None:
    key, secret = SigningKey.generate(), os.urandom(32)
    blob = wrap_signing_key(key, secret, "DEV-1")
    assert key.to_pem() not in blob and b"PRIVATE" not in blob
    assert unwrap_signing_key(blob, secret, "DEV-1").keyid == key.keyid
    with pytest.raises(KeyCustodyError, match="another board"):
        unwrap_signing_key(blob, os.urandom(32), "DEV-1")
    with pytest.raises(KeyCustodyError, match="not the signing key of 'DEV-2'"):
        unwrap_signing_key(blob, secret, "DEV-2")
    relabelled = json.loads(blob)
    relabelled["device"] = "DEV-2"  # the label is authenticated too
    with pytest.raises(KeyCustodyError, match="another board"):
        unwrap_signing_key(json.dumps(relabelled).encode(), secret, "DEV-2")
    with pytest.raises(KeyCustodyError, match="unwrapped private key"):
        unwrap_signing_key(key.to_pem(), secret, "DEV-1")


def test_the_simulated_otp_is_written_once(tmp_path: Path) -> None:
    otp = SimOtp(tmp_path / "otp")
    with pytest.raises(KeyCustodyError, match="never provisioned"):
        load_signing_key(tmp_path / "none.key", otp, "DEV-1")
    otp.program(b"\x01" * 32)
    with pytest.raises(OtpError, match="programmed already"):
        otp.program(b"\x02" * 32)
    assert otp.read() == b"\x01" * 32
    assert stat.S_IMODE((tmp_path / "otp" / SimOtp.FILE).stat().st_mode) == 0o600


def test_otp_program_has_a_dry_run_and_asks_first(tmp_path: Path) -> None:
    state = tmp_path / "otp"
    r = custody("otp", "program", "--otp-state", state, "--dry-run")
    assert r.returncode == 0 and "dry run" in r.stdout and not state.exists()
    r = subprocess.run([sys.executable, "-m", "custody_cli", "otp", "program", "--otp-state",
                        str(state)], input="no\n", capture_output=True, text=True)
    assert r.returncode == 0 and "not confirmed" in r.stdout and not SimOtp(state).programmed
    r = subprocess.run([sys.executable, "-m", "custody_cli", "otp", "program", "--otp-state",
                        str(state)], input="yes\n", capture_output=True, text=True)
    assert r.returncode == 0 and SimOtp(state).programmed
    again = custody("otp", "program", "--otp-state", state, "--yes")
    assert again.returncode == 2 and "programmed already" in again.stderr


def test_a_card_copied_into_another_board_starts_nothing_and_signs_nothing(
        tmp_path: Path) -> None:
    out = run_sim(tmp_path, SHORT)  # the real board: provisioned, recorded, verified below
    # The real board signs (under load a slow camera start may add a declared fault).
    assert custody("verify", out / "device").returncode in (0, 3)
    assert b"PRIVATE KEY" not in (out / "device-keys" / "signing.key").read_bytes()
    assert not any(p.name.startswith("otp") for p in (out / "device").rglob("*"))

    other = tmp_path / "other-board"
    shutil.copytree(out / "device", other / "device")  # the card
    shutil.copytree(out / "device-keys", other / "device-keys")
    assert custody("otp", "program", "--otp-state", other / "otp", "--yes").returncode == 0
    config = RecorderConfig.from_file(out / "recorder.toml").with_overrides({
        "store": str(other / "device"), "key_file": str(other / "device-keys" / "signing.key"),
        "otp_state_dir": str(other / "otp"), "control_socket": str(other / "recorder.sock"),
        "sim_epoch_unix_ns": 1})
    (other / "recorder.toml").write_text(config.to_toml())
    ledger_before = (other / "device" / "ledger.jsonl").read_bytes()
    files_before = sorted(p.relative_to(other) for p in (other / "device").rglob("*"))

    r = custody("recorder", "--config", other / "recorder.toml", timeout=60)

    assert r.returncode == 2, r.stderr
    assert "signing.key" in r.stderr and "another board" in r.stderr
    assert (other / "device" / "ledger.jsonl").read_bytes() == ledger_before
    assert sorted(p.relative_to(other) for p in (other / "device").rglob("*")) == files_before

    # The same with a board never provisioned: refused, naming the missing secret.
    shutil.rmtree(other / "otp")
    r = custody("recorder", "--config", other / "recorder.toml", timeout=60)
    assert r.returncode == 2 and "never provisioned" in r.stderr


@pytest.fixture
def fake_vcmailbox(tmp_path: Path) -> Path:
    """A stand-in for the Pi firmware's mailbox tool: OTP rows kept in a JSON file."""
    script = tmp_path / "vcmailbox"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        from pathlib import Path
        state = Path({str(tmp_path / "rows.json")!r})
        rows = json.loads(state.read_text()) if state.exists() else {{}}
        tag = int(sys.argv[1], 16)
        words = [int(w, 16) for w in sys.argv[6:14]]
        region = {{0x30081: "key", 0x38081: "key", 0x30021: "cust", 0x38021: "cust"}}[tag]
        if tag & 0x8000:  # program: bits only go 0 -> 1
            old = rows.get(region, [0] * 8)
            rows[region] = [o | w for o, w in zip(old, words)]
            state.write_text(json.dumps(rows))
        got = rows.get(region, [0] * 8)
        print(" ".join(hex(w) for w in [40, 0x80000000, tag, 40, 0x80000028, 0, 8, *got, 0]))
        """))
    script.chmod(0o755)
    return script


def test_the_pi_backend_reads_and_programs_through_the_mailbox(fake_vcmailbox: Path,
                                                              tmp_path: Path) -> None:
    otp = PiOtp("device_private_key", vcmailbox=str(fake_vcmailbox))
    assert otp.read() is None
    secret = bytes(range(1, 33))
    otp.program(secret)
    assert otp.read() == secret
    assert PiOtp("customer", vcmailbox=str(fake_vcmailbox)).read() is None  # other rows
    with pytest.raises(OtpError, match="programmed already"):
        otp.program(os.urandom(32))
    with pytest.raises(OtpError, match="not found"):
        PiOtp("customer", vcmailbox=str(tmp_path / "absent")).read()
    compatible = tmp_path / "compatible"
    compatible.write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    from hardware.otp import pi_otp_region
    assert pi_otp_region(compatible) == "device_private_key"
    compatible.write_bytes(b"raspberrypi,model-zero-2-w\0brcm,bcm2837\0")
    assert pi_otp_region(compatible) == "customer"
