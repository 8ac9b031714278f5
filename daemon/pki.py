"""The unit's TLS certificates: its CA, a certificate per dock and per device, a CRL.

These keys only authenticate the link (HTTPS offload, MQTT); they never sign
evidence. A device's TLS key is made apart from its ledger signing key, so a
stolen TLS key lets no one forge a ledger entry, and revoking it (the CRL)
leaves the device's ledger verifiable. Layout, under the unit's key folder::

    tls/ca.crt  tls/ca.key           the unit's CA (Ed25519; keep ca.key offline)
    tls/crl.pem                      revoked certificates, signed by the CA
    tls/docks/<dock>.crt|.key        server (and MQTT client) certificate of a dock
    tls/devices/<device>.crt|.key    client certificate of a device; CN = device id

    >>> import tempfile
    >>> keys = Path(tempfile.mkdtemp())
    >>> _ = create_ca(keys, "unit-1")
    >>> issue(keys, "device", "DEV-1").name
    'DEV-1.crt'
    >>> is_revoked(keys, "DEV-1")
    False
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daemon.provision import ProvisionError, write_private

TLS_DIR = "tls"
CA_CERT, CA_KEY, CRL = "ca.crt", "ca.key", "crl.pem"
VALID_DAYS = 3650  # a unit's devices live for years; revocation is the CRL's job
KINDS = {"dock": "docks", "device": "devices"}


def tls_dir(keys_dir: Path) -> Path:
    return Path(keys_dir) / TLS_DIR


def cert_path(keys_dir: Path, kind: str, name: str) -> Path:
    return tls_dir(keys_dir) / KINDS[kind] / f"{name}.crt"


def key_path(keys_dir: Path, kind: str, name: str) -> Path:
    return tls_dir(keys_dir) / KINDS[kind] / f"{name}.key"


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(keys_dir: Path, unit: str) -> Path:
    """Make the unit's CA and an empty CRL; refuses if a CA is already there."""
    folder = tls_dir(keys_dir)
    if (folder / CA_CERT).exists():
        raise ProvisionError(f"{folder / CA_CERT}: the unit already has a CA")
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{unit} custody CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, None))
    write_private(folder / CA_KEY, _pem(key))
    (folder / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_crl(keys_dir, [])
    return folder / CA_CERT


def _load_ca(keys_dir: Path) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    folder = tls_dir(keys_dir)
    try:
        cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), None)
    except OSError as e:
        raise ProvisionError(f"{e.filename}: {e.strerror} (run `custody provision unit` "
                             "first)") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisionError(f"{folder / CA_KEY}: not an Ed25519 key")
    return cert, key


def issue(keys_dir: Path, kind: str, name: str, hosts: tuple[str, ...] = ()) -> Path:
    """Issue a dock's or a device's certificate (CN = its id); returns the .crt path.

    A dock's certificate names ``hosts`` (DNS names or IP addresses it is
    reached at) and serves as a TLS server and an MQTT client; a device's is
    a client certificate only.
    """
    crt, keyfile = cert_path(keys_dir, kind, name), key_path(keys_dir, kind, name)
    if crt.exists():
        raise ProvisionError(f"{crt}: a certificate is already there; refusing to replace it")
    ca_cert, ca_key = _load_ca(keys_dir)
    key = Ed25519PrivateKey.generate()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind == "dock":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if kind == "dock":
        alt: list[x509.GeneralName] = []
        for host in (name, "localhost", "127.0.0.1", *hosts):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, None)
    write_private(keyfile, _pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


def _write_crl(keys_dir: Path, revoked: list[x509.RevokedCertificate]) -> None:
    ca_cert, ca_key = _load_ca(keys_dir)
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=VALID_DAYS)))
    for item in revoked:
        builder = builder.add_revoked_certificate(item)
    crl = builder.sign(ca_key, None)
    path = tls_dir(keys_dir) / CRL
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(Path(path).read_bytes())


def revoke(keys_dir: Path, kind: str, name: str) -> int:
    """Put a dock's or device's certificate on the CRL; returns its serial number."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path(keys_dir, kind, name).read_bytes())
    except OSError as e:
        raise ProvisionError(f"{e.filename}: {e.strerror}") from e
    crl = load_crl(tls_dir(keys_dir) / CRL)
    revoked = list(crl)
    if not any(r.serial_number == cert.serial_number for r in revoked):
        revoked.append(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                       .revocation_date(_now()).build())
    _write_crl(keys_dir, revoked)
    return cert.serial_number


def is_revoked(keys_dir: Path, name: str, kind: str = "device") -> bool:
    cert = x509.load_pem_x509_certificate(cert_path(keys_dir, kind, name).read_bytes())
    crl = load_crl(tls_dir(keys_dir) / CRL)
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
