"""Someone with the SD card, while the device is off after a cut, rewrites what recovery reads.

The recorder runs on simulated hardware; the store as a cut leaves it is
snapshotted mid-segment (bytes, journal and the fragment marks in extended
attributes), tampered with as an attacker would, and booted: the recorder
must sign nothing it cannot prove it captured, and ``custody verify`` must show
the cut rather than say intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from daemon.provision import create_unit, enrol_device
from device.recovery import whole_chunks_size
from device.sealer import FRAGMENT_MARKS, journal_path, read_fragment_marks
from protocol.entries import Interruption, Segment
from protocol.journal_auth import JournalKey
from tests.conftest import DEVICE, DOCK, OFFICER, StepClock, Unit
from tests.device.simrun import recorder_on_sim

SEGMENT_SECONDS = 2


def segments(unit: Unit) -> list[Segment]:
    return [e.entry.body for e in unit.entries() if isinstance(e.entry.body, Segment)]


def interruptions(unit: Unit) -> list[Interruption]:
    return [e.entry.body for e in unit.entries() if isinstance(e.entry.body, Interruption)]


@pytest.fixture(scope="module")
def cut_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Unit, Path]:
    """A unit whose device was cut in its second segment: the store as the cut left it."""
    base = tmp_path_factory.mktemp("cut")
    keys, store = base / "keys", base / "device"
    clock = StepClock()
    create_unit(keys, "test-unit", [DOCK])
    enrol_device(keys, DEVICE, store, clock, officer=OFFICER, by="TECH-01")
    unit = Unit(keys, store, clock)
    snapshot = base / "snapshot"
    with recorder_on_sim(unit, segment_seconds=SEGMENT_SECONDS) as recorder:
        recorder.start()
        recorder.press_record()
        deadline = time.monotonic() + 20
        while not segments(unit) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert segments(unit), "the first segment was never sealed"
        time.sleep(1.3)  # well into the second segment: some of its fragments are durable
        shutil.copytree(store, snapshot)  # copy2: bytes, then the marks (xattrs)
    return unit, snapshot


def boot(cut: tuple[Unit, Path], tmp_path: Path,
         tamper=lambda store, pending: None) -> tuple[Unit, Path]:
    """A fresh copy of the cut store, tampered with, then booted (recovery runs)."""
    unit, snapshot = cut
    store = tmp_path / "device"
    shutil.copytree(snapshot, store)
    [pending] = sorted((store / "pending").glob("*.cseg"))
    tamper(store, pending)
    booted = dataclasses.replace(unit, store=store)
    with recorder_on_sim(booted, segment_seconds=SEGMENT_SECONDS) as recorder:
        recorder.start()
    return booted, pending


def check_cut_declared_and_nothing_signed(unit: Unit, before: int, pending: Path) -> None:
    assert len(segments(unit)) == before, "the device signed a segment it cannot prove"
    assert not (unit.store / "media" / pending.name).exists()
    [cut] = interruptions(unit)
    assert cut.reason in ("power_loss", "crash") and cut.detected_by == "boot_recovery"
    # The cut is no later than the last capture the ledger proves, or than what the
    # device's own authenticated records say: never what the attacker wrote.
    report = unit.verify()
    assert report.verdict != "intact", report.findings
    assert [i.reason for i in report.interruptions] == [cut.reason]
    # The bytes are kept aside in pending/, never deleted.
    assert any(p.name.startswith(pending.name + ".tail-") for p in pending.parent.iterdir())


def test_the_untampered_cut_is_recovered_and_sealed(cut_store, tmp_path: Path) -> None:
    """The control: the same snapshot, untouched, is recovered — so the attacks below are real."""
    before = len(segments(dataclasses.replace(cut_store[0], store=cut_store[1])))
    unit, pending = boot(cut_store, tmp_path)
    recovered = [s for s in segments(unit) if s.recovered]
    assert len(segments(unit)) == before + 1 and len(recovered) == 1
    assert recovered[0].media.file == pending.name and recovered[0].frames > 0
    report = unit.verify()
    assert not report.errors, report.errors
    assert [i.reason for i in report.interruptions] == [interruptions(unit)[0].reason]


def test_a_pending_file_replaced_by_an_earlier_segment_is_refused(cut_store, tmp_path) -> None:
    def tamper(store: Path, pending: Path) -> None:
        earlier = sorted((store / "media").glob("r*.cseg"))[-1]
        marks = {n: os.getxattr(pending, n) for n in os.listxattr(pending)}
        shutil.copyfile(earlier, pending)  # its journal and marks stay
        for name, value in marks.items():
            os.setxattr(pending, name, value)

    before = len(segments(dataclasses.replace(cut_store[0], store=cut_store[1])))
    unit, pending = boot(cut_store, tmp_path, tamper)
    check_cut_declared_and_nothing_signed(unit, before, pending)


def test_a_copy_with_the_earlier_segments_own_marks_is_refused_by_its_header(
        cut_store, tmp_path) -> None:
    """Even marks the device really made for a file, if its header was sealed before."""
    def tamper(store: Path, pending: Path) -> None:
        # The attacker saved a real pending file + journal earlier; the device has
        # since sealed it. Here: the current file's own journal and marks, and its
        # header made to be that of the sealed segment before it (an old copy).
        earlier = sorted((store / "media").glob("r*.cseg"))[-1]
        data = bytearray(pending.read_bytes())
        data[:78] = earlier.read_bytes()[:78]
        pending.write_bytes(bytes(data))

    before = len(segments(dataclasses.replace(cut_store[0], store=cut_store[1])))
    unit, pending = boot(cut_store, tmp_path, tamper)
    check_cut_declared_and_nothing_signed(unit, before, pending)


@pytest.mark.parametrize("mac", ["kept", "attackers_key"])
def test_marks_that_claim_25_seconds_more_than_the_file_holds_are_refused(
        cut_store, tmp_path, mac: str) -> None:
    attacker = JournalKey(os.urandom(32))

    def tamper(store: Path, pending: Path) -> None:
        for name, mark in zip(FRAGMENT_MARKS, read_fragment_marks(pending), strict=False):
            content = mark["content"]
            content["frames"] += 250
            content["last_frame_us"] += 25_000_000
            content["audio_samples"] += 25 * 48_000
            content["last_sample_us"] += 25_000_000
            if mac == "attackers_key":
                mark = attacker.seal(mark)
            os.setxattr(pending, name, json.dumps(mark).encode())

    before = len(segments(dataclasses.replace(cut_store[0], store=cut_store[1])))
    unit, pending = boot(cut_store, tmp_path, tamper)
    check_cut_declared_and_nothing_signed(unit, before, pending)
    [cut] = interruptions(unit)
    last_proven = max(s.last_capture_utc_ns for s in segments(unit))
    assert cut.cut_utc_ns < last_proven + 25_000_000_000  # no 25 s claimed


def test_a_forged_journal_and_marks_consistent_with_the_file_are_refused(
        cut_store, tmp_path) -> None:
    """It all checks out against the bytes (sizes, hashes, counts), but no MAC of the device."""
    attacker = JournalKey(os.urandom(32))

    def tamper(store: Path, pending: Path) -> None:
        journal = journal_path(pending)
        header = json.loads(journal.read_bytes().split(b"\n")[0])
        header["context"]["utc_offset_ns"] -= 60_000_000_000  # a minute earlier
        journal.write_bytes(json.dumps(attacker.seal(header)).encode() + b"\n")
        data = pending.read_bytes()
        size = whole_chunks_size(data)
        for n in os.listxattr(pending):
            os.removexattr(pending, n)
        mark = {**read_marks_of(header, size, data), "mac": "00" * 32}
        os.setxattr(pending, FRAGMENT_MARKS[0], json.dumps(mark).encode())

    before = len(segments(dataclasses.replace(cut_store[0], store=cut_store[1])))
    unit, pending = boot(cut_store, tmp_path, tamper)
    check_cut_declared_and_nothing_signed(unit, before, pending)


def read_marks_of(header: dict, size: int, data: bytes) -> dict:
    context = header["context"]
    return {"file": header["file"], "recording": context["recording"], "span": context["span"],
            "index": context["index"], "fragment": 0, "stored_size": size,
            "stored_sha256": hashlib.sha256(data[:size]).hexdigest(),
            "plaintext_size": None, "plaintext_sha256": None, "written_monotonic_ns": 1,
            "content": {"frames": 300, "first_frame_us": 0, "last_frame_us": 30_000_000,
                        "audio_samples": 0, "first_sample_us": None, "last_sample_us": None}}


def test_a_recovered_file_put_back_into_pending_is_refused(cut_store, tmp_path) -> None:
    """Replayed: the genuine cut file, journal and marks, after the device sealed them."""
    unit, pending = boot(cut_store, tmp_path)
    sealed = len(segments(unit))
    entries = len(unit.entries())
    snapshot = cut_store[1] / "pending"
    for p in (snapshot / pending.name, journal_path(snapshot / pending.name)):
        shutil.copy2(p, pending.parent / p.name)
    with recorder_on_sim(unit, segment_seconds=SEGMENT_SECONDS) as recorder:
        recorder.start()
    assert len(segments(unit)) == sealed and len(unit.entries()) == entries
    assert not (pending.parent / pending.name).exists()  # kept aside, not sealed again
