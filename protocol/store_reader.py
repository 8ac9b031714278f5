"""Reading a device store (or an archive of them) from disk for verification.

This and the CLI modules are protocol/'s only I/O: they turn folders into the
bytes and digests that the pure :func:`protocol.verify.verify` takes.

A *store* is a folder::

    ledger.jsonl     one DSSE envelope per line, append-only
    media/           sealed (encrypted) media files named by the ledger
    receipts/        dock-signed receipts kept beside it (optional)

An *archive* holds ``trust.json`` and ``devices/<device id>/``, one store each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import ProtocolError
from protocol.trust import TrustFile
from protocol.verify import MediaDigest

LEDGER_NAME = "ledger.jsonl"
MEDIA_DIR = "media"
RECEIPTS_DIR = "receipts"
TRUST_NAME = "trust.json"
_BUFFER = 1 << 20


class StoreError(Exception):
    """A store, archive or trust file that cannot be read; names the path."""


@dataclass
class StoreContents:
    path: Path
    ledger: bytes
    media: dict[str, MediaDigest] = field(default_factory=dict)
    receipts: list[Any] = field(default_factory=list)


def find_stores(path: Path) -> list[Path]:
    """The stores at ``path``: itself, or each device of an archive."""
    if (path / LEDGER_NAME).is_file():
        return [path]
    devices = path / "devices"
    if devices.is_dir():
        stores = sorted(p for p in devices.iterdir() if (p / LEDGER_NAME).is_file())
        if stores:
            return stores
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    raise StoreError(f"{path}: not a device store ({LEDGER_NAME}) nor an archive (devices/)")


def find_trust(path: Path, explicit: Path | None) -> TrustFile:
    """The trust file given, else the one kept beside the store or archive
    (``trust.json`` in it, next to it, or in a sibling ``keys/`` as ``custody sim``
    and ``custody demo`` lay it out)."""
    if explicit is not None:
        return read_trust(explicit)
    for candidate in (path / TRUST_NAME, path.parent / TRUST_NAME,
                      path.parent / "keys" / TRUST_NAME):
        if candidate.is_file():
            return read_trust(candidate)
    raise StoreError(f"{path}: no trust file; pass --trust FILE")


def read_trust(path: Path) -> TrustFile:
    try:
        return TrustFile.from_bytes(path.read_bytes())
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror}") from e
    except ProtocolError as e:
        raise StoreError(f"{path}: not a valid trust file: {e}") from e


def sha256_file(path: Path, buffer: bytearray | None = None,
                progress: Callable[[int], None] | None = None) -> MediaDigest:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    buf = buffer if buffer is not None else bytearray(_BUFFER)
    view, size = memoryview(buf), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
            if progress:
                progress(n)
    return MediaDigest(size, h.hexdigest())


def read_store(path: Path, progress: Callable[[int, int], None] | None = None) -> StoreContents:
    """Read a store's ledger and receipts and hash its media.

    ``progress(done_bytes, total_bytes)`` is called as media is hashed.
    """
    try:
        ledger = (path / LEDGER_NAME).read_bytes()
    except OSError as e:
        raise StoreError(f"{path / LEDGER_NAME}: {e.strerror}") from e
    contents = StoreContents(path, ledger)
    media_dir = path / MEDIA_DIR
    files = sorted(p for p in media_dir.iterdir() if p.is_file()) if media_dir.is_dir() else []
    total = sum(p.stat().st_size for p in files)
    done = 0
    buf = bytearray(_BUFFER)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    for p in files:
        try:
            contents.media[p.name] = sha256_file(p, buf, advance)
        except OSError as e:
            raise StoreError(f"{p}: {e.strerror}") from e
    receipts_dir = path / RECEIPTS_DIR
    if receipts_dir.is_dir():
        for p in sorted(receipts_dir.glob("*.json")):
            try:
                contents.receipts.append(json.loads(p.read_bytes()))
            except (OSError, ValueError) as e:
                raise StoreError(f"{p}: unreadable receipt ({e})") from e
    return contents
