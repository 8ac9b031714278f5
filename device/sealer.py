"""Sealing a media segment: encrypt while writing, hash, fsync, then hand over.

:class:`SegmentSealer` is the sink the muxer writes a segment's MP4 bytes
into. Plaintext never reaches the disk: bytes are encrypted to the archive's
key (custody-seg/1) as they arrive, and both the plaintext and the stored
bytes are hashed on the way. At each fragment end the open chunk is closed and
the file fdatasync'd, so a power cut loses at most the fragment in flight.

The file lives in ``pending/`` while it is written and moves into ``media/``
only when sealed; the caller then appends the ``segment`` entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from device.ledger import fsync_dir
from protocol.entries import MediaFile
from protocol.segment_crypto import MAX_CHUNK_PLAINTEXT, SCHEME, SegmentEncryptor
from protocol.store_reader import MEDIA_DIR

PENDING_DIR = "pending"


class SegmentSealer:
    """A write-only, encrypting, hashing file for one segment.

    >>> import tempfile
    >>> from protocol.keys import ArchiveSecretKey
    >>> store = Path(tempfile.mkdtemp())
    >>> sealer = SegmentSealer(store, "r0001-00000.cseg", ArchiveSecretKey.generate().public_raw)
    >>> sealer.write(b"moof+mdat bytes")
    15
    >>> sealer.end_fragment()
    >>> sealer.close().plaintext_size
    15
    """

    def __init__(self, store: Path, file: str, archive_public: bytes,
                 codecs: dict[str, str] | None = None):
        self.store, self.file = Path(store), file
        self.codecs = codecs or {"video": "h264", "audio": "flac"}
        self._encryptor = SegmentEncryptor(archive_public)
        pending = self.store / PENDING_DIR
        pending.mkdir(parents=True, exist_ok=True)
        self.path = pending / file
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._plain = hashlib.sha256()
        self._stored = hashlib.sha256()
        self._buffer = bytearray()
        self.plaintext_size = 0
        self.size = 0
        self.fragments = 0
        self._emit(self._encryptor.header)
        fsync_dir(pending)

    # The muxer's sink interface: write() and end_fragment().
    def write(self, data: bytes) -> int:
        self._plain.update(data)
        self.plaintext_size += len(data)
        self._buffer += data
        while len(self._buffer) > MAX_CHUNK_PLAINTEXT:
            self._emit(self._encryptor.seal_chunk(bytes(self._buffer[:MAX_CHUNK_PLAINTEXT])))
            del self._buffer[:MAX_CHUNK_PLAINTEXT]
        return len(data)

    def end_fragment(self) -> None:
        """A whole fragment has been written: make it durable now."""
        if self._buffer:
            self._emit(self._encryptor.seal_chunk(bytes(self._buffer)))
            self._buffer.clear()
        os.fdatasync(self._fd)
        self.fragments += 1

    def _emit(self, stored: bytes) -> None:
        view = memoryview(stored)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._stored.update(stored)
        self.size += len(stored)

    def close(self) -> MediaFile:
        """Finish the file, move it into media/ and describe it for the entry."""
        self._emit(self._encryptor.seal_chunk(bytes(self._buffer), final=True))
        self._buffer.clear()
        os.fsync(self._fd)
        os.close(self._fd)
        media = self.store / MEDIA_DIR
        media.mkdir(exist_ok=True)
        os.link(self.path, media / self.file)  # fails rather than overwrite evidence
        os.unlink(self.path)
        fsync_dir(media)
        fsync_dir(self.path.parent)
        return MediaFile(
            file=self.file, container="mp4", codecs=self.codecs, size=self.size,
            sha256=self._stored.hexdigest(), plaintext_size=self.plaintext_size,
            plaintext_sha256=self._plain.hexdigest(),
            encryption={"scheme": SCHEME, "recipient": self._encryptor.header[-32:].hex()},
        )
