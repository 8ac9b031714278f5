"""The sealer's journal and fragment marks: what they vouch for must be on the medium."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from device.muxer import FragmentInfo, SegmentMuxer
from device.sealer import (
    FRAGMENT_MARKS,
    SegmentSealer,
    fragment_content,
    journal_path,
    read_fragment_marks,
)
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import decrypt_segment
from tests.device.conftest import (
    AUDIO_RATE,
    CAPTURE_EPOCH_US,
    FPS,
    HEIGHT,
    WIDTH,
    EncodedClip,
    audio_blocks,
)

CONTEXT = {"recording": 12, "span": 0, "index": 3, "utc_offset_ns": 1_700_000_000_000_000_000,
           "frame_period_ns": 1_000_000_000 // FPS, "audio_rate": AUDIO_RATE}
NAME = "r000012-00003.cseg"


@pytest.fixture(scope="module")
def archive() -> ArchiveSecretKey:
    return ArchiveSecretKey.generate()


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class PlaintextTap:
    """The muxer's sink: keeps a plaintext copy, hands bytes and fragment ends to the sealer."""

    def __init__(self, sealer: SegmentSealer):
        self.sealer, self.plaintext = sealer, bytearray()
        self.checked: list[FragmentInfo] = []

    def write(self, data: bytes) -> int:
        self.plaintext += data
        return self.sealer.write(data)

    def on_fragment_end(self, fragment: FragmentInfo) -> None:
        self.sealer.end_fragment(fragment)
        self.checked.append(fragment)


def newest_mark(sealer: SegmentSealer) -> dict:
    return read_fragment_marks(sealer.path)[-1]


def test_each_fragment_mark_vouches_for_durable_bytes_and_says_what_they_hold(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = SegmentSealer(tmp_path, NAME, archive.public_raw, context=CONTEXT)
    tap = PlaintextTap(sealer)
    journal = journal_path(sealer.path)
    snapshots: list[tuple[FragmentInfo, dict, bytes]] = []  # newest mark, file as on disk

    def fragment_end(fragment: FragmentInfo) -> None:
        tap.on_fragment_end(fragment)
        sealer.wait_durable()  # end_fragment itself waits only for the fragment before
        snapshots.append((fragment, newest_mark(sealer), sealer.path.read_bytes()))

    muxer = SegmentMuxer(tap, width=WIDTH, height=HEIGHT, fps=FPS,
                         origin_us=CAPTURE_EPOCH_US, on_fragment_end=fragment_end)
    events = [(f.timestamp_us, 0, f) for f in clip.frames()[: 4 * FPS]]
    events += [(b.timestamp_us, 1, b) for b in audio_blocks(pcm[: 4 * AUDIO_RATE],
                                                            CAPTURE_EPOCH_US)]
    for _, kind, item in sorted(events, key=lambda e: e[:2]):
        (muxer.add_video if kind == 0 else muxer.add_audio)(item)
    summary = muxer.close()

    assert journal_lines(journal) == [header := journal_lines(journal)[0]]  # marks, not lines
    assert header["journal"] == "custody-journal/1" and header["file"] == NAME
    assert header["context"] == CONTEXT
    assert header["codecs"] == {"video": "h264", "audio": "flac"}
    assert len(snapshots) == summary.fragments >= 4
    for number, (fragment, line, on_disk) in enumerate(snapshots):
        assert line["fragment"] == number
        # The mark is made durable with the chunk: the file holds exactly the bytes it names...
        assert line["stored_size"] == len(on_disk)
        assert line["stored_sha256"] == hashlib.sha256(on_disk).hexdigest()
        # ...which decrypt, without a final chunk, to the MP4 up to this fragment's end.
        plain = decrypt_segment(on_disk, archive)
        assert not plain.complete
        assert plain.plaintext == bytes(tap.plaintext[: fragment.end_offset])
        assert line["plaintext_size"] == fragment.end_offset
        assert line["plaintext_sha256"] == hashlib.sha256(plain.plaintext).hexdigest()
        assert line["content"] == fragment_content(fragment)
    last = snapshots[-1][1]["content"]
    assert (last["frames"], last["audio_samples"]) == (summary.frames, summary.audio_samples)
    assert last["last_frame_us"] == summary.last_frame_timestamp_us

    # The two marks take turns: the one before the newest is still there.
    assert [m["fragment"] for m in read_fragment_marks(sealer.path)] == [
        summary.fragments - 2, summary.fragments - 1]
    media = sealer.close()
    # Sealed and in media/: the segment entry is the record now, journal and marks go.
    assert not journal.exists() and not sealer.path.exists()
    assert not [a for a in os.listxattr(tmp_path / "media" / NAME) if a in FRAGMENT_MARKS]
    stored = (tmp_path / "media" / NAME).read_bytes()
    assert (media.size, media.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert decrypt_segment(stored, archive).complete


def test_end_fragment_without_content_still_makes_the_bytes_durable(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = SegmentSealer(tmp_path, "plain.cseg", archive.public_raw)
    sealer.write(b"x" * 70_000)  # more than one chunk
    sealer.end_fragment()
    sealer.wait_durable()
    [header], line = journal_lines(sealer.journal), newest_mark(sealer)
    assert header["context"] == {}
    assert line["content"] is None and line["stored_size"] == os.path.getsize(sealer.path)
    assert decrypt_segment(sealer.path.read_bytes(), archive).plaintext == b"x" * 70_000
    assert sealer.close().plaintext_size == 70_000


def test_keep_journal_marks_it_sealed_until_released(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = SegmentSealer(tmp_path, NAME, archive.public_raw, context=CONTEXT)
    sealer.write(b"fragment")
    sealer.end_fragment(FragmentInfo(0, 0, 8, total_video_frames=1, first_frame_us=5,
                                     last_frame_us=5))
    media = sealer.close(keep_journal=True)
    *_, sealed = journal_lines(sealer.journal)
    assert sealed["sealed"] is True
    assert (sealed["stored_size"], sealed["stored_sha256"]) == (media.size, media.sha256)
    assert (sealed["plaintext_size"], sealed["plaintext_sha256"]) == (
        media.plaintext_size, media.plaintext_sha256)
    assert read_fragment_marks(tmp_path / "media" / NAME)[-1]["fragment"] == 0
    sealer.release_journal()
    assert not sealer.journal.exists()
    assert os.listdir(tmp_path / "pending") == []
    assert read_fragment_marks(tmp_path / "media" / NAME) == []


def test_sealing_never_overwrites_media(archive: ArchiveSecretKey, tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / NAME).write_bytes(b"earlier evidence")
    sealer = SegmentSealer(tmp_path, NAME, archive.public_raw)
    sealer.write(b"new")
    sealer.end_fragment()
    with pytest.raises(FileExistsError):
        sealer.close()
    assert (tmp_path / "media" / NAME).read_bytes() == b"earlier evidence"
    assert sealer.path.exists()  # the new file stays in pending/, not lost


class FailingMedium(SegmentSealer):
    """A medium that refuses every write once ``full`` is set, as a full card does."""

    full = False

    def _emit(self, stored: list) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        super()._emit(stored)


@pytest.mark.timeout(60)
def test_a_failing_medium_reaches_the_caller_and_nothing_hangs_or_goes(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = FailingMedium(tmp_path, NAME, archive.public_raw)
    sealer.write(b"a" * 100_000)
    sealer.end_fragment()
    sealer.wait_durable()
    sealer.full = True
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # the writer's failure shows at the caller's next step
            sealer.write(b"b" * 100_000)
            sealer.end_fragment()
    for _ in range(20):  # each call says so at once; none waits for a buffer for ever
        with pytest.raises(OSError, match="No space"):
            sealer.write(b"c" * 70_000)
    with pytest.raises(OSError, match="No space"):
        sealer.close()
    assert not [t for t in threading.enumerate() if t.name.endswith(NAME)]  # no thread left
    with pytest.raises(ValueError, match="already closed"):
        sealer.close()
    # What reached the medium stays, marked, for recovery to seal.
    line = newest_mark(sealer)
    assert line["plaintext_size"] == 100_000
    assert decrypt_segment(sealer.path.read_bytes(), archive).plaintext[:100_000] == (
        b"a" * 100_000)


def test_a_medium_that_fails_at_open_leaves_no_file_open(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / (NAME + ".journal")).write_text("")  # the journal cannot be made
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(FileExistsError):
            SegmentSealer(tmp_path, NAME, archive.public_raw)
        (tmp_path / "pending" / NAME).unlink()  # the data file it made; to try again
    assert len(os.listdir("/proc/self/fd")) == before


def end_fragments(sealer: SegmentSealer, count: int) -> Iterator[int]:
    """Write ``count`` fragments of 80 kB into ``sealer``, yielding each number once ended."""
    for number in range(count):
        sealer.write(bytes([number]) * 80_000)
        sealer.end_fragment()
        yield number


class SlowFlush(SegmentSealer):
    """A medium whose flush takes 0.2 s."""

    def _flush(self, items: list) -> None:
        time.sleep(0.2)
        super()._flush(items)


def test_end_fragment_holds_the_caller_until_the_fragment_before_is_durable(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = SlowFlush(tmp_path, NAME, archive.public_raw)
    for number in end_fragments(sealer, 4):
        # Never more than the fragment just ended waits for the medium.
        assert sealer.durable_fragments >= number, (number, sealer.durable_fragments)
    sealer.wait_durable()
    assert sealer.durable_fragments == 4
    # The newest mark names the last fragment; the other, the one an earlier flush
    # marked (fragment 2, or 1 if the flusher took 2 and 3 together).
    before, last = (mark["fragment"] for mark in read_fragment_marks(sealer.path))
    assert last == 3 and before in (1, 2)
    assert sealer.close().plaintext_size == 320_000


class LateFlusher(SegmentSealer):
    """A flusher 0.2 s late back to its queue after each flush, so fragments pile up."""

    def __init__(self, *args, **kwargs):
        # Per flush: the fragments it made durable, and the marks the file had after it.
        self.flushes: list[tuple[list[int], list[int]]] = []
        super().__init__(*args, **kwargs)

    def _flush(self, items: list) -> None:
        super()._flush(items)
        fragments = [i.record["fragment"] for i in items if "fragment" in i.record]
        if fragments:
            self.flushes.append(
                (fragments, [m["fragment"] for m in read_fragment_marks(self.path)]))
        time.sleep(0.2)


def test_the_mark_a_flush_leaves_alone_names_the_last_durable_fragment(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    sealer = LateFlusher(tmp_path, NAME, archive.public_raw)
    assert list(end_fragments(sealer, 6)) == list(range(6))
    sealer.wait_durable()
    lasts = [fragments[-1] for fragments, _ in sealer.flushes]
    assert any(len(fragments) > 1 for fragments, _ in sealer.flushes)  # one mark for several
    # Two flushes in a row ended on fragments of the same parity: marks chosen by
    # fragment number would have rewritten the only durable mark there.
    assert any(a % 2 == b % 2 for a, b in pairwise(lasts)), sealer.flushes
    # While a flush is under way a cut may leave its mark naming bytes not on the
    # medium; the mark it leaves alone must name the fragment the flush before made
    # durable. So after each flush, both are there.
    for before, (fragments, marks) in zip([None, *lasts[:-1]], sealer.flushes, strict=True):
        assert fragments[-1] in marks and (before is None or before in marks), sealer.flushes
    sealer.close()
