"""The frontier of an RFC 9162 Merkle tree: enough to extend it and to name its root.

A tree of ``n`` leaves is, left to right, perfect subtrees of the sizes of the
1-bits of ``n``, largest first (RFC 9162 §2.1.1 splits at the largest power
of two below the size, so the left part is always one perfect subtree). Their
root hashes, the *frontier* (a "compact range" from 0 to ``n``), are at most
``log2 n + 1`` hashes, and:

- the tree's root is those hashes folded from the right
  (``MTH = node(h0, node(h1, … node(h_{k-1}, h_k)))``);
- appending a leaf merges the trailing subtrees of equal size, like adding 1
  in binary.

So whoever keeps the frontier of size ``n`` can compute the root of size
``n + m`` from the ``m`` new leaves alone, without the first ``n``. Pure: no
I/O. The text form (:func:`frontier_to_bytes`, :func:`frontier_from_bytes`)
is apart from the model::

    custody-merkle-frontier/1
    <size>
    <base64 of each hash, largest subtree first, one a line>

>>> from protocol.merkle import MerkleTree, leaf_hash
>>> f = Frontier.of_leaves(leaf_hash(x) for x in (b"a", b"b", b"c"))
>>> f.size, len(f.hashes)
(3, 2)
>>> f.root() == MerkleTree(leaf_hash(x) for x in (b"a", b"b", b"c")).root()
True
>>> frontier_from_bytes(frontier_to_bytes(f)) == f
True
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.merkle import EMPTY_ROOT, HASH_SIZE, node_hash

FRONTIER_FORMAT = "custody-merkle-frontier/1"


class FrontierError(ProtocolError):
    """A frontier that is not one of a tree of its size (malformed, or the wrong count)."""


@dataclass(frozen=True)
class Frontier:
    """The root hashes of the perfect subtrees of a tree of ``size`` leaves, largest
    (leftmost) first: one for each 1-bit of ``size``."""

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0:
            raise FrontierError(f"a tree of {self.size} leaves")
        if len(self.hashes) != self.size.bit_count():
            raise FrontierError(f"a tree of {self.size} leaves has {self.size.bit_count()} "
                                f"perfect subtrees, not {len(self.hashes)}")
        for i, h in enumerate(self.hashes):
            if len(h) != HASH_SIZE:
                raise FrontierError(f"hash {i} is {len(h)} bytes, not {HASH_SIZE}")

    @classmethod
    def of_leaves(cls, leaf_hashes: Iterable[bytes]) -> Frontier:
        """The frontier of the tree of these leaf hashes."""
        return cls().extended(leaf_hashes)

    def extended(self, leaf_hashes: Iterable[bytes]) -> Frontier:
        """The frontier of this tree with these leaf hashes appended: O(leaves)."""
        stack, size = list(self.hashes), self.size
        for leaf in leaf_hashes:
            if len(leaf) != HASH_SIZE:
                raise FrontierError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
            node, carry = leaf, size
            while carry & 1:  # a subtree of the new one's size is on the right: merge them
                node = node_hash(stack.pop(), node)
                carry >>= 1
            stack.append(node)
            size += 1
        return Frontier(size, tuple(stack))

    def root(self) -> bytes:
        """RFC 9162 MTH of the whole tree (the empty tree's hash for size 0)."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root


def frontier_to_bytes(frontier: Frontier) -> bytes:
    lines = [FRONTIER_FORMAT, str(frontier.size),
             *(base64.b64encode(h).decode() for h in frontier.hashes)]
    return ("\n".join(lines) + "\n").encode()


def frontier_from_bytes(data: bytes) -> Frontier:
    """Parse the text form; :class:`FrontierError` names what is wrong."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise FrontierError(f"frontier: not ASCII text (byte {e.start})") from e
    if not text.endswith("\n"):
        raise FrontierError("frontier: the last line has no newline (torn?)")
    lines = text[:-1].split("\n")
    if len(lines) < 2:
        raise FrontierError("frontier: no size line")
    head, size_line, *hash_lines = lines
    if head != FRONTIER_FORMAT:
        raise FrontierError(f"frontier: line 1 is {head[:40]!r}, not {FRONTIER_FORMAT!r}")
    if not size_line.isdigit() or (size_line.startswith("0") and size_line != "0"):
        raise FrontierError(f"frontier: line 2 is {size_line[:40]!r}, not a size")
    hashes = []
    for number, line in enumerate(hash_lines, start=3):
        try:
            hashes.append(base64.b64decode(line, validate=True))
        except binascii.Error as e:
            raise FrontierError(f"frontier: line {number} is not base64") from e
    return Frontier(int(size_line), tuple(hashes))
