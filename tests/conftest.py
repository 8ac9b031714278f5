"""Fixtures shared by the whole suite: a provisioned unit with a device store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from daemon.provision import (
    ARCHIVE_SECRET,
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,
)
from device.ledger import LedgerWriter
from device.sample import record_sample
from protocol.entries import Body, Entry, EntryTime, Segment
from protocol.envelope import SignedEntry, parse_line, sign_entry, split_lines
from protocol.keys import ArchiveSecretKey, SigningKey
from protocol.receipt import ArchivedMedia, OffloadReceipt, sign_receipt
from protocol.store_reader import LEDGER_NAME, TRUST_NAME, read_store, read_trust
from protocol.trust import TrustFile
from protocol.verify import ContinuityReport, VerificationPolicy, verify
from tests.mosquitto import Broker, UnitPKI

# The hardware simulators' fixtures (sim_hardware, pulse_null_sink, console_cable)
# are shipped in the package, as gpiozero ships its mock pins.
pytest_plugins = ["hardware.sim.fixtures"]

DEVICE, OTHER_DEVICE, OFFICER, DOCK = "DEV-0001", "DEV-0002", "PC-0042", "DOCK-01"


class StepClock:
    """Entry times that advance 100 ms per call, on one boot, unless told otherwise."""

    def __init__(self, utc_ns: int = 1_790_000_000_000_000_000, boot_id: str = "boot-1"):
        self.utc_ns, self.boot_id = utc_ns, boot_id

        self.mono_ns = 1_000_000_000

    def __call__(self) -> EntryTime:
        self.utc_ns += 100_000_000
        self.mono_ns += 100_000_000
        return EntryTime(utc_ns=self.utc_ns, clock_source="rtc", clock_synced=True,
                         monotonic_ns=self.mono_ns, boot_id=self.boot_id)

    def advance_to(self, utc_ns: int) -> None:
        """Real time passes (both clocks) until the wall clock reads at least ``utc_ns``."""
        if utc_ns > self.utc_ns:
            self.mono_ns += utc_ns - self.utc_ns
            self.utc_ns = utc_ns


@dataclasses.dataclass
class Unit:
    """A provisioned unit: keys, trust file, and one device store."""

    keys: Path
    store: Path
    clock: StepClock

    @property
    def trust(self) -> TrustFile:
        return read_trust(self.keys / TRUST_NAME)

    @property
    def device_key(self) -> SigningKey:
        return load_signing_key(device_key_path(self.keys, DEVICE))

    @property
    def dock_key(self) -> SigningKey:
        return load_signing_key(self.keys / "docks" / f"{DOCK}.key")

    @property
    def archive(self) -> ArchiveSecretKey:
        return ArchiveSecretKey.from_pem((self.keys / ARCHIVE_SECRET).read_bytes())

    @property
    def archive_public(self) -> bytes:
        return self.archive.public_raw

    @property
    def ledger_path(self) -> Path:
        return self.store / LEDGER_NAME

    def ledger(self) -> LedgerWriter:
        return LedgerWriter(self.store, DEVICE, self.device_key, self.clock)

    def append(self, *bodies: Body) -> list[SignedEntry]:
        """Append entries; as on a device, one sealing capture is signed after it."""
        out = []
        with self.ledger() as ledger:
            for b in bodies:
                if isinstance(b, Segment):
                    self.clock.advance_to(b.last_capture_utc_ns)
                out.append(ledger.append(b))
        return out

    def record(self, segments: int = 3) -> list[SignedEntry]:
        with self.ledger() as ledger:
            return record_sample(ledger, self.store, self.archive_public, OFFICER,
                                 segments=segments)

    def lines(self) -> list[bytes]:
        return split_lines(self.ledger_path.read_bytes())

    def entries(self) -> list[SignedEntry]:
        return [parse_line(line) for line in self.lines()]

    def write_lines(self, lines: Iterable[bytes]) -> None:
        self.ledger_path.write_bytes(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))

    def verify(self, receipts: Iterable[object] = ()) -> ContinuityReport:
        contents = read_store(self.store)
        policy = VerificationPolicy(receipts=[*contents.receipts, *receipts])
        return verify(contents.ledger, contents.media, self.trust, policy, contents.findings)

    def receipt(self, last_seq: int | None = None, key: SigningKey | None = None,
                dock: str = DOCK) -> dict:
        """A dock-signed receipt for entries 0..last_seq (default: all)."""
        entries = self.entries()
        last = entries[-1] if last_seq is None else entries[last_seq]
        media = [ArchivedMedia(file=m.file, sha256=m.sha256)
                 for e in entries[: last.entry.seq + 1] for m in e.entry.media()]
        receipt = OffloadReceipt(dock=dock, device=DEVICE, first_seq=0, last_seq=last.entry.seq,
                                 head=last.digest, media=media, archived_utc_ns=self.clock.utc_ns)
        return sign_receipt(receipt, (key or self.dock_key).signer())


def resign(entry: Entry, key: SigningKey, **changes: object) -> bytes:
    """A ledger line for ``entry`` with ``changes``, signed by ``key``."""
    return sign_entry(dataclasses.replace(entry, **changes), key.signer()).to_line()


@pytest.fixture
def unit(tmp_path: Path) -> Unit:
    """A unit with DEV-0001 enrolled (assigned to PC-0042) and one 3-segment recording."""
    keys, store = tmp_path / "keys", tmp_path / "device"
    clock = StepClock()
    create_unit(keys, "test-unit", [DOCK])
    enrol_device(keys, DEVICE, store, clock, officer=OFFICER, by="TECH-01")
    u = Unit(keys, store, clock)
    u.record()
    return u


@pytest.fixture
def other_store(unit: Unit, tmp_path: Path) -> Path:
    """A second device of the same unit, with its own recording."""
    store = tmp_path / "other"
    clock = StepClock(boot_id="boot-other")
    enrol_device(unit.keys, OTHER_DEVICE, store, clock, officer="PC-0043")
    key = load_signing_key(device_key_path(unit.keys, OTHER_DEVICE))
    with LedgerWriter(store, OTHER_DEVICE, key, clock) as ledger:
        record_sample(ledger, store, unit.archive_public, "PC-0043", segments=2)
    return store


# --- a real Mosquitto for the unit (tests/mosquitto.py) -------------------------

WATCHER = "WATCH-01"


@pytest.fixture
def unit_pki(tmp_path: Path) -> UnitPKI:
    """The test unit's TLS CA with certificates for the broker, dock, devices, a watcher."""
    return UnitPKI.create(tmp_path / "pki", "test-unit", docks=[DOCK],
                          devices=[DEVICE, OTHER_DEVICE], watchers=[WATCHER])


@pytest.fixture
def mosquitto(unit_pki: UnitPKI) -> Iterator[Broker]:
    """A real Mosquitto on a free 127.0.0.1 port: TLS, client certificates, the unit's ACL."""
    with Broker(unit_pki) as broker:
        yield broker
