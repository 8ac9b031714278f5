"""Where the archived evidence lives, behind a small interface.

:class:`EvidenceStore` is all the archive needs from storage: list devices,
read a ledger and receipts, read and hash a sealed media file, and delete one
at the end of its retention. :class:`FilesystemStore` is the default (the
dock's ``devices/<id>/`` folders); an S3 Object Lock bucket (objects
``devices/<id>/...`` in compliance mode, retention set at upload) fits the
same methods: ``delete_media`` is then only possible once the object's lock
has expired, which is the rule the archive enforces anyway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from hardware.host.durable import fsync_dir
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, RECEIPTS_DIR, sha256_file
from protocol.verify import MediaDigest


class EvidenceStore(Protocol):
    def devices(self) -> list[str]: ...
    def ledger(self, device: str) -> bytes: ...
    def receipts(self, device: str) -> list[Any]: ...
    def media_names(self, device: str) -> list[str]: ...
    def media_digest(self, device: str, file: str) -> MediaDigest | None: ...
    def read_media(self, device: str, file: str) -> bytes: ...
    def delete_media(self, device: str, file: str) -> None: ...


class FilesystemStore:
    """Device stores under ``root/devices/<id>/`` (the dock writes them)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _store(self, device: str) -> Path:
        path = self.root / "devices" / device
        if path.parent != self.root / "devices" or device in ("", ".", ".."):
            raise ValueError(f"{device!r} is not a device id")
        return path

    def devices(self) -> list[str]:
        base = self.root / "devices"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / LEDGER_NAME).is_file())

    def ledger(self, device: str) -> bytes:
        return (self._store(device) / LEDGER_NAME).read_bytes()

    def receipts(self, device: str) -> list[Any]:
        out = []
        for p in sorted((self._store(device) / RECEIPTS_DIR).glob("*.json")):
            try:
                out.append(json.loads(p.read_bytes()))
            except ValueError:
                continue  # verification reports a bad receipt; the index just skips it
        return out

    def media_names(self, device: str) -> list[str]:
        media = self._store(device) / MEDIA_DIR
        return sorted(p.name for p in media.iterdir() if p.is_file()) if media.is_dir() else []

    def _media(self, device: str, file: str) -> Path:
        path = self._store(device) / MEDIA_DIR / file
        if path.parent != self._store(device) / MEDIA_DIR:
            raise ValueError(f"{file!r} is not a media file name")
        return path

    def media_digest(self, device: str, file: str) -> MediaDigest | None:
        path = self._media(device, file)
        return sha256_file(path) if path.is_file() else None

    def read_media(self, device: str, file: str) -> bytes:
        return self._media(device, file).read_bytes()

    def delete_media(self, device: str, file: str) -> None:
        path = self._media(device, file)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
