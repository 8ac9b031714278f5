"""`custody provision` makes the TLS CA and certificates; a TLS key is not a ledger key."""

from __future__ import annotations

import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daemon import pki
from protocol.keys import SigningKey


def custody(*args):
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_provision_makes_a_ca_and_certificates_that_openssl_accepts(tmp_path):
    keys = tmp_path / "keys"
    assert custody("provision", "unit", "--keys", keys, "--unit", "u1", "--dock", "DOCK-A",
                   "--dock-host", "192.168.7.1", "--dock-host", "dock-a.local").returncode == 0
    assert custody("provision", "device", "--keys", keys, "--device", "DEV-7",
                   "--store", tmp_path / "store").returncode == 0
    ca = pki.tls_dir(keys) / pki.CA_CERT
    for kind, name in (("dock", "DOCK-A"), ("device", "DEV-7")):
        crt = pki.cert_path(keys, kind, name)
        r = subprocess.run(["openssl", "verify", "-CAfile", ca, "-purpose",
                            "sslserver" if kind == "dock" else "sslclient", crt],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == (kind == "dock")
        assert pki.key_path(keys, kind, name).stat().st_mode & 0o077 == 0
    dock = x509.load_pem_x509_certificate(pki.cert_path(keys, "dock", "DOCK-A").read_bytes())
    names = dock.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "dock-a.local" in names.get_values_for_type(x509.DNSName)
    # The device's TLS key is its own, not the key that signs its ledger.
    ledger_key = SigningKey.from_pem((keys / "devices" / "DEV-7.key").read_bytes())
    tls_key = serialization.load_pem_private_key(
        pki.key_path(keys, "device", "DEV-7").read_bytes(), None)
    assert tls_key.public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw) != \
        ledger_key.public_raw
    # Revocation: on the CRL, which openssl checks too.
    r = custody("provision", "revoke", "--keys", keys, "--device", "DEV-7")
    assert r.returncode == 0 and "revoked device DEV-7" in r.stdout
    assert pki.is_revoked(keys, "DEV-7") and not pki.is_revoked(keys, "DOCK-A", "dock")
    r = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", ca, "-CRLfile",
                        pki.tls_dir(keys) / pki.CRL, pki.cert_path(keys, "device", "DEV-7")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "revoked" in (r.stdout + r.stderr)
    # A device the unit never enrolled has nothing to revoke: an error naming the file.
    assert custody("provision", "revoke", "--keys", keys, "--device", "NOPE").returncode == 2
