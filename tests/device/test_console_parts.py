"""The console's parts on their own: line editing, credentials, the throttle, trust updates."""

from __future__ import annotations

import json
import os
import time

import pytest

from device.console.credentials import (
    CredentialsError,
    LoginThrottle,
    TechnicianStore,
    add_technician,
)
from device.console.terminal import Hangup, IdleTimeout, LineRejected, LineTerminal
from hardware.sim.serial import SimSerialCable
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.trust import Holder, TrustedKey
from protocol.trust_update import open_trust_update, sign_trust_update
from tests.conftest import DEVICE


@pytest.fixture
def line(console_cable: SimSerialCable):
    """A LineTerminal on the device end of a pty pair, and the technician's end."""
    port = console_cable.open_device_end()
    yield LineTerminal(port, idle_timeout=1.0), console_cable.technician
    port.close()


def test_a_line_ends_at_cr_lf_or_crlf_and_crlf_is_one_line(line):
    terminal, tech = line
    tech.write(b"one\r\ntwo\nthree\rfour\r\n")
    assert [terminal.read_line() for _ in range(4)] == ["one", "two", "three", "four"]
    tech.write(b"five\r")
    assert terminal.read_line() == "five"


def test_editing_keys_and_echo(line):
    terminal, tech = line
    tech.write(b"helo\x7fp\x08\x08lp me\x17now\r")  # DEL, BS, Ctrl-W
    assert terminal.read_line("> ") == "help now"
    echoed = tech.read_until(b"now\r\n", timeout=2)
    assert echoed.startswith(b"> helo\b \bp\b \b\b \blp me")
    tech.write(b"secret\r")
    assert terminal.read_line("password: ", echo=False) == "secret"
    assert b"secret" not in tech.read_until(b"\r\n", timeout=2)


def test_noise_long_lines_idle_and_ctrl_d(line):
    terminal, tech = line
    tech.write(b"x" * 500 + b"\r")
    with pytest.raises(LineRejected, match="longer than 200"):
        terminal.read_line()
    tech.write(b"ok\x00\xff\r")
    with pytest.raises(LineRejected, match="2 bytes are not printable"):
        terminal.read_line()
    started = time.monotonic()
    with pytest.raises(IdleTimeout):
        terminal.read_line()
    assert time.monotonic() - started >= 0.95
    tech.write(b"\x04")
    with pytest.raises(Hangup):
        terminal.read_line()


def test_credentials_hold_only_scrypt_hashes(tmp_path):
    path = tmp_path / "technicians.json"
    add_technician(path, "alice", "correct horse battery", cost=2**12)
    text = path.read_text()
    assert "correct horse" not in text
    record = json.loads(text)["technicians"]["alice"]
    assert record["kdf"] == "scrypt" and len(bytes.fromhex(record["hash"])) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    store = TechnicianStore.load(path)
    assert store.check("alice", "correct horse battery")
    assert not store.check("alice", "correct horse batterY")
    assert not store.check("mallory", "correct horse battery")
    with pytest.raises(CredentialsError, match="at least 8"):
        add_technician(path, "bob", "short")
    path.write_text('{"format": "custody-technicians/1", "technicians": {"x": {"kdf": "md5"}}}')
    with pytest.raises(CredentialsError, match=r"technicians\.x"):
        TechnicianStore.load(path)


def test_an_unknown_name_costs_as_much_as_a_wrong_password(tmp_path):
    path = tmp_path / "technicians.json"
    add_technician(path, "alice", "correct horse battery")
    store = TechnicianStore.load(path)

    def seconds(name: str) -> float:
        started = time.perf_counter()
        store.check(name, "wrong password")
        return time.perf_counter() - started

    known, unknown = seconds("alice"), seconds("nobody")
    assert unknown > known / 3  # both are a full scrypt, not a dictionary miss


def test_throttle_doubles_from_the_third_failure_and_clears_on_success():
    now = [100.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    assert [throttle.failed() for _ in range(5)] == [0.0, 0.0, 5.0, 10.0, 20.0]
    assert throttle.locked_for() == 20.0
    now[0] += 20
    assert throttle.locked_for() == 0
    throttle.succeeded()
    assert throttle.failed() == 0.0


def test_a_trust_update_must_be_signed_by_the_current_archive_key(unit):
    trust = unit.trust
    archive = SigningKey.from_pem((unit.keys / "archive-signing.key").read_bytes())
    device_keyid = unit.device_key.keyid
    dock = SigningKey.generate()
    trust.keys[dock.keyid] = TrustedKey(keytype="ed25519", public=dock.public_hex)
    trust.docks["DOCK-02"] = Holder(keys=[dock.keyid])
    update = open_trust_update(sign_trust_update(trust.to_bytes(), archive.signer()),
                               unit.trust, DEVICE, device_keyid)
    assert update.added_docks == ("DOCK-02",) and update.data == trust.to_bytes()
    with pytest.raises(ProtocolError, match="not signed by an archive key"):
        open_trust_update(sign_trust_update(trust.to_bytes(), unit.dock_key.signer()),
                          unit.trust, DEVICE, device_keyid)
    moved = unit.trust
    moved.devices[DEVICE] = Holder(keys=[])
    with pytest.raises(ProtocolError, match="does not list device"):
        open_trust_update(sign_trust_update(moved.to_bytes(), archive.signer()),
                          unit.trust, DEVICE, device_keyid)
