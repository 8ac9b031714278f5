"""RFC 9162 §2.1 Merkle trees: hashing, inclusion and consistency proofs.

Written from the RFC and tested against the transparency-dev/merkle test
vectors (tests/protocol/data/transparency-dev-merkle). Hashes are SHA-256::

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    empty tree = SHA-256("")

:class:`MerkleTree` keeps the hash of every complete (perfect, aligned)
subtree, level by level, in contiguous byte arrays, so a proof is read off the
stored levels with only the O(log n) hashes of the tree's ragged right edge
computed: an inclusion proof in a log of a million entries costs microseconds,
not a rehash. The ``verify_*`` functions need no tree: they are what a
verifier holding only a root, a size and a proof runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from protocol.errors import ProtocolError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ProtocolError):
    """A Merkle proof that does not prove what it is said to prove."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only Merkle tree over leaf hashes.

    >>> tree = MerkleTree()
    >>> tree.append(b"first entry")
    0
    >>> tree.append(b"second entry")
    1
    >>> verify_inclusion(1, tree.size, leaf_hash(b"second entry"),
    ...                  tree.inclusion_proof(1), tree.root())
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()):
        # _levels[k] holds the hashes of the complete subtrees of 2**k leaves,
        # left to right, 32 bytes each.
        self._levels: list[bytearray] = [bytearray()]
        self.size = 0
        for h in leaf_hashes:
            self.append_hash(h)

    def append(self, entry: bytes) -> int:
        """Add an entry (hashed as a leaf); returns its index."""
        return self.append_hash(leaf_hash(entry))

    def append_hash(self, leaf: bytes) -> int:
        """Add a leaf by its leaf hash; returns its index."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
        index = self.size
        self._levels[0] += leaf
        self.size += 1
        # Each level gains a node whenever the one below it completes a pair.
        level, count, node = 0, self.size, leaf
        while count % 2 == 0:
            below = self._levels[level]
            node = node_hash(bytes(below[-2 * HASH_SIZE:-HASH_SIZE]), node)
            level, count = level + 1, count // 2
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += node
        return index

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        self._check_index(index, self.size)
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size])."""
        size = self.size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        proof: list[bytes] = []
        lo, hi = 0, size
        # Walk down from the root, collecting the sibling of each subtree the
        # leaf is in; the RFC lists them leaf first, so reverse at the end.
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo = lo + k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]), 0 < old_size <= new_size."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        proof: list[bytes] = []
        lo, hi, m, whole = 0, new_size, old_size, True
        # SUBPROOF(m, D[lo:hi], whole), unrolled; siblings collected top down.
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            proof.append(self._hash(lo, hi))
        proof.reverse()
        return proof

    # --- inside ---------------------------------------------------------------

    def _node(self, level: int, index: int) -> bytes:
        at = index * HASH_SIZE
        return bytes(self._levels[level][at:at + HASH_SIZE])

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range the RFC's recursion produces (lo aligned)."""
        n = hi - lo
        if n & (n - 1) == 0:  # a complete subtree: stored
            level = n.bit_length() - 1
            return self._node(level, lo >> level)
        k = _split(n)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is not between 0 and {self.size}")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not in a tree of {size}")


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what}[{i}] is {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes,
                              proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root that ``proof`` leads to from ``leaf``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of {size}")
    _check_hashes([leaf], "leaf hash")
    _check_hashes(proof, "inclusion proof")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows ``leaf`` at ``index`` under ``root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the tree's root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes,
                       root2: bytes) -> None:
    """RFC 9162 §2.1.4.2: raise :class:`ProofError` unless the tree of ``size2``
    with ``root2`` extends the tree of ``size1`` with ``root1``, as ``proof`` shows."""
    _check_hashes(proof, "consistency proof")
    if size1 <= 0 or size2 < size1:
        raise ProofError(f"no consistency proof from size {size1} to {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of the same size need an empty consistency proof")
        if root1 != root2:
            raise ProofError("two trees of the same size with different roots")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the trees are deep")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the old root (size {size1})")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the new root (size {size2})")
