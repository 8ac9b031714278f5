"""Benchmark: sealing throughput of ``SegmentSealer`` against the crypto limit.

    .venv/bin/python benchmarks/seal.py [--mib 256] [--segment-mib 32] [--fragment-kib 1024]
                                        [--write-kib 64] [--no-profile]

The figure: random "MP4" bytes go into :class:`device.sealer.SegmentSealer`
exactly as the recorder's seal thread gives them: ``write()`` calls of
``--write-kib`` (the muxer's writes: FFmpeg's AVIO buffer, which it sizes
to one 64 KiB encryption chunk), ``end_fragment()`` every
``--fragment-kib`` (encrypt the open chunk, mark the fragment, fsync),
``close()`` every ``--segment-mib`` (final chunk,
fsync, move into media/). The store is a temporary directory under
``$BENCH_DIR`` (default: the system's temp dir; on this machine a real disk,
so every fsync reaches the device).

The limit, measured in the same run on one core: the work the format itself
requires of every byte — SHA-256 of the plaintext, ChaCha20-Poly1305 of the
same bytes in 64 KiB chunks (custody-seg/1's chunk size, same nonces and
associated data) and SHA-256 of the stored bytes (the ``segment`` entry
carries both ``plaintext_sha256`` and ``sha256``, so hashing twice is
inherent). No file I/O. Both best of three.

Because the limit leaves out the disk, more numbers say where the difference
goes: the same sealer into ``/dev/shm`` (tmpfs: writes are memory copies and
fsync returns at once); ``io_floor``, what the medium must do without the
crypto (per fragment: its bytes written, its mark set, one fsync);
``serial_limit``, the limit and the I/O floor done one
after the other (1 / (1/limit + 1/io_floor)); and ``pipeline_limit``, the two
perfectly overlapped (the slower of them). The sealer overlaps them on three
threads (docs/adr/0004), so it lands between the last two. ``bare_pipeline``
is the same work in the barest form of that design, written here for the
purpose (:func:`bare_pass`): what this machine allows at all, and so how much
of the difference is the sealer's own. If the ratio is
below 0.8 the caller's thread is profiled (cProfile, one pass) and the top
costs are printed and put in the JSON. The last line is JSON: figure, limit,
ratio (MB/s).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from device.muxer import FragmentInfo
from device.sealer import FRAGMENT_MARKS, SegmentSealer
from protocol.journal_auth import JournalKey
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import MAX_CHUNK_PLAINTEXT, SegmentEncryptor

MB = 1e6


class Workload:
    """The bytes and the cadence of one pass: segments of fragments of writes."""

    def __init__(self, total: int, segment: int, fragment: int, write: int):
        self.segments = max(1, total // segment)
        self.fragments = max(1, segment // fragment)
        self.writes = max(1, fragment // write)
        # Distinct pieces, so no hash or cipher sees the same buffer twice in a row.
        self.pieces = [os.urandom(write) for _ in range(self.fragments * self.writes)]
        self.plaintext = b"".join(self.pieces)  # one segment's bytes
        self.size = self.segments * len(self.plaintext)


JOURNAL_KEY = JournalKey(os.urandom(32))


def seal_pass(work: Workload, store: Path, archive_public: bytes, run: int) -> None:
    for s in range(work.segments):
        # As the recorder does: marks and journal lines authenticated (device/journal_auth).
        sealer = SegmentSealer(store, f"r{run:06d}-{s:05d}.cseg", archive_public,
                               journal_key=JOURNAL_KEY)
        offset = 0
        for f in range(work.fragments):
            start = offset
            for w in range(work.writes):
                piece = work.pieces[f * work.writes + w]
                sealer.write(piece)
                offset += len(piece)
            # the muxer's description of the fragment, as the recorder gives it
            sealer.end_fragment(FragmentInfo(f, start, offset))
        sealer.close()


def limit_pass(work: Workload, archive_public: bytes) -> None:
    view = memoryview(work.plaintext)
    for _ in range(work.segments):
        enc = SegmentEncryptor(archive_public)  # same key setup per segment as the sealer
        aead = ChaCha20Poly1305(os.urandom(32))
        plain, stored = hashlib.sha256(), hashlib.sha256(enc.header)
        for i, start in enumerate(range(0, len(view), MAX_CHUNK_PLAINTEXT)):
            chunk = view[start:start + MAX_CHUNK_PLAINTEXT]
            plain.update(chunk)
            stored.update(aead.encrypt(i.to_bytes(12, "big"), chunk, enc.header))
        plain.digest(), stored.digest()


MARK = b"{" + b"x" * 400 + b"}\n"  # about a fragment mark's length


def io_pass(work: Workload, folder: Path, run: int) -> None:
    """The medium's share alone: what sealing must make durable, without the crypto.

    Per fragment: the bytes written, a mark set on the file (an extended
    attribute, taking turns between two), then one fsync (the sealer's
    durability rule).
    """
    fragment = work.plaintext[: len(work.plaintext) // work.fragments]
    for s in range(work.segments):
        fd = os.open(folder / f"io-{run}-{s}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        for f in range(work.fragments):
            view = memoryview(fragment)
            while view:
                view = view[os.write(fd, view):]
            os.setxattr(fd, FRAGMENT_MARKS[f % 2], MARK)
            os.fsync(fd)
        os.close(fd)


FRAGMENT_END = object()  # in the bare pipeline's writer queue


def bare_pass(work: Workload, folder: Path, run: int) -> None:
    """The sealer's work in the barest pipeline: nothing but the work and the waits.

    The caller hashes 64 KiB views of the plaintext and encrypts them into
    eight reused buffers; a writer thread hashes and writes them; a flusher
    thread marks each fragment, fsyncs the file once and drops its pages.
    The caller waits, as the sealer does, for the
    fragment before the one it ends to be durable. Left out, compared with
    the sealer: chunks assembled from the muxer's writes, the marks'
    contents, the journal file, the header and final chunk, moving the file,
    error handling.
    """
    aead = ChaCha20Poly1305(os.urandom(32))
    view = memoryview(work.plaintext)
    fragment = len(view) // work.fragments
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(8):
        free.put(bytearray(MAX_CHUNK_PLAINTEXT + 16))
    to_write: queue.SimpleQueue = queue.SimpleQueue()
    to_flush: queue.SimpleQueue = queue.SimpleQueue()
    durable = threading.Semaphore(0)

    def writer() -> None:
        fd, stored = -1, hashlib.sha256()
        while (item := to_write.get()) is not None:
            if isinstance(item, int):  # the next segment's file
                fd, stored = item, hashlib.sha256()
            elif item is FRAGMENT_END:
                to_flush.put(fd)
            else:
                stored.update(item)
                os.write(fd, item)
                free.put(item.obj)
        to_flush.put(None)

    def flusher() -> None:
        flushes = 0
        while (item := to_flush.get()) is not None:
            os.setxattr(item, FRAGMENT_MARKS[flushes % 2], MARK)
            flushes += 1
            os.fsync(item)
            os.posix_fadvise(item, 0, 0, os.POSIX_FADV_DONTNEED)
            durable.release()

    threads = [threading.Thread(target=writer, daemon=True),
               threading.Thread(target=flusher, daemon=True)]
    for t in threads:
        t.start()
    for s in range(work.segments):
        fd = os.open(folder / f"b-{run}-{s}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        to_write.put(fd)
        plain, counter = hashlib.sha256(), 0
        for f in range(work.fragments):
            end = (f + 1) * fragment
            for start in range(f * fragment, end, MAX_CHUNK_PLAINTEXT):
                chunk = view[start:min(start + MAX_CHUNK_PLAINTEXT, end)]
                stored_chunk = memoryview(free.get())[:len(chunk) + 16]
                plain.update(chunk)
                aead.encrypt_into(counter.to_bytes(12, "big"), chunk, b"", stored_chunk)
                counter += 1
                to_write.put(stored_chunk)
            to_write.put(FRAGMENT_END)
            if f:
                durable.acquire()  # the fragment before is durable
        durable.acquire()  # and the last one
        os.close(fd)
    to_write.put(None)
    for t in threads:
        t.join()


def best_mbps(n: int, size: int, fn: Callable[[int], None],
              cleanup: Callable[[], None] = lambda: None) -> float:
    times = []
    for run in range(n):
        start = time.perf_counter()
        fn(run)
        times.append(time.perf_counter() - start)
        cleanup()
    return size / min(times) / MB


def fresh(path: Path) -> Callable[[], None]:
    def clean() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    return clean


def profile_pass(work: Workload, store: Path, archive_public: bytes, top: int = 8) -> list:
    profiler = cProfile.Profile()
    profiler.enable()
    seal_pass(work, store, archive_public, 999)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls, tottime, _, _) in stats.stats.items():  # type: ignore
        where = f"{Path(file).name}:{line}" if line else file
        rows.append((tottime, f"{name} ({where})", calls))
    rows.sort(reverse=True)
    stats.sort_stats("tottime").print_stats(top)  # to stdout; moved to stderr by the caller
    return [[label, round(t, 3), round(t / total, 3), calls] for t, label, calls in rows[:top]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256, help="bytes sealed per pass")
    parser.add_argument("--segment-mib", type=int, default=32)
    parser.add_argument("--fragment-kib", type=int, default=1024)
    parser.add_argument("--write-kib", type=int, default=MAX_CHUNK_PLAINTEXT >> 10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    work = Workload(args.mib << 20, args.segment_mib << 20, args.fragment_kib << 10,
                    args.write_kib << 10)
    archive_public = ArchiveSecretKey.generate().public_raw
    result: dict = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        store, io_dir, bare_dir = Path(tmp) / "store", Path(tmp) / "io", Path(tmp) / "bare"
        fresh(store)(), fresh(io_dir)(), fresh(bare_dir)()
        limit = best_mbps(args.runs, work.size, lambda run: limit_pass(work, archive_public))
        figure = best_mbps(args.runs, work.size,
                           lambda run: seal_pass(work, store, archive_public, run), fresh(store))
        bare = best_mbps(args.runs, work.size, lambda run: bare_pass(work, bare_dir, run),
                         fresh(bare_dir))
        io_floor = best_mbps(args.runs, work.size, lambda run: io_pass(work, io_dir, run),
                             fresh(io_dir))
        shm = Path("/dev/shm")
        tmpfs = None
        if shm.is_dir():
            with tempfile.TemporaryDirectory(dir=shm) as mem:
                mem_store = Path(mem) / "store"
                fresh(mem_store)()
                tmpfs = best_mbps(args.runs, work.size,
                                  lambda run: seal_pass(work, mem_store, archive_public, run),
                                  fresh(mem_store))
        serial = 1 / (1 / limit + 1 / io_floor)
        result = {"figure": round(figure, 1), "limit": round(limit, 1),
                  "ratio": round(figure / limit, 3), "unit": "MB/s", "bytes": work.size,
                  "limit_includes": "sha256(plaintext) + ChaCha20-Poly1305 64 KiB chunks + "
                                    "sha256(stored), one core, no I/O",
                  "store": str(Path(tmp).parent),
                  "fragment_bytes": len(work.plaintext) // work.fragments,
                  "write_bytes": len(work.pieces[0]),
                  "tmpfs_figure": round(tmpfs, 1) if tmpfs else None,
                  "tmpfs_ratio": round(tmpfs / limit, 3) if tmpfs else None,
                  "io_floor": round(io_floor, 1), "serial_limit": round(serial, 1),
                  "ratio_vs_serial_limit": round(figure / serial, 3),
                  "bare_pipeline": round(bare, 1), "bare_ratio": round(bare / limit, 3),
                  "ratio_vs_bare_pipeline": round(figure / bare, 3),
                  "pipeline_limit": round(min(limit, io_floor), 1),
                  "ratio_vs_pipeline_limit": round(figure / min(limit, io_floor), 3)}
        if figure / limit < 0.8 and not args.no_profile:
            fresh(store)()
            stdout, sys.stdout = sys.stdout, sys.stderr
            try:
                result["profile_top"] = profile_pass(work, store, archive_public)
            finally:
                sys.stdout = stdout
    print(f"sealed {work.size / MB:.0f} MB per pass in {work.segments} segments of "
          f"{work.fragments} fragments", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
