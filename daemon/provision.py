"""Provisioning: a unit's keys and trust file, and enrolling devices into it.

Layout of a unit's key folder (``custody provision``)::

    trust.json                 public: which keys sign for which device / dock
    archive-secret.key         X25519: decrypts every segment (keep offline)
    archive-signing.key        Ed25519: the archive's own statements
    docks/<dock id>.key        Ed25519: signs receipts and attestations
    devices/<device id>.key    Ed25519: goes onto that device only
    tls/                       the unit's TLS CA and link certificates (daemon/pki.py)

Private keys are written 0600 and never overwritten; their bytes are never
printed or logged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hardware.host.durable import replace_atomically, write_new
from protocol.chain import EntryClock, next_entry
from protocol.entries import Assigned, Body, EntryTime, Provisioned
from protocol.envelope import SignedEntry, sign_entry
from protocol.journal_auth import MARK_FILES, JournalKey, high_water_record
from protocol.keys import ArchiveSecretKey, SigningKey
from protocol.store_reader import LEDGER_NAME, TRUST_NAME, read_trust
from protocol.trust import Holder, TrustedKey, TrustFile

ARCHIVE_SECRET = "archive-secret.key"
ARCHIVE_SIGNING = "archive-signing.key"


class ProvisionError(Exception):
    """Provisioning refused; the message names the path or id."""


def write_private(path: Path, pem: bytes) -> None:
    """Write a private key 0600; refuse to replace an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new(path, pem, mode=0o600)
    except FileExistsError as e:
        raise ProvisionError(f"{path}: a key is already there; refusing to replace it") from e


def write_trust(keys_dir: Path, trust: TrustFile) -> None:
    replace_atomically(keys_dir / TRUST_NAME, trust.to_bytes())


def create_unit(keys_dir: Path, unit: str, docks: list[str],
                dock_hosts: tuple[str, ...] = ()) -> TrustFile:
    """Create a unit's archive and dock keys, its trust file and its TLS CA.

    Each dock also gets its TLS certificate, naming ``dock_hosts`` (where
    devices reach it) besides localhost.
    """
    from daemon import pki

    keys_dir = Path(keys_dir)
    if (keys_dir / TRUST_NAME).exists():
        raise ProvisionError(f"{keys_dir / TRUST_NAME}: a unit is already provisioned here")
    archive = ArchiveSecretKey.generate()
    signing = SigningKey.generate()
    write_private(keys_dir / ARCHIVE_SECRET, archive.to_pem())
    write_private(keys_dir / ARCHIVE_SIGNING, signing.to_pem())
    trust = TrustFile(
        unit=unit,
        archive_encryption_key=archive.fingerprint,
        archive=Holder(keys=[signing.keyid]),
        keys={
            archive.fingerprint: TrustedKey(keytype="x25519", public=archive.public_raw.hex()),
            signing.keyid: TrustedKey(keytype="ed25519", public=signing.public_hex),
        },
        docks={},
        devices={},
    )
    for dock in docks:
        key = SigningKey.generate()
        write_private(keys_dir / "docks" / f"{dock}.key", key.to_pem())
        trust.keys[key.keyid] = TrustedKey(keytype="ed25519", public=key.public_hex)
        trust.docks[dock] = Holder(keys=[key.keyid])
    write_trust(keys_dir, trust)
    pki.create_ca(keys_dir, unit)
    for dock in docks:
        pki.issue(keys_dir, "dock", dock, dock_hosts)
    return trust


def provisioning_clock() -> EntryClock:
    """Entry times from this (the provisioning) machine's clocks and boot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: one id per process is the best we can say
        boot = f"pid-{os.getpid()}"

    def now() -> EntryTime:
        return EntryTime(utc_ns=time.time_ns(), clock_source="ntp", clock_synced=True,
                         monotonic_ns=time.monotonic_ns(), boot_id=boot)

    return now


def write_genesis(store: Path, device: str, key: SigningKey, clock: EntryClock,
                  bodies: list[Body]) -> list[SignedEntry]:
    """A new device ledger holding ``bodies`` (the chain rule is protocol's), fsync'd."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    signed: list[SignedEntry] = []
    for body in bodies:
        last = signed[-1] if signed else None
        signed.append(sign_entry(next_entry(last, device, clock(), body), key.signer()))
    write_new(store / LEDGER_NAME, b"".join(s.to_line() for s in signed))
    # Its high-water mark from the start: a ledger later cut back to this genesis, or
    # below, with its marks removed, is still declared by the device (a ledger_gap).
    if signed:
        # MARK_FILES[1]: the device's next write goes to the other file.
        write_new(store / MARK_FILES[1], high_water_record(
            JournalKey.derive(key), device, signed[-1].entry.seq, signed[-1].digest, 1))
    return signed


def enrol_device(keys_dir: Path, device: str, store: Path, clock: EntryClock,
                 officer: str | None = None, by: str = "") -> TrustFile:
    """Give a device its key, list it in the trust file, and write its genesis.

    The store gets the ``provisioned`` entry (seq 0) and, if an officer is
    named, the ``assigned`` entry. The device also gets its TLS client
    certificate (a key apart from its ledger key), if the unit has a CA.
    """
    from daemon import pki

    keys_dir = Path(keys_dir)
    trust = read_trust(keys_dir / TRUST_NAME)
    if device in trust.devices:
        raise ProvisionError(f"device {device!r} is already enrolled in {keys_dir / TRUST_NAME}")
    if (Path(store) / "ledger.jsonl").exists():
        raise ProvisionError(f"{store}: already holds a ledger; refusing to start another")
    key = SigningKey.generate()
    write_private(keys_dir / "devices" / f"{device}.key", key.to_pem())
    trust.keys[key.keyid] = TrustedKey(keytype="ed25519", public=key.public_hex)
    trust.devices[device] = Holder(keys=[key.keyid])
    write_trust(keys_dir, trust)
    if (pki.tls_dir(keys_dir) / pki.CA_CERT).exists():
        pki.issue(keys_dir, "device", device)
    genesis: list[Body] = [Provisioned(
        unit=trust.unit, device_key=key.keyid, archive_key=trust.archive_encryption_key,
        dock_keys=[k for holder in trust.docks.values() for k in holder.keys])]
    if officer:
        genesis.append(Assigned(officer=officer, by=by))
    write_genesis(store, device, key, clock, genesis)
    return trust


def device_key_path(keys_dir: Path, device: str) -> Path:
    return Path(keys_dir) / "devices" / f"{device}.key"


def load_signing_key(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pem(Path(path).read_bytes())
    except OSError as e:
        raise ProvisionError(f"{path}: {e.strerror}") from e
