"""The device's TLS key on the card is wrapped by the board's OTP secret, as its signing key is.

The attack: copy the card (store and key folder) into another machine. The TLS
key must not be usable there (no connecting to the dock as this device), and
the recorder must say so by name. On its own board the key is unwrapped in
memory and a real mutual-TLS connection to the dock works.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon import pki
from daemon.provision import device_key_path, load_signing_key
from device.agent import load_device_tls_key
from device.config import RecorderConfig
from device.key_custody import (
    KeyCustodyError,
    load_tls_key,
    unwrap_key,
    wrap_signing_key,
    wrap_tls_key,
    write_wrapped_key,
)
from device.offload import DockClient
from device.tls_identity import TlsIdentityError
from hardware.sim.otp import SimOtp
from protocol.store_reader import TRUST_NAME
from tests.daemon.dockkit import DockThread, dock_config, make_unit
from tests.device.simrun import custody


def _board(folder: Path) -> SimOtp:
    otp = SimOtp(folder)
    otp.program(bytes(range(1, 33)) if folder.name == "otp" else bytes(range(2, 34)))
    return otp


@pytest.fixture
def unit(tmp_path: Path):
    keys, (dev,) = make_unit(tmp_path)
    otp = _board(tmp_path / "otp")
    card = tmp_path / "card"
    tls_pem = pki.key_path(keys, "device", dev.name).read_bytes()
    write_wrapped_key(card / "tls.key", wrap_tls_key(tls_pem, otp.read() or b"", dev.name))
    write_wrapped_key(card / "signing.key", wrap_signing_key(
        load_signing_key(device_key_path(keys, dev.name)), otp.read() or b"", dev.name))
    yield keys, dev, otp, card
    dev.host.close()


def test_the_wrapped_tls_key_connects_to_the_dock_from_memory(unit, tmp_path: Path) -> None:
    keys, dev, otp, card = unit
    data = (card / "tls.key").read_bytes()
    assert b"PRIVATE KEY" not in data  # nothing on the card is a usable PEM
    pem = load_tls_key(card / "tls.key", otp, dev.name)
    assert pem == pki.key_path(keys, "device", dev.name).read_bytes()
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    try:
        # tls_key_file names the wrapped file only; the key itself comes from memory.
        client = DockClient(dev.settings(dock.url, tls_key_file=card / "tls.key", tls_key=pem),
                            dev.name)
        status, _, state = client.call("GET", "/state")
        client.close()
        assert status == 200 and state["device"] == dev.name
    finally:
        dock.stop()


def test_the_tls_key_is_wrapped_for_its_purpose_apart_from_the_signing_key(unit) -> None:
    _, dev, otp, card = unit
    secret = otp.read() or b""
    with pytest.raises(KeyCustodyError, match="not the tls key"):
        unwrap_key((card / "signing.key").read_bytes(), secret, dev.name, "tls")
    with pytest.raises(KeyCustodyError, match="not the signing key"):
        unwrap_key((card / "tls.key").read_bytes(), secret, dev.name, "signing")
    with pytest.raises(KeyCustodyError, match="not an unencrypted PEM private key"):
        wrap_tls_key(b"-----BEGIN CERTIFICATE-----\n", secret, dev.name)


def test_a_card_read_in_another_machine_yields_no_usable_tls_key(unit, tmp_path: Path) -> None:
    keys, dev, _, card = unit
    other = tmp_path / "elsewhere"
    shutil.copytree(card, other / "card")  # the card, without the board's OTP
    with pytest.raises(KeyCustodyError, match="never provisioned"):
        load_tls_key(other / "card" / "tls.key", SimOtp(other / "no-otp"), dev.name)
    with pytest.raises(KeyCustodyError, match=r"tls\.key: does not unwrap.*another board"):
        load_tls_key(other / "card" / "tls.key", _board(other / "otp2"), dev.name)
    # Handed to ssl as it lies on the card, the file is no key either.
    ctx_settings = dev.settings("https://127.0.0.1:1", tls_key_file=other / "card" / "tls.key")
    with pytest.raises(Exception, match="PEM|SSL|key"):
        DockClient(ctx_settings, dev.name)


def test_a_key_that_does_not_match_the_certificate_is_named(unit) -> None:
    keys, dev, otp, card = unit
    other_pem = pki.key_path(keys, "dock", "DOCK-01").read_bytes()
    with pytest.raises(TlsIdentityError, match="does not go with"):
        DockClient(dev.settings("https://127.0.0.1:1", tls_key=other_pem), dev.name)


def _recorder_config(keys: Path, dev, card: Path, otp_dir: Path, tls_key: Path,
                     tmp_path: Path) -> Path:
    config = RecorderConfig.from_toml("").with_overrides({
        "device_id": dev.name, "store": str(dev.store), "hardware": "sim",
        "key_file": str(card / "signing.key"), "otp_state_dir": str(otp_dir),
        "trust_file": str(keys / TRUST_NAME), "log_file": str(tmp_path / "device.log"),
        "control_socket": str(tmp_path / "recorder.sock"), "sim_epoch_unix_ns": 1,
        "dock_url": "https://127.0.0.1:1",
        "tls_cert_file": str(pki.cert_path(keys, "device", dev.name)),
        "tls_key_file": str(tls_key), "tls_ca_file": str(pki.tls_dir(keys) / pki.CA_CERT),
    }, source="test")
    path = tmp_path / "recorder.toml"
    path.write_text(config.to_toml())
    return path


def test_the_recorder_refuses_a_tls_key_of_another_board_by_name(unit, tmp_path: Path) -> None:
    keys, dev, otp, card = unit
    # The signing key is this board's; the TLS key was wrapped on another board.
    stranger = _board(tmp_path / "stranger-otp")
    write_wrapped_key(card / "foreign-tls.key", wrap_tls_key(
        pki.key_path(keys, "device", dev.name).read_bytes(), stranger.read() or b"", dev.name))
    ledger = (dev.store / "ledger.jsonl").read_bytes()
    config = _recorder_config(keys, dev, card, tmp_path / "otp", card / "foreign-tls.key",
                              tmp_path)
    r = custody("recorder", "--config", config, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "foreign-tls.key" in r.stderr and "another board" in r.stderr
    assert (dev.store / "ledger.jsonl").read_bytes() == ledger  # nothing signed


def test_a_plain_pem_or_the_signing_key_is_refused_as_the_tls_key(unit, tmp_path: Path) -> None:
    keys, dev, otp, card = unit
    signing = load_signing_key(device_key_path(keys, dev.name))
    # The unit's plain PEM: only a key wrapped by this board is taken.
    config = RecorderConfig.from_file(_recorder_config(
        keys, dev, card, tmp_path / "otp", pki.key_path(keys, "device", dev.name), tmp_path))
    with pytest.raises(KeyCustodyError, match="unwrapped private key"):
        load_device_tls_key(config, signing.keyid)
    # The signing key wrapped as the TLS key: the two must be different keys.
    write_wrapped_key(card / "same.key", wrap_tls_key(signing.to_pem(), otp.read() or b"",
                                                      dev.name))
    config = config.with_overrides({"tls_key_file": str(card / "same.key")}, source="test")
    with pytest.raises(KeyCustodyError, match="is the ledger signing key"):
        load_device_tls_key(config, signing.keyid)
    config = config.with_overrides({"tls_key_file": str(card / "tls.key")}, source="test")
    assert load_device_tls_key(config, signing.keyid) == \
        pki.key_path(keys, "device", dev.name).read_bytes()


def test_custody_otp_wrap_purpose_tls(unit, tmp_path: Path, capsys) -> None:
    import argparse

    from device import otp_cli

    keys, dev, otp, _ = unit
    parser = argparse.ArgumentParser()
    otp_cli.add_arguments(parser)
    out = tmp_path / "wrapped" / "tls.key"
    args = parser.parse_args(["wrap", "--purpose", "tls", "--key",
                              str(pki.key_path(keys, "device", dev.name)), "--device", dev.name,
                              "--out", str(out), "--otp-state", str(otp.state_dir)])
    assert otp_cli.run(args) == 0 and "TLS key wrapped" in capsys.readouterr().out
    assert load_tls_key(out, otp, dev.name) == pki.key_path(keys, "device", dev.name).read_bytes()
    assert otp_cli.run(args) == 2  # never over an existing key
    assert "already there" in capsys.readouterr().err
    args = parser.parse_args(["wrap", "--purpose", "tls", "--key",
                              str(pki.cert_path(keys, "device", dev.name)), "--device", dev.name,
                              "--out", str(tmp_path / "bad.key"), "--otp-state",
                              str(otp.state_dir)])
    assert otp_cli.run(args) == 2  # a certificate is not a key: said, nothing written
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert not (tmp_path / "bad.key").exists()
