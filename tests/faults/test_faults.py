"""The short form of the fault-injection suite (``benchmarks/faults.py --full``
runs the long form and writes docs/reliability.md).

The recorder's trials run ``custody sim`` in real time; the dock's share one
unit, device and archive (the module's ``world``), so each trial's invariants
cover what the ones before it archived."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from device.offload import DockClient
from tests.daemon.dockkit import Device, dock_config
from tests.faults import broker_trials, dock_trials, invariants, trials


def survived(result: trials.TrialResult) -> None:
    """Every trial survived (counted by trial, faults_survived too) and nothing lost."""
    assert result.problems == [] and result.survived == result.trials, result.as_json()
    assert result.faults_survived == result.faults, result.as_json()
    assert result.lost == 0 and result.undelivered == 0, result.as_json()


def test_the_recorder_hard_killed_at_10_random_instants_loses_nothing_sealed(tmp_path):
    survived(trials.hard_kills(tmp_path, trials=10, seed=11))


@pytest.mark.slow  # test_interruptions_e2e's storage-full test covers it in make test
def test_a_full_store_is_declared_and_loses_nothing_sealed(tmp_path):
    survived(trials.storage_full(tmp_path))


@pytest.mark.slow  # the conformance case clock_step_within_a_span holds the rule in make test
def test_the_wall_clock_stepped_forward_and_back_is_recorded_not_a_broken_record(tmp_path):
    survived(trials.clock_steps(tmp_path))


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    return trials.clean_store(tmp_path_factory.mktemp("clean"))


def test_a_flipped_bit_in_media_or_ledger_on_the_device_is_always_broken(tmp_path, clean_store):
    survived(trials.bit_flips(tmp_path, clean_store, trials=8, seed=5))


@pytest.fixture
def fuse_available() -> None:
    if shutil.which("fusermount3") is None or not Path("/dev/fuse").exists():
        pytest.skip("needs fuse3 (fusermount3) and /dev/fuse: make setup installs fuse3")


def test_real_power_loss_at_5_random_instants_loses_nothing_durable(fuse_available, tmp_path):
    survived(trials.power_losses(tmp_path, trials=5, seed=17))


# --- the dock's side: one unit, one device and one archive for all the trials ----------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = dock_trials.World.create(tmp_path_factory.mktemp("world"))
    yield w
    w.close()


def test_the_dock_killed_at_5_random_instants_of_an_offload_loses_and_frees_nothing(world):
    survived(dock_trials.dock_kills(world, trials=5, seed=17))


def test_the_link_dropped_mid_transfer_resumes_resending_at_most_a_chunk(world):
    survived(dock_trials.link_drops(world, trials=3, seed=17))


def test_the_broker_restarted_during_attestation_delivers_each_once_after_dedup(world):
    survived(broker_trials.broker_restarts(world, trials=3, seed=17))


def test_an_archive_bit_flip_is_reported_broken_at_the_right_place(world):
    survived(dock_trials.archive_bit_flips(world, trials=8, seed=17))


def test_a_full_archive_disk_is_507_an_alert_and_nothing_released(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs: needs root")
    survived(dock_trials.archive_full(tmp_path))


def _damaged_copy(world, where: Path) -> dock_trials.World:
    dock_trials.ensure_archived(world)
    store, archive = where / "device", where / "archive"
    shutil.copytree(world.device.store, store)
    shutil.copytree(world.archive, archive)
    device = Device(world.device.name, store, None, world.keys)  # read only: no ledger host
    return dock_trials.World(where, world.keys, device, archive)


def test_the_invariants_see_a_lost_file_a_duplicate_and_a_free_without_receipt(world, tmp_path):
    """What the dock's trials are judged by can fail: each damage, on a copy of the world."""
    clean = trials.TrialResult("clean", 1)
    invariants.check_offloaded(clean, _damaged_copy(world, tmp_path / "clean"), "clean")
    assert clean.problems == [] and clean.lost == 0

    lost = _damaged_copy(world, tmp_path / "lost")
    victim = sorted((lost.archived / "media").iterdir())[0]
    victim.unlink()
    result = trials.TrialResult("lost", 1)
    invariants.check_offloaded(result, lost, "lost")
    assert result.lost == 1 and any(victim.name in p for p in result.problems)

    twice = _damaged_copy(world, tmp_path / "twice")
    ledger = twice.archived / "ledger.jsonl"
    ledger.chmod(0o644)
    ledger.write_bytes(ledger.read_bytes() + invariants.lines(ledger)[-1] + b"\n")
    result = trials.TrialResult("twice", 1)
    invariants.check_offloaded(result, twice, "twice")
    assert any("archived seqs" in p for p in result.problems), result.problems

    unreceipted = _damaged_copy(world, tmp_path / "unreceipted")
    ledger = unreceipted.device.store / "ledger.jsonl"
    kept = invariants.lines(ledger)
    last_receipt = max(i for i, line in enumerate(kept) if b"offload_receipt" in
                       base64.b64decode(json.loads(line)["payload"]))
    ledger.write_bytes(b"".join(line + b"\n" for line in kept[:last_receipt]))
    result = trials.TrialResult("unreceipted", 1)
    invariants.check_freed(result, unreceipted, "unreceipted")
    assert any("freed without a receipt" in p for p in result.problems), result.problems

    board = invariants.CountingBoard(world.device.host.trust)
    result = trials.TrialResult("attested", 1)
    invariants.check_attested(result, board, ["a1"], 3, "none delivered")
    assert any("never delivered" in p for p in result.problems)
    board.attested += [SimpleNamespace(id="a1", first_seq=0, last_seq=3),
                       SimpleNamespace(id="a2", first_seq=2, last_seq=3)]
    result = trials.TrialResult("attested", 1)
    invariants.check_attested(result, board, ["a1", "a2"], 3, "overlapping")
    assert any("do not follow on" in p for p in result.problems), result.problems


def test_a_dock_killed_after_the_last_chunk_before_checking_it_completes_it_at_restart(
        tmp_path):
    """What the dock-kill trial found: a part file holding every byte, never checked and
    renamed (the kill came in between), wedged every later offload with a false
    "short: 3000 of 3000 bytes" alert. At restart the dock checks it and goes on."""
    world = dock_trials.World.create(tmp_path)
    try:
        (name,) = world.device.record([3000])
        dock = dock_trials.DockThread(dock_config(world.keys, world.archive))
        client = DockClient(world.device.settings(dock.url), world.device.name)
        status, _, _ = client.call("PUT", "/ledger/0",
                                   (world.device.store / "ledger.jsonl").read_bytes())
        assert status == 200
        client.close()
        dock.stop()  # as killed: every byte in the part file, not yet checked
        part = world.archive / "incoming" / world.device.name / "media" / f"{name}.part"
        part.write_bytes((world.device.store / "media" / name).read_bytes())
        dock = dock_trials.DockThread(dock_config(world.keys, world.archive))
        try:
            assert world.device.offloader(dock.url).offload_round() is True
            assert not dock.alerts()
        finally:
            dock.stop()
        result = trials.TrialResult("restart", 1)
        invariants.check_offloaded(result, world, "restart")
        assert result.problems == [] and world.device.media_left() == []
    finally:
        world.close()
