"""RFC 9162 Merkle proofs against the transparency-dev/merkle vectors, and ours
generated for trees of every small size checked by our own verifier."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from protocol.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "data" / "transparency-dev-merkle"
LEAVES = [bytes.fromhex(x) for x in json.loads((VECTORS / "leaf-inputs.json").read_text())[
    "leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(x) for x in json.loads((VECTORS / "leaf-inputs.json").read_text())[
    "root_hashes_hex_by_size"]]


def b64(values):
    return [base64.b64decode(v) for v in values or []]


def cases(kind: str) -> list[Path]:
    found = sorted((VECTORS / kind).rglob("*.json"))
    assert len(found) > 50
    return found


@pytest.mark.parametrize("path", cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["leafIdx"], v["treeSize"], base64.b64decode(v["leafHash"] or ""),
            b64(v["proof"]), base64.b64decode(v["root"] or ""))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], b64(v["proof"]), base64.b64decode(v["root1"] or ""),
            base64.b64decode(v["root2"] or ""))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_roots_of_the_reference_leaves() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT == ROOTS[0]
    for i, data in enumerate(LEAVES):
        tree.append(data)
        assert tree.root() == ROOTS[i + 1]
    assert [tree.root(n) for n in range(9)] == ROOTS


def test_generated_proofs_equal_the_happy_path_vectors() -> None:
    tree = MerkleTree(leaf_hash(x) for x in LEAVES)
    checked = 0
    for path in (VECTORS / "inclusion").glob("*/happy-path.json"):
        v = json.loads(path.read_text())
        if v["treeSize"] <= len(LEAVES):
            assert tree.leaf(v["leafIdx"]) == base64.b64decode(v["leafHash"])
            assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == b64(v["proof"])
            checked += 1
    for path in (VECTORS / "consistency").glob("*/happy-path.json"):
        v = json.loads(path.read_text())
        if v["size1"] > 0 and v["size2"] <= len(LEAVES):
            assert tree.consistency_proof(v["size1"], v["size2"]) == b64(v["proof"])
            checked += 1
    assert checked >= 6


def test_every_proof_of_small_trees_verifies_and_a_changed_one_fails() -> None:
    rng = random.Random(5)
    tree = MerkleTree()
    for _ in range(1, 70):
        tree.append(rng.randbytes(rng.randrange(0, 40)))
    for size in range(1, 70):
        root = tree.root(size)
        for i in range(size):
            proof = tree.inclusion_proof(i, size)
            verify_inclusion(i, size, tree.leaf(i), proof, root)
            with pytest.raises(ProofError):
                verify_inclusion(i, size, leaf_hash(b"other"), proof, root)
            if proof:
                bad = list(proof)
                bad[rng.randrange(len(bad))] = bytes(32)
                with pytest.raises(ProofError):
                    verify_inclusion(i, size, tree.leaf(i), bad, root)
        for old in range(1, size + 1):
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, proof, tree.root(old), root)
            if old < size:
                with pytest.raises(ProofError):
                    verify_consistency(old, size, proof, leaf_hash(b"rewritten"), root)


def test_a_rewritten_history_has_no_consistency_proof() -> None:
    honest = MerkleTree(leaf_hash(bytes([i])) for i in range(10))
    forked = MerkleTree(leaf_hash(bytes([i if i != 3 else 99])) for i in range(12))
    with pytest.raises(ProofError):
        verify_consistency(10, 12, forked.consistency_proof(10, 12), honest.root(), forked.root())


def test_bad_arguments_name_the_problem() -> None:
    tree = MerkleTree([leaf_hash(b"a")])
    with pytest.raises(ValueError, match="leaf index 1"):
        tree.inclusion_proof(1)
    with pytest.raises(ValueError, match="tree size 2"):
        tree.root(2)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append_hash(b"short")
