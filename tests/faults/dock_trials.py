"""Fault trials on the dock's side: the dock killed mid-offload, the link dropped
mid-transfer, the archive disk full, bits flipped in the archive
(``tests/faults/broker_trials.py``: the broker restarted during attestation).

Each trial drives a real dock (HTTPS with the unit's client certificates; a
real ``custody dock`` process where the process is what is hit, else the
dock's server in this process) and a device store whose ledger this process
writes (``tests/daemon/dockkit.py``: segments of random bytes, sealed as a
recorder seals them; no camera, since the recorder is not what is hit), and
judges it by ``tests/faults/invariants.py`` after every trial.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from daemon.mqtt.local_broker import free_port
from device.offload import DockError
from protocol.envelope import parse_line
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR
from tests.daemon.dockkit import MIB, DockThread, LinkProxy, dock_config
from tests.faults.invariants import (
    World,
    check_freed,
    check_offloaded,
    custody_verify,
    lines,
    receipted_files,
    wait_until,
)
from tests.faults.trials import TrialResult, flip_a_bit

CHUNK = 256 * 1024  # small chunks: a kill or a drop lands between or inside many of them


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
            result.fail(None, f"the undisturbed offload did not end: {offloader.status()}")
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
            check_freed(result, world, f"kill {i}, dock down", i)
            dock.start()
            if not wait_until(lambda: not dev.media_left(), 60):
                result.fail(i, f"kill {i}: not offloaded after the restart: "
                               f"{offloader.status()}")
                continue
            check_offloaded(result, world, f"kill {i}", trial=i)
    finally:
        offloader.close()
        code = dock.stop()
    if code not in (0, None):
        result.fail(None, f"the dock exited {code} at SIGTERM")
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
                result.fail(i, f"drop {i}: the link was dropped {proxy.drops - drops} "
                               "times")
            resent = offloader.status()["bytes_sent"] - sum(sizes)
            most = max(most, resent)
            if resent > CHUNK:
                result.fail(i, f"drop {i}: {resent} bytes sent twice (chunk {CHUNK})")
            check_offloaded(result, world, f"drop {i}", trial=i)
    finally:
        proxy.close()
        dock.stop()
    result.figures.update(max_resent_bytes=most, chunk_bytes=CHUNK)
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


def fill(disk: Path) -> None:
    """Whatever else shares the disk takes every byte left on it."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                os.write(fd, bytes(64 * 1024))
    finally:
        os.close(fd)


class _StallAfter:
    """A gate for :class:`LinkProxy`'s flow: shut once ``n`` bytes went to the dock."""

    def __init__(self, proxy: LinkProxy, n: int):
        self.proxy, self.n, self.opened = proxy, n, threading.Event()

    def wait(self) -> None:
        if self.proxy.upstream_bytes >= self.n:
            self.opened.wait(30)

    def set(self) -> None:
        self.opened.set()


def _offload_filling(world: World, dock: DockThread, disk: Path, size: int) -> None:
    """One round in which the disk fills up while the segment is being written."""
    proxy = LinkProxy(dock.port)
    gate = proxy.flowing = _StallAfter(proxy, size // 2)
    part = world.archive / "incoming" / world.device.name / MEDIA_DIR

    def filler() -> None:
        wait_until(lambda: any(p.stat().st_size for p in part.glob("*.part")), 20)
        fill(disk)
        gate.set()

    thread = threading.Thread(target=filler, daemon=True)
    thread.start()
    try:  # the whole segment in one request: the dock checked for room before it
        world.device.offloader(proxy.url, chunk_bytes=size).offload_round()
    finally:
        gate.set()
        thread.join(30)
        proxy.close()


FULL_CASES = ("larger than the disk", "below the dock's reserve", "filled during the upload",
              "full before the ledger is staged")


def archive_full(root: Path) -> TrialResult:
    """The archive on a real 4 MiB disk (a tmpfs), full in each of four ways: a
    segment larger than the disk; one that fits but would leave less than the
    dock's reserve (``reserve_bytes``: how the dock decides "full" before the
    disk is); the disk filled by another writer while a segment is being
    written (ENOSPC mid-upload); the disk full before the ledger range can be
    staged. Predicted for each: the dock answers 507, raises an
    ``archive_full`` alert, and releases nothing (no receipt, nothing freed,
    the archive's ledger as it was); once the disk grows the same offload goes
    through (resumed) and the archive verifies ``intact``."""
    result = TrialResult("archive_full", len(FULL_CASES))
    for n, label in enumerate(FULL_CASES):
        with small_disk(root / f"disk-{n}", 4 * MIB) as disk:
            world = World.create(root / f"unit-{n}", archive=disk / "archive")
            dev = world.device
            try:
                size = {0: 6 * MIB, 1: MIB, 2: 3 * MIB, 3: 1000}[n]
                world.archive.mkdir()
                reserve = shutil.disk_usage(disk).free - size // 2 if n == 1 else 0
                dock = DockThread(dock_config(world.keys, world.archive, reserve_bytes=reserve))
                try:
                    dev.record([size])
                    if n == 3:
                        fill(disk)
                    before = dev.media_left(), lines(world.archived / LEDGER_NAME)
                    receipts = len(receipted_files(world)[0])
                    try:
                        if n == 2:
                            _offload_filling(world, dock, disk, size)
                        else:
                            dev.offloader(dock.url, chunk_bytes=CHUNK).offload_round()
                        result.fail(n, f"{label}: the offload went through")
                    except DockError as e:
                        if e.status != 507:
                            result.fail(n, f"{label}: status {e.status}, not 507")
                    if not dock.alerts("archive_full"):
                        result.fail(n, f"{label}: no archive_full alert")
                    after = dev.media_left(), lines(world.archived / LEDGER_NAME)
                    if after != before or len(receipted_files(world)[0]) != receipts:
                        result.fail(n, f"{label}: something was released")
                    check_freed(result, world, label, n)
                finally:
                    dock.stop()
                grow(disk, 64 * MIB)
                dock = DockThread(dock_config(world.keys, world.archive, reserve_bytes=reserve))
                try:
                    dev.offloader(dock.url, chunk_bytes=CHUNK).offload_round()
                    if dev.media_left():
                        result.fail(n, f"{label}: with room again, not offloaded")
                    check_offloaded(result, world, f"{label}, room again", trial=n)
                finally:
                    dock.stop()
            finally:
                world.close()
    return result


# --- bits flipped in the archive --------------------------------------------------------------

def ensure_archived(world: World) -> None:
    """Something in the archive to damage, if no trial before put anything there."""
    if not lines(world.archived / LEDGER_NAME):
        world.device.record([40_000, 2000])
        dock = DockThread(dock_config(world.keys, world.archive))
        try:
            world.device.offloader(dock.url).offload_round()
        finally:
            dock.stop()


def archive_bit_flips(world: World, trials: int, seed: int) -> TrialResult:
    """One bit flipped at random in an archived media file or ledger line
    (``archive/devices/<id>/``; never a line's newline), on a copy of the
    archive. Predicted: ``custody verify`` of the archive says ``broken`` (exit
    1), with a ``media_hash`` finding whose ``file`` is the file flipped, or an
    error finding in ``ledger.jsonl`` at the altered entry's seq (or its line,
    when the line no longer parses)."""
    rng = random.Random(seed)
    result = TrialResult("archive_bit_flip", trials)
    work = world.root / "archive-flips"
    work.mkdir(exist_ok=True)
    ensure_archived(world)
    code, _ = custody_verify(world.archive)
    if code != 0:
        result.fail(None, f"the archive does not verify intact before (exit {code})")
        return result
    media = sorted(p.name for p in (world.archived / MEDIA_DIR).iterdir())
    sealed_by = {m.file: parse_line(line).entry.seq
                 for line in lines(world.archived / LEDGER_NAME)
                 for m in parse_line(line).entry.media()}
    for i in range(trials):
        copy = work / f"flip-{i}"
        shutil.copytree(world.archive, copy, ignore=shutil.ignore_patterns("incoming",
                                                                           "quarantine"))
        store = copy / "devices" / world.device.name
        target = store / LEDGER_NAME if i % 2 else store / MEDIA_DIR / rng.choice(media)
        target.chmod(0o644)
        at = flip_a_bit(target, rng)
        code, report = custody_verify(copy)
        findings = [f for s in report.get("stores", []) for f in s["findings"]
                    if f["severity"] == "error"]
        if target.name == LEDGER_NAME:
            line = target.read_bytes()[:at].count(b"\n")  # the altered line, counted from 0 = seq
            right = any(f.get("file") == LEDGER_NAME
                        and (f["seq"] == line or f.get("line") in (line, line + 1))
                        for f in findings)
            what = f"ledger line {line}"
        else:
            # Found at the entry that seals the file, naming the file itself.
            right = any(f["kind"] == "media_hash" and f["seq"] == sealed_by[target.name]
                        and f.get("file") == f"{MEDIA_DIR}/{target.name}" for f in findings)
            what = target.name
        if code != 1 or report.get("verdict") != "broken" or not right:
            result.fail(i, f"flip {i} in {what} at byte {at}: exit {code}, verdict "
                           f"{report.get('verdict')}, findings "
                           f"{[(f['kind'], f['seq'], f.get('file')) for f in findings]}")
        shutil.rmtree(copy)
    return result
