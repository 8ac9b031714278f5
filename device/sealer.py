"""Sealing a media segment: encrypt while writing, hash, fsync, journal, then hand over.

:class:`SegmentSealer` is the sink the muxer writes a segment's MP4 bytes
into. Plaintext never reaches the disk: bytes are encrypted to the archive's
key (custody-seg/1) as they arrive, and both the plaintext and the stored
bytes are hashed on the way. At each fragment end the open chunk is closed and
the file fdatasync'd, so a power cut loses at most the fragment in flight.
The flush runs on a thread of the sealer's own while the caller goes on
encrypting the next fragment (see the class).

The file lives in ``pending/`` while it is written and moves into ``media/``
only when sealed; the caller then appends the ``segment`` entry.

The journal
-----------
The device cannot decrypt its own footage, so after a power cut it could not
tell what the surviving bytes hold. Everything needed to write the
``segment`` entry of a cut file is therefore kept, in plaintext metadata
(never media), in two places:

- ``pending/<file>.journal``, one JSON object per line, each fdatasync'd.
  Line 1, written when the file is opened::

    {"journal": "custody-journal/1", "file": "r000012-00003.cseg",
     "codecs": {"video": "h264", "audio": "flac"}, "opened_monotonic_ns": 81234567890,
     "context": {"recording": 12, "span": 0, "index": 3, "utc_offset_ns": ...,
                 "frame_period_ns": 100000000, "audio_rate": 48000}}

  ``context`` is the caller's, as given (any JSON object); recovery reads the
  keys shown. ``close()`` adds a ``{"sealed": true, …}`` line (final sizes
  and hashes) once the final chunk is durable, *before* moving the file into
  ``media/``.
- The *fragment marks*: two extended attributes of the segment file itself,
  ``user.custody.fragment.a`` and ``.b`` (:data:`FRAGMENT_MARKS`). At each
  fragment end the flusher writes the fragment's record into one of them,
  then fsyncs the file once, which makes the fragment's bytes and its record
  durable together: one flush per fragment, where a journal line would
  need a second (docs/adr/0005)::

    {"fragment": 4, "stored_size": 401326, "stored_sha256": "…",
     "plaintext_size": 401004, "plaintext_sha256": "…", "written_monotonic_ns": ...,
     "content": {"frames": 45, "first_frame_us": ..., "last_frame_us": ...,
                 "audio_samples": 144000, "first_sample_us": ..., "last_sample_us": ...}}

  Sizes and hashes are of the file up to the end of this fragment (whole
  chunks); ``content`` is the whole segment up to there (the muxer's
  :class:`~device.muxer.FragmentInfo` totals; capture times in µs on the
  monotonic capture clock), or null if the caller gave none.
  ``written_monotonic_ns`` is when the mark was written, on the same clock.

  The kernel may write a mark out before the bytes it names (a metadata
  commit of its own), so a mark alone proves nothing: recovery keeps the
  newest mark whose ``stored_size`` bytes are in the file and hash to its
  ``stored_sha256``. The two marks take turns, one per flush, so while one
  is being rewritten the other still names the last fragment made durable:
  a cut loses at most the fragment being flushed and the one in flight.

The journal file and the marks go once the ``segment`` entry is appended:
``close()`` removes them once the file is in ``media/``, or
``close(keep_journal=True)`` leaves them until
:meth:`SegmentSealer.release_journal`, which the caller calls after
appending the entry: only then is a cut between sealing and the entry
recoverable (without them the device no longer knows what the sealed file
holds, and the file is left without an entry). The store's filesystem must
keep extended attributes (ext4 does; :func:`check_store_keeps_marks`).

A journal line cut short by a power cut has no ``\\n`` and is ignored. Recovery:
:mod:`device.recovery` and ``docs/recovery.md``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardware.host.durable import fsync_dir
from protocol.entries import MediaFile
from protocol.journal_auth import JournalKey
from protocol.segment_crypto import (
    MAGIC,
    MAX_CHUNK_PLAINTEXT,
    SCHEME,
    STORED_CHUNK_MAX,
    SegmentEncryptor,
)
from protocol.store_reader import MEDIA_DIR

if TYPE_CHECKING:  # the muxer (and PyAV) are not needed to seal bytes
    from device.muxer import FragmentInfo

PENDING_DIR = "pending"
JOURNAL_SUFFIX = ".journal"
JOURNAL_FORMAT = "custody-journal/1"
# The two extended attributes that take turns holding the last fragment's record.
FRAGMENT_MARKS = ("user.custody.fragment.a", "user.custody.fragment.b")


def journal_path(segment_path: Path) -> Path:
    """Where the journal of a segment being written lives: beside it.

    >>> journal_path(Path("store/pending/r000001-00000.cseg")).name
    'r000001-00000.cseg.journal'
    """
    return segment_path.with_name(segment_path.name + JOURNAL_SUFFIX)


def read_fragment_marks(segment_path: Path) -> list[dict[str, Any]]:
    """The fragment records a segment file carries, oldest first (unreadable ones left out).

    A mark names bytes that may not have reached the medium: check them
    against the file before trusting it (:mod:`device.recovery` does).
    """
    marks = []
    for name in FRAGMENT_MARKS:
        try:
            record = json.loads(os.getxattr(segment_path, name))
        except (OSError, ValueError):  # absent (ENODATA), or torn: no mark
            continue
        if isinstance(record, dict) and isinstance(record.get("fragment"), int):
            marks.append(record)
    return sorted(marks, key=lambda r: r["fragment"])


def clear_fragment_marks(segment_path: Path) -> None:
    """Remove a sealed file's marks: its ``segment`` entry is the record now."""
    for name in FRAGMENT_MARKS:
        with suppress(OSError):  # not there (ENODATA), or the file is gone
            os.removexattr(segment_path, name)


def check_store_keeps_marks(store: Path) -> None:
    """Raise :class:`OSError` naming ``store`` if its filesystem keeps no extended attributes."""
    probe = Path(store) / f".custody-marks-probe-{os.getpid()}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.touch()  # a store that cannot be written to fails here, naming the probe
    try:
        os.setxattr(probe, FRAGMENT_MARKS[0], b"{}")
    except OSError as e:
        if e.errno != errno.ENOTSUP:
            raise
        raise OSError(e.errno, f"{store}: its filesystem does not keep extended attributes "
                      f"(user.*), which the sealer's fragment marks need; use ext4 or "
                      f"another filesystem that does") from e
    finally:
        probe.unlink(missing_ok=True)


def fragment_content(fragment: FragmentInfo) -> dict[str, int | None]:
    """A fragment mark's ``content``: the segment up to the fragment's end.

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


def encryption_of(header: bytes) -> dict[str, str]:
    """A MediaFile's ``encryption``: the scheme, the archive key and this file's ephemeral key.

    The ephemeral key is fresh for every file, so the ledger says which
    headers it has sealed: recovery refuses a pending file that repeats one.
    """
    return {"scheme": SCHEME, "recipient": header[-32:].hex(),
            "ephemeral": header[len(MAGIC):len(MAGIC) + 32].hex()}


def _json_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class _Durable:
    """In a stage's queue: make everything before it durable along with ``record``.

    A fragment's record is its mark, set before the flush; a ``sealed`` record
    is a journal line, written after it.
    """

    record: dict[str, Any]


@dataclass(slots=True)  # one per chunk: the cheapest kind to make
class _Chunk:
    """In the writer's queue: the first ``size`` bytes of ``buffer`` are a stored chunk."""

    buffer: bytearray
    size: int


_STOP = object()  # the last item a stage is given
_IOV_MAX = 1024  # Linux's limit of buffers in one writev
# Chunk buffers a sealer owns (64 KiB each). Reused, so encrypting never
# touches fresh memory, and few, so a slow medium holds the caller back early.
_CHUNK_BUFFERS = 8


class _Stage:
    """One step of the sealer's pipeline: a thread handling a queue's items in order.

    Whatever is already waiting is taken together (``handle`` gets a list), so
    a stage that fell behind catches up in fewer system calls. An exception
    goes to ``on_failure`` and the stage goes on taking items, so whoever
    puts never blocks on a dead thread.
    """

    def __init__(self, name: str, handle: Callable[[list[Any]], None],
                 on_failure: Callable[[BaseException], None]):
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._handle, self._on_failure = handle, on_failure
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def finish(self) -> None:
        """Return once everything put so far is handled and the thread has ended."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _IOV_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stop = batch[-1] is _STOP  # nothing is ever put after it
            items = batch[:-1] if stop else batch
            if items:
                try:
                    self._handle(items)
                except BaseException as failure:  # noqa: BLE001 - handed to the sealer's caller
                    self._on_failure(failure)
            if stop:
                return


def _writev_fully(fd: int, parts: list[bytes | memoryview]) -> None:
    """All of ``parts``, in order, in as few system calls as the kernel allows."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


class SegmentSealer:
    """A write-only, encrypting, hashing, journaled file for one segment.

    Three steps overlap, each on a thread: the caller's hashes the plaintext
    and encrypts it into one of a few reused buffers; a writer writes the
    stored bytes and hashes them; a flusher marks each finished fragment and
    makes bytes and mark durable with one fsync. So the medium's flush of
    one fragment overlaps the work on the next. :meth:`end_fragment` returns
    once the fragment *before* is durable and marked; :meth:`wait_durable`
    waits for the last one too.

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
    >>> sealer.wait_durable()   # on the medium and marked
    >>> read_fragment_marks(sealer.path)[-1]["plaintext_size"]
    15
    >>> sealer.close().plaintext_size
    15
    >>> sealer.journal.exists()
    False
    """

    def __init__(self, store: Path, file: str, archive_public: bytes,
                 codecs: dict[str, str] | None = None,
                 context: dict[str, Any] | None = None,
                 journal_key: JournalKey | None = None):
        self.store, self.file = Path(store), file
        # Without a key the records carry no MAC, and recovery trusts none of them.
        self._journal_key = journal_key
        self.codecs = codecs or {"video": "h264", "audio": "flac"}
        self.context = dict(context or {})
        self._encryptor = SegmentEncryptor(archive_public)
        pending = self.store / PENDING_DIR
        pending.mkdir(parents=True, exist_ok=True)
        self.path = pending / file
        self.journal = journal_path(self.path)
        # The caller's side: the plaintext, its hash, the chunk being filled.
        self._plain = hashlib.sha256()
        self._buffer = bytearray()
        self.plaintext_size = 0
        self.fragments = 0
        # The writer's side: the stored bytes and their hash.
        self._stored = hashlib.sha256()
        self.size = 0
        with ExitStack() as opened:  # a medium that fails here leaves no file open
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            opened.callback(os.close, self._fd)
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                       0o644)
            opened.callback(os.close, self._journal_fd)
            self._emit([self._encryptor.header])
            self._journal_lines([{
                "journal": JOURNAL_FORMAT, "file": file, "codecs": self.codecs,
                "opened_monotonic_ns": time.monotonic_ns(), "context": self.context,
                "segment_header_sha256": hashlib.sha256(self._encryptor.header).hexdigest(),
            }])
            fsync_dir(pending)
            opened.pop_all()  # open for good: close() closes them
        # The flusher's side: how far the page cache is dropped, which mark is
        # next, how many fragments are durable, or what failed.
        self._dropped_to = 0
        self._flushes = 0
        self._durable = threading.Condition()
        self._durable_fragments = 0
        self._failure: BaseException | None = None
        # SimpleQueue (here and in _Stage): every 64 KiB chunk passes two queues,
        # and Queue's Python-level locking cost a tenth of the sealing throughput.
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_CHUNK_BUFFERS):
            self._free.put(bytearray(STORED_CHUNK_MAX))
        self._flusher = _Stage(f"flush {file}", self._flush, self._fail)
        self._writer = _Stage(f"write {file}", self._write, self._fail)

    # The muxer's sink interface: write() and end_fragment().
    def write(self, data: bytes) -> int:
        self._raise_failure()
        view = memoryview(data).cast("B")
        self.plaintext_size += len(view)
        # Whole chunks are sealed straight from the caller's bytes; only the
        # rest waits in the buffer (no copying in and shifting out).
        if self._buffer:
            room = MAX_CHUNK_PLAINTEXT - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) < MAX_CHUNK_PLAINTEXT:
                return len(data)
            self._seal_chunk(self._buffer)
            self._buffer = bytearray()
        while len(view) >= MAX_CHUNK_PLAINTEXT:
            self._seal_chunk(view[:MAX_CHUNK_PLAINTEXT])
            view = view[MAX_CHUNK_PLAINTEXT:]
        self._buffer += view
        return len(data)

    def end_fragment(self, content: FragmentInfo | None = None) -> None:
        """A whole fragment has been written: mark it and make it durable.

        ``content`` is the muxer's :class:`~device.muxer.FragmentInfo` for this
        fragment; without it the mark cannot say what the bytes hold and a
        cut file is kept aside rather than sealed. Returns once the fragment
        before this one is durable: at most one finished fragment is ever
        waiting for the medium (in real time, for milliseconds of the next
        fragment's second).
        """
        self._raise_failure()
        if self._buffer:
            self._seal_chunk(self._buffer)
            self._buffer = bytearray()
        self._writer.put(_Durable({
            **self._names, "fragment": self.fragments, "plaintext_size": self.plaintext_size,
            "plaintext_sha256": self._plain.copy().hexdigest(),
            "content": None if content is None else fragment_content(content),
        }))
        self.fragments += 1
        self._wait_for(self.fragments - 1)

    @property
    def durable_fragments(self) -> int:
        """How many of the fragments ended so far are on the medium and marked."""
        return self._durable_fragments

    def wait_durable(self) -> None:
        """Return once every fragment ended so far is on the medium and marked."""
        self._wait_for(self.fragments)

    def _seal_chunk(self, plaintext: bytes | bytearray | memoryview,
                    final: bool = False) -> None:
        self._raise_failure()
        buffer = self._free.get()  # waits while the writer is behind
        if self._failure is not None:  # it failed meanwhile: the buffer goes back
            self._free.put(buffer)
            self._raise_failure()
        self._plain.update(plaintext)  # every byte passes here once, in order
        size = self._encryptor.seal_chunk_into(plaintext, buffer, final)
        self._writer.put(_Chunk(buffer, size))

    def _wait_for(self, fragments: int) -> None:
        with self._durable:
            self._durable.wait_for(
                lambda: self._durable_fragments >= fragments or self._failure is not None)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _fail(self, failure: BaseException) -> None:
        with self._durable:
            self._failure = self._failure or failure  # the first is the one to report
            self._durable.notify_all()

    def _write(self, items: list[_Chunk | _Durable]) -> None:
        """The writer's step: chunks out in order, hashed; a fragment's end on to the flusher."""
        chunks: list[_Chunk] = []
        for item in items:
            if isinstance(item, _Chunk):
                chunks.append(item)
                continue
            self._emit_chunks(chunks)
            chunks = []
            if self._failure is None:  # only once its bytes are written
                self._flusher.put(_Durable({
                    **item.record, "stored_size": self.size,
                    "stored_sha256": self._stored.copy().hexdigest()}))
        self._emit_chunks(chunks)

    def _emit_chunks(self, chunks: list[_Chunk]) -> None:
        """Write and hash these chunks, then give their buffers back, whatever happens.

        A failure is recorded, not raised: every buffer must go back, or the
        caller would wait for one for ever.
        """
        try:
            if chunks and self._failure is None:
                self._emit([memoryview(c.buffer)[:c.size] for c in chunks])
        except BaseException as failure:  # noqa: BLE001 - handed to the caller
            self._fail(failure)
        finally:
            for chunk in chunks:
                self._free.put(chunk.buffer)

    def _emit(self, stored: list[bytes | memoryview]) -> None:
        _writev_fully(self._fd, stored)
        for part in stored:
            self._stored.update(part)
            self.size += len(part)

    def _flush(self, items: list[_Durable]) -> None:
        """The flusher's step: mark the last fragment, then one fsync makes it all durable.

        The writer hands a fragment's end over only once its bytes are written,
        so the fsync covers every byte the mark claims. The marks take turns,
        so the other one still names the fragment the last fsync made durable.
        A ``sealed`` record goes to the journal file once its fsync is done.
        """
        if self._failure is not None:
            return
        records = [item.record for item in items]
        fragments = [r for r in records if "fragment" in r]
        if fragments:
            mark = self._authenticate({**fragments[-1],
                                       "written_monotonic_ns": time.monotonic_ns()})
            os.setxattr(self._fd, FRAGMENT_MARKS[self._flushes % 2], _json_line(mark))
            self._flushes += 1
        os.fsync(self._fd)  # not fdatasync: the mark is metadata
        # The device never reads its footage back: let the kernel reuse these
        # pages (cheaper than fresh ones) rather than fill memory with them.
        durable = records[-1]["stored_size"]
        if durable > self._dropped_to:  # (a length of 0 would mean "to the end")
            os.posix_fadvise(self._fd, self._dropped_to, durable - self._dropped_to,
                             os.POSIX_FADV_DONTNEED)
            self._dropped_to = durable
        finished = [r for r in records if "fragment" not in r]
        if finished:
            now = time.monotonic_ns()
            self._journal_lines([{**r, "written_monotonic_ns": now} for r in finished])
        with self._durable:
            self._durable_fragments += len(fragments)
            self._durable.notify_all()

    @property
    def _names(self) -> dict[str, Any]:
        """What every mark and line says it is about, so none can be moved to another file."""
        return {"file": self.file, **{k: self.context.get(k)
                                      for k in ("recording", "span", "index")}}

    def _authenticate(self, record: dict[str, Any]) -> dict[str, Any]:
        return record if self._journal_key is None else self._journal_key.seal(record)

    def _journal_lines(self, records: list[dict[str, Any]]) -> None:
        _writev_fully(self._journal_fd, [_json_line(self._authenticate(r)) for r in records])
        os.fdatasync(self._journal_fd)

    def close(self, keep_journal: bool = False) -> MediaFile:
        """Finish the file, move it into media/ and describe it for the entry.

        With ``keep_journal`` the journal stays (marked sealed) until
        :meth:`release_journal`, which the caller calls once the ``segment``
        entry is appended: a cut in between is then recovered too.
        """
        if self._fd < 0:
            raise ValueError(f"{self.file}: sealer already closed")
        try:
            self._raise_failure()
            self._seal_chunk(self._buffer, final=True)
            self._buffer = bytearray()
            # Whole and durable: say so before moving it, so a cut from here on (or a
            # refused move) leaves a file that recovery seals whole, not cut short.
            self._writer.put(_Durable({**self._names, "sealed": True,
                                       "plaintext_size": self.plaintext_size,
                                       "plaintext_sha256": self._plain.hexdigest()}))
        finally:  # after a failure too: the threads end and the files close
            self._writer.finish()  # after it has handed the sealed line over
            self._flusher.finish()
            os.close(self._fd)
            os.close(self._journal_fd)
            self._fd = self._journal_fd = -1
        self._raise_failure()
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
            encryption=encryption_of(self._encryptor.header),
        )

    def release_journal(self) -> None:
        """Remove journal and marks: the ``segment`` entry is now the record of this file."""
        clear_fragment_marks(self.store / MEDIA_DIR / self.file)
        self.journal.unlink(missing_ok=True)
        fsync_dir(self.journal.parent)
