"""Media and receipts against the ledger: part of :func:`protocol.verify.verify`.

Pure. Which media the ledger seals, whether each stored file is the one it
sealed, which missing ones a valid receipt archived, and whether footage was
sealed twice under two entries (replayed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.entries import MediaFile
from protocol.errors import ProtocolError
from protocol.receipt import OffloadReceipt, open_receipt
from protocol.segment_crypto import HEADER_SIZE, MAGIC
from protocol.trust import TrustFile

Find = Callable[..., None]  # find(seq, kind, message, file=None)

#: The folder of a store (and of an archived store) that holds its media files.
MEDIA_DIR = "media"


def media_path(name: str) -> str:
    """Where a media file the ledger names lies, relative to its store: what a
    finding about that file's bytes names (not the ledger line sealing it)."""
    return f"{MEDIA_DIR}/{name}"


@dataclass(frozen=True)
class MediaDigest:
    """What the caller measured of one stored media file.

    ``header`` is the file's first bytes (its custody-seg/1 header when it is
    one): two files with one ephemeral key are one segment sealed twice.
    """

    size: int
    sha256: str
    # Not part of what a digest *is*: two digests are equal when size and hash are.
    header: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class KeptReceipt:
    """A receipt read from a file (``receipts/NAME``), so findings can name it."""

    file: str
    envelope: Any


def embedded_receipt(seq: int, envelope: Any, device: str | None, digests: Mapping[int, str],
                     trust: TrustFile, find: Find) -> OffloadReceipt | None:
    """A receipt recorded in entry ``seq``: it must end before that entry."""
    try:
        receipt = open_receipt(envelope, trust)
    except ProtocolError as e:
        find(seq, "bad_receipt", str(e))
        return None
    if receipt.device != device:
        find(seq, "bad_receipt", f"receipt is for device {receipt.device!r}")
    elif receipt.last_seq >= seq or digests.get(receipt.last_seq) != receipt.head:
        find(seq, "receipt_mismatch", f"receipt's head (entry {receipt.last_seq}) is not this "
             "ledger's entry before it")
    else:
        return receipt
    return None


def kept_receipts(receipts: Sequence[Any], device: str | None, digests: Mapping[int, str],
                  trust: TrustFile, find: Find) -> list[OffloadReceipt]:
    """Receipts kept beside the ledger (or given): they may reach beyond its end."""
    last, good = max(digests, default=-1), []
    for i, item in enumerate(receipts):
        name = item.file if isinstance(item, KeptReceipt) else f"receipt {i + 1}"
        envelope = item.envelope if isinstance(item, KeptReceipt) else item
        where = {"file": item.file} if isinstance(item, KeptReceipt) else {}
        try:
            receipt = open_receipt(envelope, trust)
        except ProtocolError as e:
            find(None, "bad_receipt", f"{name}: {e}", **where)
            continue
        if receipt.device != device:
            find(None, "other_device_receipt", f"{name} is for device {receipt.device!r}; "
                 "not used", **where)
        elif receipt.last_seq > last:
            find(last, "tail_cut", f"dock {receipt.dock!r} received entries up to "
                 f"{receipt.last_seq} ({name}), but the ledger ends at {last}: its tail is gone",
                 **where)
        elif digests.get(receipt.last_seq) != receipt.head:
            find(receipt.last_seq, "receipt_mismatch", f"dock {receipt.dock!r} received a "
                 f"different entry {receipt.last_seq} ({name}): the ledger was rewritten",
                 **where)
        else:
            good.append(receipt)
    return good


def _ephemeral_key(header: bytes) -> bytes | None:
    if len(header) >= HEADER_SIZE and header.startswith(MAGIC):
        return header[len(MAGIC):len(MAGIC) + 32]
    return None


def check_media(refs: list[tuple[int, MediaFile]], media: Mapping[str, MediaDigest],
                receipts: list[OffloadReceipt], find: Find) -> None:
    """Each sealed file against what is stored; missing ones against the receipts.

    A missing file is ``offloaded`` only if a receipt names it with the same
    SHA-256 and covers the entry that sealed it (``last_seq`` at or after it).
    """
    archived: dict[str, list[tuple[str, int]]] = {}
    for r in receipts:
        for m in r.media:
            archived.setdefault(m.file, []).append((m.sha256, r.last_seq))
    by_file: dict[str, int] = {}
    by_hash: dict[str, int] = {}
    by_key: dict[bytes, int] = {}
    for seq, ref in refs:
        earlier = by_file.get(ref.file, by_hash.get(ref.sha256, seq))
        replayed = earlier != seq
        where = media_path(ref.file)
        if replayed:
            find(seq, "replayed_media", f"{ref.file}: the same file or bytes as entry "
                 f"{earlier} seals", file=where)
        by_file.setdefault(ref.file, seq)
        by_hash.setdefault(ref.sha256, seq)
        got = media.get(ref.file)
        if got is None:
            covering = [s for h, s in archived.get(ref.file, []) if h == ref.sha256]
            if any(last >= seq for last in covering):
                find(seq, "offloaded", f"{ref.file} was archived against a receipt and freed "
                     "on the device", file=where)
            elif ref.file in archived:
                find(seq, "media_missing", f"{ref.file} is missing; the receipt that names it "
                     "names other bytes or ends before this entry", file=where)
            else:
                find(seq, "media_missing", f"{ref.file} is missing", file=where)
            continue
        key = _ephemeral_key(got.header)
        if key is not None:
            if key in by_key and by_key[key] != seq and not replayed:
                find(seq, "replayed_media", f"{ref.file} has the same segment header (ephemeral "
                     f"key) as the file entry {by_key[key]} seals", file=where)
            by_key.setdefault(key, seq)
        if got.size != ref.size:
            kind = "media_truncated" if got.size < ref.size else "media_size"
            find(seq, kind, f"{ref.file} is {got.size} bytes, sealed as {ref.size}", file=where)
        elif got.sha256 != ref.sha256:
            find(seq, "media_hash", f"{ref.file} does not match its sealed SHA-256 (altered or "
                 "swapped)", file=where)
    for name in sorted(set(media) - set(by_file)):
        find(None, "unsealed_media", f"{name} is not sealed by any entry",
             file=media_path(name))
