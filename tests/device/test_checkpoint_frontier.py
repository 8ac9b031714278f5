"""The checkpoint keeper's frontier (``checkpoint.frontier``, ADR 0069): kept beside
the checkpoint it cosigned, used only when it is that checkpoint's tree, rebuilt
from the ledger when missing, torn or edited; a forged checkpoint refused either way."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from device.checkpoint_keeper import CHECKPOINT_NAME, FRONTIER_NAME, CheckpointKeeper
from protocol.archive_log import CheckpointRefused, log_signer, tree_of
from protocol.checkpoint import Checkpoint
from protocol.keys import SigningKey
from protocol.merkle import leaf_hash
from protocol.merkle_frontier import Frontier, frontier_from_bytes, frontier_to_bytes
from protocol.note import Note
from tests.conftest import DEVICE, Unit


@pytest.fixture
def docking(unit: Unit):
    """(keeper, ledger lines, payloads, propose(payloads) -> (note, proof))."""
    signer = log_signer(unit.trust, DEVICE, SigningKey.from_pem(
        (unit.keys / "archive-signing.key").read_bytes()))
    keeper = CheckpointKeeper(unit.store, DEVICE, unit.device_key, unit.trust)
    lines, payloads = unit.lines(), [e.payload for e in unit.entries()]

    def propose(entries: list[bytes]) -> tuple[bytes, list[bytes]]:
        tree = tree_of(entries)
        text = Checkpoint(signer.name, len(entries), tree.root()).to_text()
        held = keeper.held_size()
        return (Note(text, [signer.sign(text)]).to_bytes(),
                tree.consistency_proof(held, len(entries)) if held else [])

    return keeper, lines, payloads, propose


def kept_frontier(unit: Unit) -> Frontier:
    return frontier_from_bytes((unit.store / FRONTIER_NAME).read_bytes())


def recomputed(caplog) -> bool:
    return "recomputed from the whole ledger" in caplog.text


def test_the_frontier_is_kept_and_used_at_the_next_docking(unit: Unit, docking, caplog):
    caplog.set_level(logging.WARNING, "custody.checkpoint")
    keeper, lines, payloads, propose = docking
    keeper.cosign(*propose(payloads[:5]), lines, 1)
    assert kept_frontier(unit) == Frontier.of_leaves(leaf_hash(p) for p in payloads[:5])
    keeper.cosign(*propose(payloads), lines, 2)
    assert not recomputed(caplog)
    assert kept_frontier(unit).root() == tree_of(payloads).root()


@pytest.mark.parametrize("damage", ["missing", "torn", "edited", "of_another_size", "fifo",
                                    "link"])
def test_a_missing_or_wrong_frontier_is_rebuilt_from_the_ledger(unit: Unit, docking, caplog,
                                                                damage: str):
    caplog.set_level(logging.WARNING, "custody.checkpoint")
    keeper, lines, payloads, propose = docking
    keeper.cosign(*propose(payloads[:5]), lines, 1)
    path = unit.store / FRONTIER_NAME
    if damage == "missing":
        path.unlink()
    elif damage == "torn":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "edited":
        text = path.read_bytes().split(b"\n")
        text[2] = base64.b64encode(bytes(32))
        path.write_bytes(b"\n".join(text))
    elif damage == "fifo":  # a read would wait for ever
        path.unlink()
        os.mkfifo(path)
    elif damage == "link":  # the right bytes, but through a link: not followed
        (unit.store / "elsewhere").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(unit.store / "elsewhere")
    else:  # a stale one, as a cut between the two writes leaves
        path.write_bytes(frontier_to_bytes(Frontier.of_leaves(
            leaf_hash(p) for p in payloads[:3])))
    keeper.cosign(*propose(payloads), lines, 2)
    assert recomputed(caplog) and FRONTIER_NAME in caplog.text
    assert path.is_file() and not path.is_symlink()
    assert kept_frontier(unit) == Frontier.of_leaves(leaf_hash(p) for p in payloads)


def test_a_forged_checkpoint_is_refused_with_the_frontier_held(unit: Unit, docking):
    keeper, lines, payloads, propose = docking
    keeper.cosign(*propose(payloads[:5]), lines, 1)
    note_before = (unit.store / CHECKPOINT_NAME).read_bytes()
    frontier_before = (unit.store / FRONTIER_NAME).read_bytes()
    # A log whose new entries are not the device's (entry 6 rewritten).
    forged = [*payloads[:6], b"rewritten", *payloads[7:]]
    with pytest.raises(CheckpointRefused, match="not this device's ledger"):
        keeper.cosign(*propose(forged), lines, 2)
    assert (unit.store / CHECKPOINT_NAME).read_bytes() == note_before
    assert (unit.store / FRONTIER_NAME).read_bytes() == frontier_before


def test_a_fifo_put_as_the_held_checkpoint_is_not_waited_on(unit: Unit, docking):
    keeper, lines, payloads, propose = docking
    os.mkfifo(unit.store / CHECKPOINT_NAME)
    assert keeper.held_size() is None  # absent: the proposal is checked against the ledger
    keeper.cosign(*propose(payloads), lines, 1)
    assert (unit.store / CHECKPOINT_NAME).is_file()
    assert kept_frontier(unit).root() == tree_of(payloads).root()
