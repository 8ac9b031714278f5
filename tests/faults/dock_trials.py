"""Fault trials on the dock's side: the dock killed, the link dropped, the broker
restarted, the archive disk full, bits flipped in the archive.

Each trial drives a real dock (HTTPS with the unit's client certificates; a
real ``custody dock`` process where the process is what is hit, else the
dock's server in this process) and a device store whose ledger this process
writes (``tests/daemon/dockkit.py``: segments of random bytes, sealed as a
recorder seals them; no camera, since the recorder is not what is hit). One
:class:`World` — a provisioned unit, its device, the dock's archive — is
shared by the trials of a run, so the invariants are checked against
everything archived so far, after every trial (:func:`check_offloaded`):

- no sealed segment lost: every file a ``segment`` entry seals is on the
  device, or in the archive with its sealed SHA-256;
- no duplicate in the archive: its ledger is the device's, each entry once and
  in order, and its media are exactly the files that ledger seals;
- the device never frees media without a valid receipt: every file gone from
  the device is named, with its SHA-256, by a dock-signed receipt in the
  device's ledger whose head is the device's own entry;
- ``custody verify`` of the archive gives the verdict the trial predicts;

and for the broker: every attestation the dock made is delivered to a
subscriber, exactly once after deduplication by id, and the attested ranges
follow one another with no entry attested twice (:func:`check_attested`).
No capture is cut in these trials, so "every cut appears as an interruption"
is the recorder's trials' invariant (``tests/faults/trials.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from daemon.mqtt.local_broker import LocalBroker, free_port
from daemon.mqtt.watch import ACCEPTED, UnitBoard
from device.offload import DockError
from protocol.attestation import Attestation, check_attestation
from protocol.entries import OffloadReceiptEntry
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.receipt import open_receipt
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, TRUST_NAME, read_trust, sha256_file
from tests.daemon.dockkit import DOCK, MIB, Device, DockThread, LinkProxy, dock_config, make_unit
from tests.faults.trials import TrialResult

CHUNK = 256 * 1024  # small chunks: a kill or a drop lands between or inside many of them


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


# --- the invariants ------------------------------------------------------------------

def _lines(path: Path) -> list[bytes]:
    return split_lines(path.read_bytes()) if path.exists() else []


def receipted_files(world: World) -> tuple[dict[str, str], list[str]]:
    """file -> SHA-256 over every valid receipt in the device's ledger; the bad ones."""
    signed = [parse_line(line) for line in _lines(world.device.store / LEDGER_NAME)]
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


def check_freed(result: TrialResult, world: World, label: str) -> None:
    """Nothing gone from the device that a valid receipt in its ledger does not name."""
    sealed = {m.file: m.sha256 for line in _lines(world.device.store / LEDGER_NAME)
              for m in parse_line(line).entry.media()}
    receipted, bad = receipted_files(world)
    result.problems += [f"{label}: {b}" for b in bad]
    on_device = set(world.device.media_left())
    for file, sha256 in sorted(sealed.items()):
        if file not in on_device and receipted.get(file) != sha256:
            result.problems.append(f"{label}: {file} freed without a receipt naming it")


def check_offloaded(result: TrialResult, world: World, label: str,
                    verdict: str = "intact") -> None:
    """The invariants of the module doc, against everything archived so far."""
    device_lines = _lines(world.device.store / LEDGER_NAME)
    archived_lines = _lines(world.archived / LEDGER_NAME)
    if archived_lines != device_lines[:len(archived_lines)]:
        result.problems.append(f"{label}: the archived ledger is not the device's")
    seqs = [parse_line(line).entry.seq for line in archived_lines]
    if seqs != list(range(len(seqs))):
        twice = sorted(s for s, n in Counter(seqs).items() if n > 1)
        result.problems.append(f"{label}: archived seqs not 0..{len(seqs) - 1} "
                               f"(twice: {twice[:5]})")
    named = {m.file for line in archived_lines for m in parse_line(line).entry.media()}
    media = world.archived / MEDIA_DIR
    held = {p.name for p in media.iterdir()} if media.is_dir() else set()
    if held != named:
        result.problems.append(f"{label}: archive media not the files its ledger seals "
                               f"(extra {sorted(held - named)[:3]}, missing "
                               f"{sorted(named - held)[:3]})")
    check_freed(result, world, label)
    on_device = set(world.device.media_left())
    for line in device_lines:
        for ref in parse_line(line).entry.media():
            path = media / ref.file
            if ref.file in on_device:
                continue
            if not path.is_file() or sha256_file(path).sha256 != ref.sha256:
                result.lost += 1
                result.problems.append(f"{label}: {ref.file} is neither on the device nor "
                                       "intact in the archive")
    if archived_lines:
        code, report = custody_verify(world.archive)
        if report.get("verdict") != verdict:
            kinds = [f["kind"] for s in report.get("stores", []) for f in s["findings"]
                     if f["severity"] == "error"]
            result.problems.append(f"{label}: custody verify of the archive: exit {code}, "
                                   f"verdict {report.get('verdict')} (errors {kinds[:5]})")


# --- the dock killed mid-offload --------------------------------------------------------

class DockProcess:
    """``custody dock`` as systemd runs it, on a fixed port so a restart is found again."""

    def __init__(self, config_path: Path, log: Path):
        self.config_path, self.log = config_path, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "custody_cli", "dock", "--config", str(self.config_path)],
                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        line = self.proc.stdout.readline().decode()  # "listening HOST PORT"
        if not line.startswith("listening"):
            raise RuntimeError(f"the dock did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30)


def dock_kills(world: World, trials: int, seed: int,
               sizes: tuple[int, ...] = (2 * MIB + 1, 600_000, 3000)) -> TrialResult:
    """A real ``custody dock`` SIGKILLed at a random instant of an offload, restarted;
    the device's offloader (on its own thread, as on a device) goes on by itself.

    The instants are drawn from the length of an undisturbed offload measured
    first, so they fall in the time sync, the ledger, the uploads, the commit
    or the receipt. Predicted: nothing freed while the dock is down that no
    receipt covers; after the restart everything offloaded, nothing lost or
    archived twice, the archive ``intact``."""
    rng = random.Random(seed)
    result = TrialResult("dock_kill", trials)
    work = world.root / "dock-kill"
    work.mkdir(exist_ok=True)
    port = free_port()
    config = replace(dock_config(world.keys, world.archive), listen_port=port)
    (work / "dock.toml").write_text(config.to_toml())
    dock = DockProcess(work / "dock.toml", work / "dock.log")
    dock.start()
    dev = world.device
    offloader = dev.offloader(f"https://127.0.0.1:{port}", chunk_bytes=CHUNK,
                              poll_s=0.05).start()
    phases: Counter[str] = Counter()
    try:
        started = time.monotonic()
        dev.record(list(sizes))
        if not wait_until(lambda: not dev.media_left(), 60):
            result.problems.append(f"the undisturbed offload did not end: {offloader.status()}")
            return result
        span = time.monotonic() - started
        for i in range(trials):
            dev.record(list(sizes))
            time.sleep(rng.uniform(0, span))
            status = offloader.status()
            dock.kill()
            phases["during_upload" if status["state"] == "offloading" and
                   status["bytes_done"] < status["bytes_total"] else "outside_upload"] += 1
            time.sleep(0.2)  # the device meets a dead dock
            check_freed(result, world, f"kill {i}, dock down")
            dock.start()
            if not wait_until(lambda: not dev.media_left(), 60):
                result.problems.append(f"kill {i}: not offloaded after the restart: "
                                       f"{offloader.status()}")
                continue
            check_offloaded(result, world, f"kill {i}")
    finally:
        offloader.close()
        code = dock.stop()
    if code not in (0, None):
        result.problems.append(f"the dock exited {code} at SIGTERM")
    result.figures.update(kills_during_upload=phases["during_upload"],
                          offload_s=round(span, 3))
    return result


# --- the link dropped mid-transfer ------------------------------------------------------

def link_drops(world: World, trials: int, seed: int) -> TrialResult:
    """The link between device and dock cut once, at a random byte of an offload
    (time sync, ledger, a chunk of media or the commit). Predicted: the offload
    resumes from what the dock made durable, re-sending at most the chunk in
    flight; nothing lost or archived twice; the archive ``intact``."""
    rng = random.Random(seed)
    result = TrialResult("link_drop", trials)
    dock = DockThread(dock_config(world.keys, world.archive))
    proxy = LinkProxy(dock.port)
    dev = world.device
    most = 0
    try:
        for i in range(trials):
            sizes = [rng.randrange(MIB, 3 * MIB), rng.randrange(1000, 300_000)]
            dev.record(sizes)
            offloader = dev.offloader(proxy.url, chunk_bytes=CHUNK)
            drops = proxy.drops
            proxy.drop_after(rng.randrange(1, sum(sizes)))  # upstream bytes from now
            try:
                offloader.offload_round()
            except DockError:  # cut outside a chunk: the round ends; the next one resumes
                offloader.offload_round()
            if proxy.drops != drops + 1:
                result.problems.append(f"drop {i}: the link was dropped {proxy.drops - drops} "
                                       "times")
            resent = offloader.status()["bytes_sent"] - sum(sizes)
            most = max(most, resent)
            if resent > CHUNK:
                result.problems.append(f"drop {i}: {resent} bytes sent twice (chunk {CHUNK})")
            check_offloaded(result, world, f"drop {i}")
    finally:
        proxy.close()
        dock.stop()
    result.figures.update(max_resent_bytes=most, chunk_bytes=CHUNK)
    return result


# --- the broker restarted during attestation ---------------------------------------------

class CountingBoard(UnitBoard):
    """A watcher's board that also keeps every attestation it accepted, in order."""

    def __init__(self, trust):
        super().__init__(trust)
        self.attested: list[Attestation] = []

    def _attestation(self, topic: str, device: str, data) -> str:
        outcome = super()._attestation(topic, device, data)
        if outcome == ACCEPTED:
            self.attested.append(check_attestation(data, self.trust).attestation)
        return outcome


def outbox_attestations(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute(
            "SELECT key FROM outbox WHERE topic LIKE '%/attestation/%' ORDER BY row")]


def check_attested(result: TrialResult, board: CountingBoard, made: list[str],
                   last_seq: int, label: str) -> None:
    """Every attestation made delivered once after dedup; ranges back to back to the end."""
    got = Counter(a.id for a in board.attested)
    missing = [k for k in made if k not in got]
    if missing:
        result.problems.append(f"{label}: {len(missing)} attestations never delivered")
    if any(n > 1 for n in got.values()) or set(got) - set(made):
        result.problems.append(f"{label}: attestations accepted twice or not made: {got}")
    ranges = sorted((a.first_seq, a.last_seq) for a in board.attested)
    expected = 0
    for first, last in ranges:
        if first != expected:
            result.problems.append(f"{label}: attested ranges {ranges} do not follow on")
            break
        expected = last + 1
    if expected != last_seq + 1:
        result.problems.append(f"{label}: attested up to {expected - 1}, archived to {last_seq}")


def _offload_round(offloader, errors: list[BaseException]) -> None:
    try:
        offloader.offload_round()
    except Exception as e:  # noqa: BLE001 - the trial reports it
        errors.append(e)


def broker_restarts(world: World, trials: int, seed: int) -> TrialResult:
    """The unit's Mosquitto (TLS, ACLs) stopped at a random instant of an offload's
    attestation — before the dock commits it, while it is published, or as the
    PUBACK comes back — and started again after 0.2–1 s. A watcher subscribed
    all along. Predicted: once the broker is back every attestation is
    delivered; after deduplication by id each exactly once, the ranges back to
    back; the archive ``intact``."""
    from daemon.mqtt.client import MqttConnection
    from daemon.mqtt.dock_events import MqttDockEvents
    from daemon.mqtt.publisher import DockPublisher
    from daemon.mqtt.watch import Watcher
    from daemon.pki_cli import unit_ca
    from protocol.keys import SigningKey

    rng = random.Random(seed)
    result = TrialResult("broker_restart", trials)
    work = world.root / "broker"
    work.mkdir(exist_ok=True)
    ca = unit_ca(world.keys)
    trust = read_trust(world.keys / TRUST_NAME)
    watcher_cert = ca.find("WATCH-01") or ca.issue("WATCH-01", "watcher")
    broker_cert = ca.find("broker") or ca.issue("broker", "broker", hosts=["127.0.0.1"])
    dock_cert = ca.find(DOCK)
    broker = LocalBroker(ca, broker_cert, ca.unit)
    broker.start()

    def connection(cert) -> MqttConnection:
        return MqttConnection("127.0.0.1", broker.port, ca.cert_path, cert.cert, cert.key,
                              reconnect_max_s=0.5)

    key = SigningKey.from_pem((world.keys / "docks" / f"{DOCK}.key").read_bytes())
    outbox = work / "outbox.db"
    publisher = DockPublisher(connection(dock_cert), trust.unit, DOCK, key.signer(), outbox,
                              ack_timeout_s=2.0)
    publisher.start()
    events = MqttDockEvents(publisher, trust)
    board = CountingBoard(trust)
    watcher = Watcher(connection(watcher_cert), board)
    watcher.start()
    dock = DockThread(dock_config(world.keys, world.archive), events=events)
    dev = world.device
    offloader = dev.offloader(dock.url, chunk_bytes=CHUNK)
    down_s = []
    try:
        if not watcher.subscribed.wait(10):
            result.problems.append("the watcher did not subscribe")
            return result
        # How long an offload and its attestation take here, undisturbed.
        started = time.monotonic()
        dev.record([300_000, 2000])
        offloader.offload_round()
        events.wait_idle(10)
        made = outbox_attestations(outbox)
        wait_until(lambda: all(k in board.seen for k in made), 10)
        span = time.monotonic() - started
        for i in range(trials):
            dev.record([300_000, 2000])
            stop_at = time.monotonic() + rng.uniform(0, span)
            errors: list[BaseException] = []
            thread = threading.Thread(target=_offload_round, args=(offloader, errors),
                                      daemon=True)
            thread.start()  # the offload runs on; the broker goes down at the drawn instant
            time.sleep(max(0.0, stop_at - time.monotonic()))
            broker.stop()
            down_s.append(rng.uniform(0.2, 1.0))
            time.sleep(down_s[-1])
            broker.start()
            thread.join(30)
            if errors:
                result.problems.append(f"restart {i}: the offload failed: {errors[0]}")
                continue
            if not events.wait_idle(20):
                result.problems.append(f"restart {i}: the attestation was not made")
            made = outbox_attestations(outbox)
            if not wait_until(lambda made=made: all(k in board.seen for k in made), 30):
                result.problems.append(f"restart {i}: not delivered 30 s after the broker "
                                       "came back")
            last = len(_lines(world.archived / LEDGER_NAME)) - 1
            check_attested(result, board, made, last, f"restart {i}")
            check_offloaded(result, world, f"restart {i}")
    finally:
        dock.stop()
        events.close()
        watcher.stop()
        publisher.close()
        broker.close()
    result.figures.update(duplicates_deduplicated=board.duplicates,
                          attestations=len(board.attested), max_down_s=round(max(down_s), 3))
    return result


# --- the archive disk full ------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` (root): a real disk that fills up."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def grow(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True,
                   capture_output=True)


def archive_full(root: Path) -> TrialResult:
    """The archive on a real 4 MiB disk (a tmpfs): a segment larger than what is
    free, then one that fits but would leave less than the dock's reserve
    (``reserve_bytes``, how the dock decides "full" before the disk is).
    Predicted for each: the dock answers 507, raises an ``archive_full``
    alert, and releases nothing (no receipt, nothing freed, the archive's
    ledger as it was); once the disk grows the same offload goes through and
    the archive verifies ``intact``."""
    result = TrialResult("archive_full", 2)
    with small_disk(root / "archive-disk", 4 * MIB) as disk:
        world = World.create(root / "unit", archive=disk / "archive")
        dev = world.device
        try:
            cases = [("larger than the disk", 6 * MIB, 0),
                     ("within the disk, below the reserve", 1 * MIB, None)]
            for label, size, reserve in cases:
                if reserve is None:  # free now, less half the segment: it fits, but too close
                    world.archive.mkdir(parents=True, exist_ok=True)
                    reserve = shutil.disk_usage(disk).free - size // 2
                dock = DockThread(dock_config(world.keys, world.archive, reserve_bytes=reserve))
                try:
                    dev.record([size])
                    before = (world.device.media_left(),
                              _lines(world.archived / LEDGER_NAME))
                    receipts = len(receipted_files(world)[0])
                    try:
                        dev.offloader(dock.url, chunk_bytes=CHUNK).offload_round()
                        result.problems.append(f"{label}: the offload went through")
                    except DockError as e:
                        if e.status != 507:
                            result.problems.append(f"{label}: status {e.status}, not 507")
                    if not dock.alerts("archive_full"):
                        result.problems.append(f"{label}: no archive_full alert")
                    after = (world.device.media_left(), _lines(world.archived / LEDGER_NAME))
                    if after != before or len(receipted_files(world)[0]) != receipts:
                        result.problems.append(f"{label}: something was released")
                    check_freed(result, world, label)
                finally:
                    dock.stop()
            grow(disk, 64 * MIB)
            dock = DockThread(dock_config(world.keys, world.archive))
            try:
                dev.offloader(dock.url, chunk_bytes=CHUNK).offload_round()
                if dev.media_left():
                    result.problems.append("with room again, the media were not offloaded")
                check_offloaded(result, world, "room again")
            finally:
                dock.stop()
        finally:
            world.close()
    return result


# --- bits flipped in the archive --------------------------------------------------------------

def archive_bit_flips(world: World, trials: int, seed: int) -> TrialResult:
    """One bit flipped at random in an archived media file or ledger line
    (``archive/devices/<id>/``; never a line's newline), on a copy of the
    archive. Predicted: ``custody verify`` of the archive says ``broken`` (exit
    1), with a ``media_hash`` finding naming the file, or an error finding at
    the altered entry's seq (or its line, when the line no longer parses)."""
    rng = random.Random(seed)
    result = TrialResult("archive_bit_flip", trials)
    work = world.root / "archive-flips"
    work.mkdir(exist_ok=True)
    if not _lines(world.archived / LEDGER_NAME):
        world.device.record([40_000, 2000])
        dock = DockThread(dock_config(world.keys, world.archive))
        try:
            world.device.offloader(dock.url).offload_round()
        finally:
            dock.stop()
    code, _ = custody_verify(world.archive)
    if code != 0:
        result.problems.append(f"the archive does not verify intact before (exit {code})")
        return result
    media = sorted(p.name for p in (world.archived / MEDIA_DIR).iterdir())
    sealed_by = {m.file: parse_line(line).entry.seq
                 for line in _lines(world.archived / LEDGER_NAME)
                 for m in parse_line(line).entry.media()}
    for i in range(trials):
        copy = work / f"flip-{i}"
        shutil.copytree(world.archive, copy, ignore=shutil.ignore_patterns("incoming",
                                                                           "quarantine"))
        store = copy / "devices" / world.device.name
        target = store / LEDGER_NAME if i % 2 else store / MEDIA_DIR / rng.choice(media)
        target.chmod(0o644)
        data = bytearray(target.read_bytes())
        at = rng.randrange(len(data))
        while data[at] == 0x0A:
            at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
        code, report = custody_verify(copy)
        findings = [f for s in report.get("stores", []) for f in s["findings"]
                    if f["severity"] == "error"]
        if target.name == LEDGER_NAME:
            line = data[:at].count(b"\n")  # the altered line, counted from 0 = seq
            right = any(f["seq"] == line or f.get("line") in (line, line + 1) for f in findings)
            what = f"ledger line {line}"
        else:
            # Found at the entry that seals the file (file/line point at that entry).
            right = any(f["kind"] == "media_hash" and f["seq"] == sealed_by[target.name]
                        and target.name in f["message"] for f in findings)
            what = target.name
        if code != 1 or report.get("verdict") != "broken" or not right:
            result.problems.append(f"flip {i} in {what} at byte {at}: exit {code}, verdict "
                                   f"{report.get('verdict')}, findings "
                                   f"{[(f['kind'], f['seq'], f.get('file')) for f in findings]}")
        shutil.rmtree(copy)
    return result
