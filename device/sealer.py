"""Sealing a media segment: encrypt while writing, hash, fsync, journal, then hand over.

:class:`SegmentSealer` is the sink the muxer writes a segment's MP4 bytes
into. Plaintext never reaches the disk: bytes are encrypted to the archive's
key (custody-seg/1) as they arrive, and both the plaintext and the stored
bytes are hashed on the way. At each fragment end the open chunk is closed and
the file fdatasync'd, so a power cut loses at most the fragment in flight.

The file lives in ``pending/`` while it is written and moves into ``media/``
only when sealed; the caller then appends the ``segment`` entry.

The journal
-----------
The device cannot decrypt its own footage, so after a power cut it could not
tell what the surviving bytes hold. Everything needed to write the
``segment`` entry of a cut file is therefore kept, in plaintext metadata
(never media), beside it in ``pending/<file>.journal``: one JSON object per
line, each line fdatasync'd before the next step.

- Line 1, written when the file is opened::

    {"journal": "custody-journal/1", "file": "r000012-00003.cseg",
     "codecs": {"video": "h264", "audio": "flac"}, "opened_monotonic_ns": 81234567890,
     "context": {"recording": 12, "span": 0, "index": 3, "utc_offset_ns": ...,
                 "frame_period_ns": 100000000, "audio_rate": 48000}}

  ``context`` is the caller's, as given (any JSON object); recovery reads the
  keys shown.
- One line per fragment, written only *after* the fragment's chunk is on the
  medium (fdatasync'd), so a line never claims bytes that are not durable::

    {"fragment": 4, "stored_size": 401326, "stored_sha256": "…",
     "plaintext_size": 401004, "plaintext_sha256": "…", "written_monotonic_ns": ...,
     "content": {"frames": 45, "first_frame_us": ..., "last_frame_us": ...,
                 "audio_samples": 144000, "first_sample_us": ..., "last_sample_us": ...}}

  Sizes and hashes are of the file up to the end of this fragment (whole
  chunks); ``content`` is the whole segment up to there (the muxer's
  :class:`~device.muxer.FragmentInfo` totals; capture times in µs on the
  monotonic capture clock), or null if the caller gave none.
  ``written_monotonic_ns`` is when the line was written, on the same clock.
- ``close()`` adds a ``{"sealed": true, …}`` line (final sizes and hashes) once
  the final chunk is durable, *before* moving the file into ``media/``, then
  removes the journal once the file is there. ``close(keep_journal=True)``
  leaves it until :meth:`SegmentSealer.release_journal`, which the caller calls
  after appending the ``segment`` entry: only then is a cut between sealing
  and the entry recoverable (without the journal the device no longer knows
  what the sealed file holds, and the file is left without an entry).

A line cut short by a power cut has no ``\\n`` and is ignored. Recovery:
:mod:`device.recovery` and ``docs/recovery.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.ledger import fsync_dir
from protocol.entries import MediaFile
from protocol.segment_crypto import MAX_CHUNK_PLAINTEXT, SCHEME, SegmentEncryptor
from protocol.store_reader import MEDIA_DIR

if TYPE_CHECKING:  # the muxer (and PyAV) are not needed to seal bytes
    from device.muxer import FragmentInfo

PENDING_DIR = "pending"
JOURNAL_SUFFIX = ".journal"
JOURNAL_FORMAT = "custody-journal/1"


def journal_path(segment_path: Path) -> Path:
    """Where the journal of a segment being written lives: beside it.

    >>> journal_path(Path("store/pending/r000001-00000.cseg")).name
    'r000001-00000.cseg.journal'
    """
    return segment_path.with_name(segment_path.name + JOURNAL_SUFFIX)


def fragment_content(fragment: FragmentInfo) -> dict[str, int | None]:
    """The journal's ``content`` of a fragment: the segment up to its end.

    >>> from device.muxer import FragmentInfo
    >>> fragment_content(FragmentInfo(0, 100, 900, total_video_frames=3))["frames"]
    3
    """
    return {
        "frames": fragment.total_video_frames,
        "first_frame_us": fragment.first_frame_us,
        "last_frame_us": fragment.last_frame_us,
        "audio_samples": fragment.total_audio_samples,
        "first_sample_us": fragment.first_sample_us,
        "last_sample_us": fragment.last_sample_us,
    }


def _json_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class SegmentSealer:
    """A write-only, encrypting, hashing, journaled file for one segment.

    >>> import tempfile
    >>> from protocol.keys import ArchiveSecretKey
    >>> store = Path(tempfile.mkdtemp())
    >>> sealer = SegmentSealer(store, "r0001-00000.cseg", ArchiveSecretKey.generate().public_raw,
    ...                        context={"recording": 1, "span": 0, "index": 0})
    >>> sealer.journal.name
    'r0001-00000.cseg.journal'
    >>> sealer.write(b"moof+mdat bytes")
    15
    >>> sealer.end_fragment()   # the muxer's FragmentInfo, when there is one
    >>> sealer.close().plaintext_size
    15
    >>> sealer.journal.exists()
    False
    """

    def __init__(self, store: Path, file: str, archive_public: bytes,
                 codecs: dict[str, str] | None = None,
                 context: dict[str, Any] | None = None):
        self.store, self.file = Path(store), file
        self.codecs = codecs or {"video": "h264", "audio": "flac"}
        self.context = dict(context or {})
        self._encryptor = SegmentEncryptor(archive_public)
        pending = self.store / PENDING_DIR
        pending.mkdir(parents=True, exist_ok=True)
        self.path = pending / file
        self.journal = journal_path(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._plain = hashlib.sha256()
        self._stored = hashlib.sha256()
        self._buffer = bytearray()
        self.plaintext_size = 0
        self.size = 0
        self.fragments = 0
        self._emit(self._encryptor.header)
        self._journal_line({
            "journal": JOURNAL_FORMAT, "file": file, "codecs": self.codecs,
            "opened_monotonic_ns": time.monotonic_ns(), "context": self.context,
        })
        fsync_dir(pending)

    # The muxer's sink interface: write() and end_fragment().
    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self._plain.update(view)
        self.plaintext_size += len(view)
        # Whole chunks are sealed straight from the caller's bytes; only the
        # rest waits in the buffer (no copying in and shifting out).
        if self._buffer:
            room = MAX_CHUNK_PLAINTEXT - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) < MAX_CHUNK_PLAINTEXT:
                return len(data)
            self._emit(self._encryptor.seal_chunk_parts(self._buffer))
            self._buffer = bytearray()
        while len(view) >= MAX_CHUNK_PLAINTEXT:
            self._emit(self._encryptor.seal_chunk_parts(view[:MAX_CHUNK_PLAINTEXT]))
            view = view[MAX_CHUNK_PLAINTEXT:]
        self._buffer += view
        return len(data)

    def end_fragment(self, content: FragmentInfo | None = None) -> None:
        """A whole fragment has been written: make it durable now, then journal it.

        ``content`` is the muxer's :class:`~device.muxer.FragmentInfo` for this
        fragment; without it the journal cannot say what the bytes hold and a
        cut file is kept aside rather than sealed.
        """
        if self._buffer:
            self._emit(self._encryptor.seal_chunk_parts(self._buffer))
            self._buffer = bytearray()
        os.fdatasync(self._fd)
        # Only now, with the bytes on the medium, may the journal vouch for them.
        self._journal_line({
            "fragment": self.fragments, **self._sizes(),
            "content": None if content is None else fragment_content(content),
        })
        self.fragments += 1

    def _sizes(self) -> dict[str, Any]:
        return {
            "stored_size": self.size, "stored_sha256": self._stored.copy().hexdigest(),
            "plaintext_size": self.plaintext_size,
            "plaintext_sha256": self._plain.copy().hexdigest(),
            "written_monotonic_ns": time.monotonic_ns(),
        }

    def _journal_line(self, record: dict[str, Any]) -> None:
        _write_fully(self._journal_fd, _json_line(record))
        os.fdatasync(self._journal_fd)

    def _emit(self, stored: bytes | list[bytes]) -> None:
        for part in stored if isinstance(stored, list) else (stored,):
            _write_fully(self._fd, part)
            self._stored.update(part)
            self.size += len(part)

    def close(self, keep_journal: bool = False) -> MediaFile:
        """Finish the file, move it into media/ and describe it for the entry.

        With ``keep_journal`` the journal stays (marked sealed) until
        :meth:`release_journal`, which the caller calls once the ``segment``
        entry is appended: a cut in between is then recovered too.
        """
        self._emit(self._encryptor.seal_chunk_parts(self._buffer, final=True))
        self._buffer = bytearray()
        os.fsync(self._fd)
        os.close(self._fd)
        # Whole and durable: say so before moving it, so a cut from here on (or a
        # refused move) leaves a file that recovery seals whole, not cut short.
        self._journal_line({"sealed": True, **self._sizes()})
        os.close(self._journal_fd)
        media = self.store / MEDIA_DIR
        media.mkdir(exist_ok=True)
        os.link(self.path, media / self.file)  # fails rather than overwrite evidence
        os.unlink(self.path)
        fsync_dir(media)
        fsync_dir(self.path.parent)
        if not keep_journal:
            self.release_journal()
        return MediaFile(
            file=self.file, container="mp4", codecs=self.codecs, size=self.size,
            sha256=self._stored.hexdigest(), plaintext_size=self.plaintext_size,
            plaintext_sha256=self._plain.hexdigest(),
            encryption={"scheme": SCHEME, "recipient": self._encryptor.header[-32:].hex()},
        )

    def release_journal(self) -> None:
        """Remove the journal: the ``segment`` entry is now the record of this file."""
        self.journal.unlink(missing_ok=True)
        fsync_dir(self.journal.parent)
