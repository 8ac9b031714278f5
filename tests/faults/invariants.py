"""The invariants every fault trial on the dock's side is judged by, after every trial.

One :class:`World` — a provisioned unit, its device, the dock's archive — is
shared by the trials of a run, so each check covers everything archived so far:

- no sealed segment lost: every file a ``segment`` entry seals is on the
  device, or in the archive with its sealed SHA-256;
- no duplicate in the archive: its ledger is the device's, each entry once and
  in order, and its media are exactly the files that ledger seals;
- the device never frees media without a valid receipt: every file gone from
  the device is named, with its SHA-256, by a dock-signed receipt in the
  device's ledger whose head is the device's own entry;
- ``custody verify`` of the archive gives the verdict the trial predicts
  (:func:`check_offloaded`);
- every attestation the dock made is delivered to a subscriber, exactly once
  after deduplication by id, and the attested ranges follow one another with
  no entry attested twice (:func:`check_attested`).

No capture is cut in these trials, so "every cut appears as an interruption"
is the recorder's trials' invariant (``tests/faults/trials.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from daemon.mqtt.watch import ACCEPTED, UnitBoard
from protocol.attestation import Attestation, check_attestation
from protocol.entries import OffloadReceiptEntry
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.receipt import open_receipt
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, TRUST_NAME, read_trust, sha256_file
from tests.daemon.dockkit import Device, make_unit
from tests.faults.trials import TrialResult


@dataclass
class World:
    """A provisioned unit with one device and the dock's archive, shared by trials."""

    root: Path
    keys: Path
    device: Device
    archive: Path

    @classmethod
    def create(cls, root: Path, archive: Path | None = None) -> World:
        keys, (device,) = make_unit(root)
        return cls(root, keys, device, archive or root / "archive")

    @property
    def archived(self) -> Path:
        return self.archive / "devices" / self.device.name

    def close(self) -> None:
        self.device.host.close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def custody_verify(path: Path) -> tuple[int, dict]:
    """``custody verify PATH --json``, the CLI's own code run in this process."""
    import custody_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = custody_cli.main(["verify", str(path), "--json"])
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def lines(path: Path) -> list[bytes]:
    return split_lines(path.read_bytes()) if path.exists() else []


def receipted_files(world: World) -> tuple[dict[str, str], list[str]]:
    """file -> SHA-256 over every valid receipt in the device's ledger; the bad ones."""
    signed = [parse_line(line) for line in lines(world.device.store / LEDGER_NAME)]
    digests = {s.entry.seq: s.digest for s in signed}
    trust = read_trust(world.keys / TRUST_NAME)
    files, bad = {}, []
    for s in signed:
        if not isinstance(s.entry.body, OffloadReceiptEntry):
            continue
        try:
            receipt = open_receipt(s.entry.body.receipt, trust)
        except ProtocolError as e:
            bad.append(f"entry {s.entry.seq}: receipt does not open: {e}")
            continue
        if receipt.device != world.device.name or digests.get(receipt.last_seq) != receipt.head:
            bad.append(f"entry {s.entry.seq}: receipt not for this ledger")
            continue
        files.update((m.file, m.sha256) for m in receipt.media)
    return files, bad


def check_freed(result: TrialResult, world: World, label: str,
                trial: int | None = None) -> None:
    """Nothing gone from the device that a valid receipt in its ledger does not name;
    a problem counts against ``trial`` (None: the whole run)."""
    sealed = {m.file: m.sha256 for line in lines(world.device.store / LEDGER_NAME)
              for m in parse_line(line).entry.media()}
    receipted, bad = receipted_files(world)
    for b in bad:
        result.fail(trial, f"{label}: {b}")
    on_device = set(world.device.media_left())
    for file, sha256 in sorted(sealed.items()):
        if file not in on_device and receipted.get(file) != sha256:
            result.fail(trial, f"{label}: {file} freed without a receipt naming it")


def check_offloaded(result: TrialResult, world: World, label: str, verdict: str = "intact",
                    trial: int | None = None) -> None:
    """The invariants of the module doc, against everything archived so far; a
    problem counts against ``trial`` (None: the whole run)."""
    device_lines = lines(world.device.store / LEDGER_NAME)
    archived_lines = lines(world.archived / LEDGER_NAME)
    if archived_lines != device_lines[:len(archived_lines)]:
        result.fail(trial, f"{label}: the archived ledger is not the device's")
    seqs = [parse_line(line).entry.seq for line in archived_lines]
    if seqs != list(range(len(seqs))):
        twice = sorted(s for s, n in Counter(seqs).items() if n > 1)
        result.fail(trial, f"{label}: archived seqs not 0..{len(seqs) - 1} "
                           f"(twice: {twice[:5]})")
    named = {m.file for line in archived_lines for m in parse_line(line).entry.media()}
    media = world.archived / MEDIA_DIR
    held = {p.name for p in media.iterdir()} if media.is_dir() else set()
    if held != named:
        result.fail(trial, f"{label}: archive media not the files its ledger seals "
                           f"(extra {sorted(held - named)[:3]}, missing "
                           f"{sorted(named - held)[:3]})")
    check_freed(result, world, label, trial)
    on_device = set(world.device.media_left())
    for line in device_lines:
        for ref in parse_line(line).entry.media():
            path = media / ref.file
            if ref.file in on_device:
                continue
            if not path.is_file() or sha256_file(path).sha256 != ref.sha256:
                result.lost += 1
                result.fail(trial, f"{label}: {ref.file} is neither on the device nor "
                                   "intact in the archive")
    if archived_lines:
        code, report = custody_verify(world.archive)
        if report.get("verdict") != verdict:
            kinds = [f["kind"] for s in report.get("stores", []) for f in s["findings"]
                     if f["severity"] == "error"]
            result.fail(trial, f"{label}: custody verify of the archive: exit {code}, "
                               f"verdict {report.get('verdict')} (errors {kinds[:5]})")


class CountingBoard(UnitBoard):
    """A watcher's board that also keeps every attestation it accepted, in order, and
    when it accepted it.

    The watcher's network thread feeds it while a trial waits and judges on its
    own thread, so a message is taken in whole under ``lock`` and a trial reads
    only :meth:`delivered`, a copy made under it. Never wait on ``seen``: the
    board fills it before it is done with the message, and a trial that woke in
    between judged an attestation it had just seen "never delivered"
    (docs/adr/0058-broker-restart-judged-on-what-was-delivered.md)."""

    def __init__(self, trust):
        super().__init__(trust)
        self.attested: list[Attestation] = []
        self.arrived: dict[str, float] = {}  # attestation id -> time.monotonic() accepted
        self.lock = threading.Lock()

    def receive(self, topic: str, payload: bytes) -> str:
        with self.lock:
            return super().receive(topic, payload)

    def _attestation(self, topic: str, device: str, data) -> str:
        outcome = super()._attestation(topic, device, data)
        if outcome == ACCEPTED:
            attestation = check_attestation(data, self.trust).attestation
            self.attested.append(attestation)
            self.arrived[attestation.id] = time.monotonic()
        return outcome

    def delivered(self) -> tuple[list[Attestation], dict[str, float]]:
        """The attestations accepted so far, in order, and when each was accepted."""
        with self.lock:
            return list(self.attested), dict(self.arrived)


def wait_delivered(board: CountingBoard, made: list[str], timeout: float) -> bool:
    """True once every attestation in ``made`` is in what the board delivered."""
    return wait_until(lambda: all(k in board.delivered()[1] for k in made), timeout)


def outbox_attestations(path: Path) -> list[str]:
    return list(outbox_attestation_times(path))


def outbox_attestation_times(path: Path) -> dict[str, int]:
    """Attestation id -> when the dock committed it to its outbox (UTC ns), in order."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT key, created_ns FROM outbox "
                               "WHERE topic LIKE '%/attestation/%' ORDER BY row"))


def check_attested(result: TrialResult, board: CountingBoard, made: list[str],
                   last_seq: int, label: str, trial: int | None = None) -> None:
    """Every attestation made delivered once after dedup; ranges back to back to the end.
    Judged on one copy of what the board delivered; a problem counts against ``trial``."""
    attested, _ = board.delivered()
    got = Counter(a.id for a in attested)
    missing = [k for k in made if k not in got]
    if missing:
        result.fail(trial, f"{label}: {len(missing)} attestations never delivered")
    if any(n > 1 for n in got.values()) or set(got) - set(made):
        result.fail(trial, f"{label}: attestations accepted twice or not made: {got}")
    ranges = sorted((a.first_seq, a.last_seq) for a in attested)
    expected = 0
    for first, last in ranges:
        if first != expected:
            result.fail(trial, f"{label}: attested ranges {ranges} do not follow on")
            break
        expected = last + 1
    if expected != last_seq + 1:
        result.fail(trial, f"{label}: attested up to {expected - 1}, archived to {last_seq}")
