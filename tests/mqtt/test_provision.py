"""``custody provision``'s TLS and Mosquitto part, end to end with the broker it configures."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from daemon import pki
from daemon.mqtt import topics
from daemon.mqtt.client import MqttConnection
from daemon.mqtt.presence import Presence
from daemon.pki import PKIError, UnitCA, certificate_name
from tests.mosquitto import MOSQUITTO, free_port


def custody(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def broker_dir():
    folder = Path(tempfile.mkdtemp(prefix="custody-prov-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def start(conf: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
    for _ in range(500):
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.01)
    raise AssertionError("mosquitto did not listen")


def can_publish(keys: Path, port: int, name: str, role: str) -> int | None:
    tls = keys / "tls"
    conn = MqttConnection("127.0.0.1", port, tls / "ca.crt", pki.cert_path(keys, role, name),
                          pki.key_path(keys, role, name))
    p = Presence(conn, "u1")
    p.start()
    try:
        if not p.wait_connected(3):
            return None
        return p.publish(topics.status("u1", name), b"online")
    finally:
        p.close()


def test_provision_makes_a_broker_that_knows_the_units_identities(tmp_path: Path, broker_dir):
    keys = tmp_path / "keys"
    assert custody("provision", "unit", "--keys", keys, "--unit", "u1", "--dock",
                   "D1").returncode == 0
    r = custody("provision", "device", "--keys", keys, "--device", "X1", "--store",
                tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert custody("provision", "device", "--keys", keys, "--device", "X2", "--store",
                   tmp_path / "s2").returncode == 0
    r = custody("provision", "cert", "--keys", keys, "--role", "watcher", "--name", "W1")
    assert r.returncode == 0 and "SIGHUP" in r.stdout
    tls = keys / "tls"
    assert certificate_name(_der(tls / "devices" / "X1.crt")) == "X1"
    for key in [tls / "ca.key", tls / "docks" / "D1.key", tls / "devices" / "X1.key"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the TLS key is not the ledger signing key
    assert (tls / "devices" / "X1.key").read_bytes() != (keys / "devices" / "X1.key").read_bytes()

    port = free_port()
    out = broker_dir / "mosq"
    r = custody("provision", "mosquitto", "--keys", keys, "--out", out, "--port", port, "--crl")
    assert r.returncode == 0, r.stderr
    conf = (out / "mosquitto.conf").read_text()
    for line in ["require_certificate true", "use_identity_as_username true",
                 "allow_anonymous false", f"acl_file {out / 'acl'}", f"listener {port} 127.0.0.1",
                 f"crlfile {out / 'crl.pem'}"]:
        assert line in conf.splitlines()
    assert not (out / "ca.key").exists()  # the CA's key never goes to the broker
    if os.geteuid() == 0:
        assert (out / "broker.key").stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
    assert stat.S_IMODE((out / "broker.key").stat().st_mode) == 0o600

    proc = start(out / "mosquitto.conf", port)
    try:
        assert can_publish(keys, port, "X1", "device") in (0, 0x10)
        assert can_publish(keys, port, "W1", "watcher") == 0x87  # watchers only read
        # revoke X1: after the broker restarts with the new CRL, X1 cannot even connect
        r = custody("provision", "revoke", "--keys", keys, "--name", "X1")
        assert r.returncode == 0 and "restart" in r.stdout
        assert custody("provision", "mosquitto", "--keys", keys, "--out", out, "--port", port,
                       "--crl").returncode == 0
        proc.terminate()
        proc.wait()
        proc = start(out / "mosquitto.conf", port)
        assert can_publish(keys, port, "X1", "device") is None
        assert can_publish(keys, port, "X2", "device") in (0, 0x10)
    finally:
        proc.terminate()
        proc.wait()


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def test_names_are_unique_across_roles_and_cannot_widen_a_topic(tmp_path: Path):
    ca = UnitCA.create(tmp_path / "tls", "u1")
    ca.issue("CAM-1", "device")
    with pytest.raises(PKIError, match="already has a device certificate"):
        ca.issue("CAM-1", "watcher")
    for bad in ["a/b", "+", "#", "", "x" * 65, "../x", "a b"]:
        with pytest.raises(PKIError, match="identity"):
            ca.issue(bad, "device")
    with pytest.raises(PKIError, match="hosts"):
        ca.issue("b", "broker")


def test_a_broker_folder_its_user_cannot_reach_is_refused_by_name(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("only root's Mosquitto drops to user mosquitto")
    keys = tmp_path / "keys"
    assert custody("provision", "unit", "--keys", keys, "--unit", "u1").returncode == 0
    os.chmod(tmp_path, 0o700)
    r = custody("provision", "mosquitto", "--keys", keys, "--out", tmp_path / "m")
    assert r.returncode == 2 and "cannot enter" in r.stderr and "mosquitto" in r.stderr


def test_the_key_folder_functions_the_offload_code_uses(tmp_path: Path):
    keys = tmp_path / "keys"
    assert pki.create_ca(keys, "u1") == keys / "tls" / "ca.crt"
    assert pki.load_crl(keys / "tls" / pki.CRL) is not None  # empty, there from the start
    crt = pki.issue(keys, "dock", "D1", hosts=("dock.local",))
    assert crt == pki.cert_path(keys, "dock", "D1") and pki.key_path(keys, "dock", "D1").exists()
    san = x509.load_pem_x509_certificate(crt.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"D1", "localhost", "dock.local"}
    pki.issue(keys, "device", "X1")
    assert not pki.is_revoked(keys, "X1")
    serial = pki.revoke(keys, "device", "X1")
    assert pki.is_revoked(keys, "X1") and not pki.is_revoked(keys, "D1", "dock")
    assert serial in {r.serial_number for r in pki.load_crl(keys / "tls" / pki.CRL)}
    with pytest.raises(PKIError, match="no such certificate"):
        pki.revoke(keys, "device", "D1")
