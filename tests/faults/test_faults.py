"""The short form of the fault-injection suite (``benchmarks/faults.py --full``
runs the long form and writes docs/reliability.md)."""

from __future__ import annotations

import pytest

from tests.faults import trials


def survived(result: trials.TrialResult) -> None:
    assert result.problems == [] and result.lost == 0, result.as_json()


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
