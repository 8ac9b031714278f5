"""The unit's TLS certificate authority: who may talk to the broker and the dock.

One Ed25519 CA per unit signs one certificate per identity. The certificate's
common name (CN) *is* the identity: Mosquitto takes it as the MQTT user name
(``use_identity_as_username``) and the dock's HTTPS server reads it as the
device id. So names are unique across roles and restricted to letters, digits
and ``._-`` (never ``/``, ``+`` or ``#``, which would widen an ACL topic).

These TLS keys are not the ledger signing keys of ``daemon/provision.py``: a
stolen TLS key lets its thief connect as the device, not sign its evidence.

Layout under the unit's key folder::

    tls/ca.crt  tls/ca.key              the unit's CA (ca.key: keep offline)
    tls/crl.pem                         revoked certificates (empty at first)
    tls/{brokers,docks,devices,watchers}/<name>.crt  .key

    ca = UnitCA.create(keys / "tls", unit="Unit-7")
    ca.issue("DOCK-01", "dock", hosts=["127.0.0.1"])   # -> IssuedCert paths
    ca.revoke("CAM-0042")                               # -> tls/crl.pem

The functions at the end (``create_ca``, ``issue``, ``revoke``, ``cert_path``,
…) are the same operations addressed by the unit's key folder, as the dock's
offload code uses them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from daemon.provision import ProvisionError
from hardware.host.durable import replace_atomically, write_new

ROLES = ("broker", "dock", "device", "watcher")
ROLE_DIRS = {"broker": "brokers", "dock": "docks", "device": "devices", "watcher": "watchers"}
KINDS = ROLE_DIRS  # the name the offload code knows it by
TLS_DIR = "tls"
# Servers need serverAuth (and the hosts they answer on); the dock is both a
# TLS server (HTTPS offload) and an MQTT client.
_SERVER_ROLES = ("broker", "dock")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CA_CERT, CA_KEY, CRL = "ca.crt", "ca.key", "crl.pem"
CA_YEARS, LEAF_YEARS = 20, 5


class PKIError(ProvisionError):
    """A certificate could not be made, loaded or revoked; names the file or name."""


@dataclass(frozen=True)
class IssuedCert:
    name: str
    role: str
    cert: Path
    key: Path
    serial: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not exclusive:
        replace_atomically(path, data, mode)
        return
    try:
        write_new(path, data, mode)
    except FileExistsError as e:
        raise PKIError(f"{path}: already exists; refusing to replace it") from e


def _key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PKIError(f"identity {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
                       "(it becomes an MQTT user name and topic level)")
    return name


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class UnitCA:
    """The unit's CA, kept in a folder; issues and revokes certificates."""

    def __init__(self, folder: Path, cert: x509.Certificate, key: Ed25519PrivateKey):
        self.folder, self.cert, self._key = Path(folder), cert, key

    def __repr__(self) -> str:  # never show key material
        return f"UnitCA({self.folder}, {self.cert.subject.rfc4514_string()})"

    @property
    def cert_path(self) -> Path:
        return self.folder / CA_CERT

    @property
    def crl_path(self) -> Path:
        return self.folder / CRL

    @classmethod
    def create(cls, folder: Path, unit: str) -> UnitCA:
        folder = Path(folder)
        if (folder / CA_CERT).exists():
            raise PKIError(f"{folder / CA_CERT}: a CA is already there")
        key = Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, unit),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"{unit} custody CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, None)
        )
        _write(folder / CA_KEY, _key_pem(key), 0o600, exclusive=True)
        _write(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644,
               exclusive=True)
        ca = cls(folder, cert, key)
        ca.write_crl(set())  # so a broker or dock given the CRL can start before any revoke
        return ca

    @classmethod
    def load(cls, folder: Path) -> UnitCA:
        folder = Path(folder)
        try:
            cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), None)
        except OSError as e:
            raise PKIError(f"{e.filename}: {e.strerror}") from e
        except ValueError as e:
            raise PKIError(f"{folder}: not a CA certificate and Ed25519 key ({e})") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise PKIError(f"{folder / CA_KEY}: not an Ed25519 key")
        return cls(folder, cert, key)

    # --- issuing --------------------------------------------------------------

    def paths(self, name: str, role: str) -> tuple[Path, Path]:
        folder = self.folder / ROLE_DIRS[role]
        return folder / f"{name}.crt", folder / f"{name}.key"

    def find(self, name: str) -> IssuedCert | None:
        """The certificate issued to ``name``, whatever its role."""
        for role in ROLES:
            cert_path, key_path = self.paths(name, role)
            if cert_path.exists():
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                return IssuedCert(name, role, cert_path, key_path, cert.serial_number)
        return None

    def issue(self, name: str, role: str, hosts: list[str] | tuple[str, ...] = ()) -> IssuedCert:
        """A fresh key and certificate for ``name``; ``hosts`` for a server's SAN."""
        check_name(name)
        if role not in ROLES:
            raise PKIError(f"role {role!r}: one of {', '.join(ROLES)}")
        if (existing := self.find(name)) is not None:
            raise PKIError(f"identity {name!r} already has a {existing.role} certificate "
                           f"({existing.cert}); names are unique across roles")
        if role == "broker" and not hosts:
            raise PKIError(f"broker {name!r}: name the hosts it answers on")
        key = Ed25519PrivateKey.generate()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role in _SERVER_ROLES:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.unit),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * LEAF_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_host_names(list(hosts))),
                                            critical=False)
        cert = builder.sign(self._key, None)
        cert_path, key_path = self.paths(name, role)
        _write(key_path, _key_pem(key), 0o600, exclusive=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, exclusive=True)
        return IssuedCert(name, role, cert_path, key_path, cert.serial_number)

    @property
    def unit(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else ""

    # --- revoking -------------------------------------------------------------

    def revoked_serials(self) -> set[int]:
        if not self.crl_path.exists():
            return set()
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        return {r.serial_number for r in crl}

    def revoke(self, name: str) -> Path:
        """Add ``name``'s certificate to the CRL (Mosquitto's ``crlfile``) and re-sign it.

        The certificate files are kept: what was issued stays on record.
        """
        issued = self.find(name)
        if issued is None:
            raise PKIError(f"identity {name!r}: no certificate was issued to it")
        return self.write_crl(self.revoked_serials() | {issued.serial})

    def write_crl(self, serials: set[int] | None = None) -> Path:
        """(Re)write the CRL, listing ``serials`` (default: those listed now)."""
        serials = self.revoked_serials() if serials is None else serials
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - dt.timedelta(minutes=5))
                   .next_update(now + dt.timedelta(days=365)))
        for serial in sorted(serials):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(now).build())
        crl = builder.sign(self._key, None)
        tmp = self.crl_path.with_suffix(".tmp")
        _write(tmp, crl.public_bytes(serialization.Encoding.PEM), 0o644, exclusive=False)
        os.replace(tmp, self.crl_path)
        return self.crl_path


def certificate_name(der: bytes) -> str | None:
    """The CN of a DER certificate (what a TLS peer presented), or None."""
    cert = x509.load_der_x509_certificate(der)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


# --- the same, addressed by the unit's key folder --------------------------------


def tls_dir(keys_dir: Path) -> Path:
    return Path(keys_dir) / TLS_DIR


def cert_path(keys_dir: Path, kind: str, name: str) -> Path:
    return tls_dir(keys_dir) / ROLE_DIRS[kind] / f"{name}.crt"


def key_path(keys_dir: Path, kind: str, name: str) -> Path:
    return tls_dir(keys_dir) / ROLE_DIRS[kind] / f"{name}.key"


def create_ca(keys_dir: Path, unit: str) -> Path:
    """Make the unit's CA (and an empty CRL); returns its certificate's path."""
    return UnitCA.create(tls_dir(keys_dir), unit).cert_path


def issue(keys_dir: Path, kind: str, name: str, hosts: tuple[str, ...] = ()) -> Path:
    """Issue ``name`` a certificate of role ``kind``; returns the .crt path.

    A dock is a TLS server too: its certificate names itself, localhost,
    127.0.0.1 and ``hosts``.
    """
    if kind == "dock":
        hosts = tuple(dict.fromkeys((name, "localhost", "127.0.0.1", *hosts)))
    return UnitCA.load(tls_dir(keys_dir)).issue(name, kind, hosts=hosts).cert


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(Path(path).read_bytes())


def revoke(keys_dir: Path, kind: str, name: str) -> int:
    """Put ``name``'s certificate on the CRL; returns its serial number."""
    ca = UnitCA.load(tls_dir(keys_dir))
    issued = ca.find(name)
    if issued is None or issued.role != kind:
        raise PKIError(f"{cert_path(keys_dir, kind, name)}: no such certificate")
    ca.revoke(name)
    return issued.serial


def is_revoked(keys_dir: Path, name: str, kind: str = "device") -> bool:
    ca = UnitCA.load(tls_dir(keys_dir))
    issued = ca.find(name)
    return issued is not None and issued.role == kind and issued.serial in ca.revoked_serials()
