"""The Merkle frontier (protocol/merkle_frontier.py) against the transparency-dev
vectors and the full tree, and the device's cosigning with a frontier it holds."""

from __future__ import annotations

import base64
import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import merkle_frontier
from protocol.archive_log import (
    CheckpointRefused,
    LineLeaves,
    cosign_if_consistent,
    log_signer,
    tree_of,
)
from protocol.checkpoint import Checkpoint
from protocol.keys import SigningKey
from protocol.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, verify_consistency
from protocol.merkle_frontier import (
    Frontier,
    FrontierError,
    frontier_from_bytes,
    frontier_to_bytes,
)
from protocol.note import Note
from tests.conftest import DEVICE
from tests.protocol.test_merkle import LEAVES, ROOTS, VECTORS, b64


def frontier_of(entries: list[bytes]) -> Frontier:
    return Frontier.of_leaves(leaf_hash(e) for e in entries)


def test_the_modules_example_runs() -> None:
    assert doctest.testmod(merkle_frontier).failed == 0


def test_the_frontier_root_of_every_size_of_the_reference_leaves() -> None:
    assert Frontier().root() == EMPTY_ROOT == ROOTS[0]
    grown = Frontier()
    for n in range(1, len(LEAVES) + 1):
        grown = grown.extended([leaf_hash(LEAVES[n - 1])])
        assert grown == frontier_of(LEAVES[:n])
        assert grown.root() == ROOTS[n] and len(grown.hashes) == n.bit_count()


def test_the_consistency_vectors_hold_between_a_frontier_and_its_extension() -> None:
    checked = 0
    for path in sorted((VECTORS / "consistency").glob("*/happy-path.json")):
        v = json.loads(path.read_text())
        if not 0 < v["size1"] <= v["size2"] <= len(LEAVES):
            continue
        old = frontier_of(LEAVES[:v["size1"]])
        new = old.extended(leaf_hash(x) for x in LEAVES[v["size1"]:v["size2"]])
        assert old.root() == base64.b64decode(v["root1"])
        assert new.root() == base64.b64decode(v["root2"])
        verify_consistency(v["size1"], v["size2"], b64(v["proof"]), old.root(), new.root())
        checked += 1
    assert checked >= 3


@settings(max_examples=60, deadline=None)
@given(old=st.integers(0, 700), more=st.integers(0, 700), salt=st.binary(max_size=8))
def test_a_frontier_extended_has_the_root_of_the_whole_tree(old: int, more: int,
                                                            salt: bytes) -> None:
    leaves = [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(old + more)]
    tree = MerkleTree(leaves)
    start = Frontier.of_leaves(leaves[:old])
    assert start.root() == tree.root(old)
    extended = start.extended(leaves[old:])
    assert extended.root() == tree.root() and extended == Frontier.of_leaves(leaves)
    assert frontier_from_bytes(frontier_to_bytes(extended)) == extended


@pytest.mark.parametrize("data, says", [
    (b"custody-merkle-frontier/2\n0\n", "line 1"),
    (b"custody-merkle-frontier/1\n01\n" + base64.b64encode(bytes(32)) + b"\n", "line 2"),
    (b"custody-merkle-frontier/1\n3\n" + base64.b64encode(bytes(32)) + b"\n", "2 perfect"),
    (b"custody-merkle-frontier/1\n1\n!!\n", "line 3"),
    (b"custody-merkle-frontier/1\n1\n" + base64.b64encode(bytes(31)) + b"\n", "31 bytes"),
    (b"custody-merkle-frontier/1\n0", "torn"),
    (b"custody-merkle-frontier/1\n", "no size"),
    (b"\xff\n", "ASCII"),
])
def test_a_malformed_frontier_is_refused_saying_what(data: bytes, says: str) -> None:
    with pytest.raises(FrontierError, match=says):
        frontier_from_bytes(data)


# --- the device's cosigning with a frontier -------------------------------------------

class CountingLeaves(LineLeaves):
    """Ledger lines that count how many are parsed."""

    parsed = 0

    def __getitem__(self, index):  # type: ignore[override]
        got = super().__getitem__(index)
        self.parsed += len(got) if isinstance(index, slice) else 1
        return got


@pytest.fixture
def log(unit):
    trust = unit.trust
    signer = log_signer(trust, DEVICE, SigningKey.from_pem(
        (unit.keys / "archive-signing.key").read_bytes()))
    lines = unit.lines()

    def checkpoint(payloads: list[bytes]) -> bytes:
        text = Checkpoint(signer.name, len(payloads), tree_of(payloads).root()).to_text()
        return Note(text, [signer.sign(text)]).to_bytes()

    def cosign(old: bytes | None, payloads: list[bytes], frontier: Frontier | None,
               leaves: CountingLeaves | None = None, proof_from: list[bytes] | None = None):
        proof = tree_of(payloads).consistency_proof(len(proof_from)) if proof_from else []
        return cosign_if_consistent(old, checkpoint(payloads), proof, unit.device_key,
                                    trust=trust, device=DEVICE, timestamp=7,
                                    ledger_payloads=leaves or CountingLeaves(lines),
                                    frontier=frontier)

    payloads = [e.payload for e in unit.entries()]
    return lines, payloads, checkpoint, cosign


def test_a_held_frontier_spares_hashing_the_entries_it_covers(log) -> None:
    lines, payloads, _, cosign = log
    first = cosign(None, payloads[:5], None)
    assert first.frontier == frontier_of(payloads[:5]) and not first.frontier_used
    leaves = CountingLeaves(lines)
    second = cosign(first.note, payloads, first.frontier, leaves, payloads[:5])
    assert second.frontier_used and leaves.parsed == len(payloads) - 5
    assert second.frontier == frontier_of(payloads)


def test_an_edited_frontier_is_not_used_and_a_forged_checkpoint_is_still_refused(log) -> None:
    lines, payloads, _, cosign = log
    first = cosign(None, payloads[:5], None)
    assert first.frontier is not None
    # Someone with the card changes a hash: it no longer folds to the held root.
    edited = Frontier(5, (first.frontier.hashes[0], bytes(32)))
    leaves = CountingLeaves(lines)
    second = cosign(first.note, payloads, edited, leaves, payloads[:5])
    assert not second.frontier_used and leaves.parsed == len(payloads)
    assert second.frontier == frontier_of(payloads)
    # ...or puts the frontier of another history beside the held note: the same.
    forged = [*payloads[:2], b"rewritten", *payloads[3:]]
    third = cosign(first.note, payloads, frontier_of(forged[:5]), None, payloads[:5])
    assert not third.frontier_used and third.frontier == frontier_of(payloads)
    # A forged proposal beside either frontier is refused as before.
    for frontier in (edited, frontier_of(forged[:5])):
        with pytest.raises(CheckpointRefused, match="not consistent"):
            cosign(first.note, forged, frontier, None, forged[:5])


def test_a_frontier_beside_a_checkpoint_the_device_never_cosigned_is_not_trusted(log) -> None:
    """A stolen dock (or archive) key and the SD card: a signed checkpoint of a made-up
    history put in the card with its frontier, then a proposal extending it with the
    device's real new entries. Only the device's own cosignature on the held note
    would make the frontier count; without it the whole ledger is checked."""
    _, payloads, checkpoint, cosign = log
    made_up = [b"made-up %d" % i for i in range(5)]
    planted = checkpoint(made_up)  # signed by the stolen key; no device cosignature
    proposal = [*made_up, *payloads[5:]]
    with pytest.raises(CheckpointRefused, match="not this device's ledger"):
        cosign(planted, proposal, frontier_of(made_up), proof_from=made_up)
