"""Power-cut recovery, judged from the outside: decrypt with the archive key, decode with PyAV.

A segment is written the device's way (SegmentMuxer into a journaled
SegmentSealer) and then cut: by SIGKILL of the process writing it, or by
truncating its file at a random byte, with the fragment marks a cut there can
leave. Recovery must seal every whole fragment
and nothing else, say exactly what the sealed file holds, delete nothing and
never overwrite media/.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from daemon.export import export_store
from device.ledger_state import LedgerState
from device.muxer import FragmentInfo, SegmentMuxer
from device.recovery import (
    DETECTED_BY,
    RecoveredNote,
    RecoveredSegment,
    cut_reason,
    interruption_for,
    recover_pending,
    release_journal,
)
from device.sealer import FRAGMENT_MARKS, SegmentSealer, read_fragment_marks
from hardware.frames import AudioBlock, VideoFrame
from protocol.entries import RecordStart, Segment, VoiceNote
from protocol.journal_auth import JournalKey
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import HEADER_SIZE, decrypt_segment, read_layout
from tests.conftest import Unit
from tests.device.conftest import (
    AUDIO_RATE,
    CAPTURE_EPOCH_US,
    FPS,
    HEIGHT,
    WIDTH,
    EncodedClip,
    audio_blocks,
    read_counter,
)

REPO = Path(__file__).resolve().parents[2]
UTC_OFFSET_NS = 1_790_000_000_000_000_000 - CAPTURE_EPOCH_US * 1000
NAME = "r000007-00002.cseg"
# The device's journal key (in the recorder: derived from its signing key).
KEY = JournalKey(hashlib.sha256(b"the device's journal key, for these tests").digest())


def context(recording: int = 7, index: int = 2) -> dict:
    return {"recording": recording, "span": 1, "index": index, "utc_offset_ns": UTC_OFFSET_NS,
            "frame_period_ns": 1_000_000_000 // FPS, "audio_rate": AUDIO_RATE}


@pytest.fixture(scope="module")
def archive() -> ArchiveSecretKey:
    return ArchiveSecretKey.generate()


def capture_events(frames: list[VideoFrame], blocks: list[AudioBlock]) -> list[tuple]:
    """Frames and audio blocks in capture order (ties: video first)."""
    events = [(f.timestamp_us, 0, f) for f in frames] + [(b.timestamp_us, 1, b) for b in blocks]
    return sorted(events, key=lambda e: e[:2])


def write_unsealed(store: Path, archive_public: bytes, frames: list[VideoFrame],
                   blocks: list[AudioBlock], name: str = NAME, ctx: dict | None = None,
                   marks: list[dict] | None = None) -> list[FragmentInfo]:
    """A segment written the device's way and never sealed: as a cut right after it leaves it.

    ``marks``, if given, receives every fragment's mark (the file keeps the last two).
    """
    sealer = SegmentSealer(store, name, archive_public, context=ctx or context(), journal_key=KEY)
    fragments: list[FragmentInfo] = []

    def fragment_end(fragment: FragmentInfo) -> None:
        sealer.end_fragment(fragment)
        fragments.append(fragment)
        if marks is not None:
            sealer.wait_durable()
            marks.append(read_fragment_marks(sealer.path)[-1])

    # Fragments of up to a second, as a GOP: some span more than one encryption chunk.
    muxer = SegmentMuxer(sealer, width=WIDTH, height=HEIGHT, fps=FPS,
                         origin_us=min(frames[0].timestamp_us, blocks[0].timestamp_us),
                         on_fragment_end=fragment_end, max_fragment_us=1_000_000)
    for _, kind, item in capture_events(frames, blocks):
        (muxer.add_video if kind == 0 else muxer.add_audio)(item)
    muxer.close()
    sealer.wait_durable()  # its last fragment is marked; the sealer is never closed
    return fragments


def set_marks(path: Path, marks: list[dict]) -> None:
    """Give a file exactly these fragment marks, each in the slot its turn gave it."""
    for name in FRAGMENT_MARKS:
        if name in os.listxattr(path):
            os.removexattr(path, name)
    for mark in marks:
        os.setxattr(path, FRAGMENT_MARKS[mark["fragment"] % 2], json.dumps(mark).encode())


@dataclass
class Decoded:
    counters: list[int]
    pcm: np.ndarray


def decode(mp4: bytes) -> Decoded:
    counters, pcm = [], []
    with av.open(io.BytesIO(mp4)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                counters.append(read_counter(frame.to_ndarray()[:HEIGHT]))
            else:
                pcm.append(frame.to_ndarray().reshape(-1))
    return Decoded(counters, np.concatenate(pcm) if pcm else np.zeros(0, np.int16))


def check_recovered(result: RecoveredSegment, store: Path, archive: ArchiveSecretKey,
                    frames: list[VideoFrame], pcm: np.ndarray) -> Decoded:
    """The sealed file is exactly what its entry claims, and plays."""
    segment = result.segment
    assert segment is not None and segment.recovered and not result.sealed_before_cut
    stored = (store / "media" / segment.media.file).read_bytes()
    assert (segment.media.size, segment.media.sha256) == (
        len(stored), hashlib.sha256(stored).hexdigest())
    plain = decrypt_segment(stored, archive)  # every chunk authentic
    assert not plain.complete  # no final chunk: the entry must say recovered
    assert segment.media.plaintext_size == len(plain.plaintext)
    assert segment.media.plaintext_sha256 == hashlib.sha256(plain.plaintext).hexdigest()
    decoded = decode(plain.plaintext)
    first = frames[0].index - 1000
    assert decoded.counters == list(range(first, first + segment.frames))
    assert segment.audio_samples == len(decoded.pcm) > 0
    assert np.array_equal(decoded.pcm, pcm[: len(decoded.pcm)])
    by_counter = {f.index - 1000: f.timestamp_us for f in frames}
    # From the segment's origin, as the recorder seals it: its first frame, or the audio
    # before that frame (these tests' audio starts at the epoch; a jittered first frame
    # may come after it).
    origin_us = min(by_counter[decoded.counters[0]], CAPTURE_EPOCH_US)
    assert segment.first_capture_utc_ns == origin_us * 1000 + UTC_OFFSET_NS
    assert segment.last_capture_utc_ns == by_counter[decoded.counters[-1]] * 1000 + UTC_OFFSET_NS
    assert result.cut_utc_ns >= segment.last_capture_utc_ns
    assert (segment.recording, segment.span, segment.index) == (7, 1, 2)
    assert (segment.frame_period_ns, segment.audio_rate) == (1_000_000_000 // FPS, AUDIO_RATE)
    # What the entry claims about the file also survives the entry format's own checks.
    assert Segment.from_dict(segment.to_dict()) == segment
    return decoded


def pending_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / "pending").iterdir())}


# --- cuts at random byte offsets ---------------------------------------------------------


def test_a_cut_at_any_byte_keeps_exactly_the_whole_marked_fragments(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    frames = clip.frames(jitter_us=800)[: 5 * FPS]
    blocks = audio_blocks(pcm[: 5 * AUDIO_RATE], CAPTURE_EPOCH_US)
    pristine = tmp_path / "pristine"
    marks: list[dict] = []
    fragments = write_unsealed(pristine, archive.public_raw, frames, blocks, marks=marks)
    written = (pristine / "pending" / NAME).read_bytes()
    layout = read_layout(written)
    assert len(fragments) == len(marks) >= 5 and len(layout.chunk_ends) > len(fragments)
    assert read_fragment_marks(pristine / "pending" / NAME) == marks[-2:]

    fragment_ends = [mark["stored_size"] for mark in marks]
    # A chunk that ends inside a fragment (a keyframe larger than a chunk): whole chunks,
    # but not a whole fragment. These must not be kept.
    inner_chunk_ends = [end for end in layout.chunk_ends if end not in fragment_ends]
    assert inner_chunk_ends
    rng = np.random.default_rng(5)
    cases = [(int(offset), bool(i % 2))
             for i, offset in enumerate(rng.integers(HEADER_SIZE, len(written), 8))]
    cases += [(end + extra, ahead) for end in inner_chunk_ends[:3] for extra in (0, 1)
              for ahead in (False, True)]
    cases += [(len(written), False), (fragment_ends[2], False), (fragment_ends[2], True),
              (fragment_ends[0] - 1, True)]
    for trial, (offset, mark_ahead) in enumerate(cases):
        store = tmp_path / f"cut-{trial}"
        shutil.copytree(pristine, store)
        cut = written[:offset]
        (store / "pending" / NAME).write_bytes(cut)
        # The marks a cut here leaves: the last two whose bytes all reached the medium,
        # or (mark_ahead) the last such and the next, whose mark reached the medium
        # before its bytes did.
        durable = [m for m in marks if m["stored_size"] <= offset]
        left = durable[-1:] + marks[len(durable):len(durable) + 1] if mark_ahead else durable[-2:]
        set_marks(store / "pending" / NAME, left)
        # The oracle: the last mark whose chunks are all within the cut.
        whole = read_layout(cut).whole_size
        expected = [mark for mark in marks if mark["stored_size"] <= whole]

        [result] = recover_pending(store, journal_key=KEY)

        if not expected:
            assert result.segment is None and result.recording == 7
            assert not (store / "media").exists()
            assert (store / "pending" / result.tail_file).read_bytes() == cut
            continue
        check_recovered(result, store, archive, frames, pcm)
        kept = (store / "media" / result.file).read_bytes()
        assert len(kept) == expected[-1]["stored_size"], (trial, offset, mark_ahead)
        assert result.segment.frames == expected[-1]["content"]["frames"]
        assert result.segment.audio_samples == expected[-1]["content"]["audio_samples"]
        # Nothing deleted: the kept file and the tail are the cut file, byte for byte.
        tail = (store / "pending" / result.tail_file).read_bytes() if result.tail_file else b""
        assert kept + tail == cut
        assert not (store / "pending" / NAME).exists()


def test_bytes_changed_after_they_were_marked_are_not_sealed_but_kept_aside(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    frames = clip.frames()[: 4 * FPS]
    marks: list[dict] = []
    write_unsealed(tmp_path, archive.public_raw, frames,
                   audio_blocks(pcm[: 4 * AUDIO_RATE], CAPTURE_EPOCH_US), marks=marks)
    pending = tmp_path / "pending" / NAME
    before_last = marks[-2]["stored_size"]  # the end of the fragment before the last
    damaged = bytearray(pending.read_bytes())
    damaged[before_last + 100] ^= 0x01  # a bit flipped inside the last fragment (a failing medium)
    pending.write_bytes(damaged)

    [result] = recover_pending(tmp_path, journal_key=KEY)

    check_recovered(result, tmp_path, archive, frames, pcm)  # decrypts: every chunk authentic
    assert result.segment is not None and result.segment.media.size == before_last
    assert (tmp_path / "pending" / result.tail_file).read_bytes() == damaged[before_last:]


def test_a_pending_file_with_only_a_header_is_kept_aside_and_its_cut_reported(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    before = time.monotonic_ns()
    SegmentSealer(tmp_path, NAME, archive.public_raw, context=context(), journal_key=KEY)
    header_only = (tmp_path / "pending" / NAME).read_bytes()
    assert len(header_only) == HEADER_SIZE

    [result] = recover_pending(tmp_path, journal_key=KEY)

    assert result.segment is None and result.recording == 7 and result.index == 2
    assert result.file == NAME and result.last_capture_utc_ns is None
    # When it was opened, on the recording's clock: the device was running then.
    assert before + UTC_OFFSET_NS <= result.cut_utc_ns <= time.monotonic_ns() + UTC_OFFSET_NS
    files = pending_files(tmp_path)
    assert files == {result.tail_file: header_only,
                     result.tail_file + ".journal": files[result.tail_file + ".journal"]}
    assert not (tmp_path / "media").exists()
    assert recover_pending(tmp_path, journal_key=KEY) == []  # reported once


def test_two_pending_files_are_both_recovered_in_order(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    frames = clip.frames()[: 3 * FPS]
    write_unsealed(tmp_path, archive.public_raw, frames,
                   audio_blocks(pcm[: 3 * AUDIO_RATE], CAPTURE_EPOCH_US))
    # The next recording's first segment, cut before its first fragment was whole.
    SegmentSealer(tmp_path, "r000009-00000.cseg", archive.public_raw,
                  context=context(recording=9, index=0),
                  journal_key=KEY).write(b"not yet a fragment")

    first, second = recover_pending(tmp_path, journal_key=KEY)

    check_recovered(first, tmp_path, archive, frames, pcm)
    assert first.file == NAME and first.tail_file is None  # nothing beyond the last fragment
    assert (second.recording, second.segment) == (9, None)
    assert os.listdir(tmp_path / "media") == [NAME]


def test_a_cut_voice_note_is_sealed_to_its_last_fragment_and_explains_nothing(
    pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    # Written as the recorder writes a note (device/recorder/mux.py, seal.py): the
    # segments' muxer, audio only; the sealer with the note's context; then the cut.
    name = "v000012-1700.cseg"
    note_context = {"kind": "voice_note", "interruption": 12, "exemption": None,
                    "utc_offset_ns": UTC_OFFSET_NS, "audio_rate": AUDIO_RATE}
    sealer = SegmentSealer(tmp_path, name, archive.public_raw, codecs={"audio": "flac"},
                           context=note_context, journal_key=KEY)
    fragments: list[FragmentInfo] = []

    def fragment_end(fragment: FragmentInfo) -> None:
        sealer.end_fragment(fragment)
        fragments.append(fragment)

    muxer = SegmentMuxer(sealer, audio_rate=AUDIO_RATE, on_fragment_end=fragment_end)
    for block in audio_blocks(pcm[: 3 * AUDIO_RATE], CAPTURE_EPOCH_US):
        muxer.add_audio(block)
    sealer.wait_durable()  # cut before close: the last fragment FFmpeg holds is lost

    [result] = recover_pending(tmp_path, journal_key=KEY)

    assert isinstance(result, RecoveredNote) and isinstance(result.body, VoiceNote)
    note = result.body
    assert note.interruption == 12 and note.speech_seconds == 0.0 and not note.explains
    assert note.first_capture_utc_ns == CAPTURE_EPOCH_US * 1000 + UTC_OFFSET_NS
    assert note.audio_samples == fragments[-1].total_audio_samples > 2 * AUDIO_RATE
    stored = (tmp_path / "media" / note.media.file).read_bytes()
    assert note.media.size == len(stored) and note.media.codecs == {"audio": "flac"}
    plain = decrypt_segment(stored, archive)
    assert np.array_equal(decode(plain.plaintext).pcm, pcm[: note.audio_samples])
    release_journal(tmp_path, result)
    assert recover_pending(tmp_path, journal_key=KEY) == []  # reported once


def test_an_old_voice_notes_journal_without_its_context_is_kept_aside(
    archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    # Before ADR 0048 a note's journal said only its kind: nothing to seal it by.
    sealer = SegmentSealer(tmp_path, "v000012-1700.cseg", archive.public_raw,
                           codecs={"audio": "flac"}, context={"kind": "voice_note"},
                           journal_key=KEY)
    sealer.write(b"flac" * 1000)
    sealer.end_fragment(FragmentInfo(0, 0, 4000, total_audio_samples=4608))
    sealer.wait_durable()
    before = sealer.path.read_bytes()

    assert recover_pending(tmp_path, journal_key=KEY) == []

    [kept, journal] = sorted((tmp_path / "pending").iterdir())
    assert kept.name.startswith("v000012-1700.cseg.tail-") and kept.read_bytes() == before
    assert journal.name == kept.name + ".journal"


def test_recovery_never_overwrites_media(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    frames = clip.frames()[: 3 * FPS]
    write_unsealed(tmp_path, archive.public_raw, frames,
                   audio_blocks(pcm[: 3 * AUDIO_RATE], CAPTURE_EPOCH_US))
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / NAME).write_bytes(b"a sealed file of the same name")

    [result] = recover_pending(tmp_path, journal_key=KEY)

    assert (tmp_path / "media" / NAME).read_bytes() == b"a sealed file of the same name"
    assert result.file != NAME and result.file.endswith(".cseg")
    check_recovered(result, tmp_path, archive, frames, pcm)


# --- the ledger: entries, verification, export, and recovery run twice ----------------------


def test_recovered_segment_verifies_exports_and_is_entered_once(
    unit: Unit, clip: EncodedClip, pcm: np.ndarray, tmp_path: Path
) -> None:
    [start] = unit.append(RecordStart(trigger="button", category="scene", officer="PC-0042",
                                      pre_record_seconds=0))
    rec = start.entry.seq
    frames = clip.frames(jitter_us=800)[: 4 * FPS]
    name = f"r{rec:06d}-00000.cseg"
    write_unsealed(unit.store, unit.archive_public, frames,
                   audio_blocks(pcm[: 4 * AUDIO_RATE], CAPTURE_EPOCH_US), name=name,
                   ctx=context(recording=rec, index=0) | {"span": 0})
    pending = unit.store / "pending" / name
    pending.write_bytes(pending.read_bytes()[:-5000])  # the last fragment torn

    [result] = recover_pending(unit.store, journal_key=KEY)
    # Cut again before the entry was appended: the same body comes back, nothing moves.
    [again] = recover_pending(unit.store, journal_key=KEY)
    assert again.segment == result.segment and again.cut_utc_ns == result.cut_utc_ns
    assert result.segment is not None and result.segment.recovered

    reason = cut_reason(LedgerState.read(unit.store).last_boot_id, "a-new-boot")
    assert reason == "power_loss"
    interruption = interruption_for([result], reason)
    assert (interruption.detected_by, interruption.recording) == (DETECTED_BY, rec)
    unit.append(result.segment, interruption)

    # entered: the journal goes, nothing repeats
    assert recover_pending(unit.store, journal_key=KEY) == []
    assert [p.name for p in (unit.store / "pending").iterdir()] == [result.tail_file]
    report = unit.verify()
    assert not report.errors, report.errors
    assert [i.reason for i in report.interruptions] == ["power_loss"]
    exported = export_store(unit.store, unit.trust, unit.archive, tmp_path / "export")
    [mine] = [r for r in exported if r.file == name]
    assert mine.problem == "" and mine.out is not None
    assert len(decode(mine.out.read_bytes()).counters) == result.segment.frames


@pytest.mark.parametrize("where", ["moved", "move_refused", "sealed_line_lost"])
def test_a_cut_after_sealing_but_before_the_entry_is_recovered_whole(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path, where: str
) -> None:
    """``close(keep_journal=True)``: sealed, then cut before the ``segment`` entry."""
    frames = clip.frames()[: 2 * FPS]
    if where == "move_refused":  # a same-named file in media/: sealing stops short of the move
        (tmp_path / "media").mkdir()
        (tmp_path / "media" / NAME).write_bytes(b"an orphan of an earlier cut")
    sealer = SegmentSealer(tmp_path, NAME, archive.public_raw, context=context(), journal_key=KEY)
    muxer = SegmentMuxer(sealer, width=WIDTH, height=HEIGHT, fps=FPS,
                         on_fragment_end=sealer.end_fragment)
    for _, kind, item in capture_events(frames, audio_blocks(pcm[: 2 * AUDIO_RATE],
                                                             CAPTURE_EPOCH_US)):
        (muxer.add_video if kind == 0 else muxer.add_audio)(item)
    summary = muxer.close()
    if where == "move_refused":
        with pytest.raises(FileExistsError):
            sealer.close(keep_journal=True)
        sealed_bytes = sealer.path.read_bytes()
    else:
        media = sealer.close(keep_journal=True)
        sealed_bytes = (tmp_path / "media" / NAME).read_bytes()
        assert (media.size, media.sha256) == (len(sealed_bytes),
                                              hashlib.sha256(sealed_bytes).hexdigest())
    if where == "sealed_line_lost":  # a journal that never got its sealed line
        lines = sealer.journal.read_bytes().splitlines(keepends=True)
        sealer.journal.write_bytes(b"".join(lines[:-1]))

    [result] = recover_pending(tmp_path, journal_key=KEY)

    segment = result.segment
    assert segment is not None and result.sealed_before_cut and not segment.recovered
    stored = (tmp_path / "media" / segment.media.file).read_bytes()
    assert stored == sealed_bytes  # whole, final chunk and all
    assert (segment.media.size, segment.media.sha256) == (
        len(stored), hashlib.sha256(stored).hexdigest())
    plain = decrypt_segment(stored, archive)
    assert plain.complete
    if where == "sealed_line_lost":
        assert segment.media.plaintext_sha256 is None  # could not know
    else:
        assert segment.media.plaintext_sha256 == hashlib.sha256(plain.plaintext).hexdigest()
    if where == "move_refused":
        assert segment.media.file != NAME
        assert (tmp_path / "media" / NAME).read_bytes() == b"an orphan of an earlier cut"
    assert (segment.frames, segment.audio_samples) == (summary.frames, summary.audio_samples)
    assert segment.last_capture_utc_ns == (summary.last_frame_timestamp_us * 1000
                                           + UTC_OFFSET_NS)
    assert not (tmp_path / "pending" / NAME).exists()


# --- a real hard kill ----------------------------------------------------------------------


def _child(store: Path, archive_public: bytes, data_file: Path, speed: float) -> None:
    """Write a segment at ``speed`` times real time; say each frame once the muxer has it."""
    frames, pcm = pickle.loads(data_file.read_bytes())
    frames = [VideoFrame(*f) for f in frames]
    blocks = audio_blocks(pcm, CAPTURE_EPOCH_US)
    sealer = SegmentSealer(store, NAME, archive_public, context=context(), journal_key=KEY)
    muxer = SegmentMuxer(sealer, width=WIDTH, height=HEIGHT, fps=FPS,
                         origin_us=CAPTURE_EPOCH_US, on_fragment_end=sealer.end_fragment)
    out = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
    out.write("ready\n")
    start = time.monotonic()
    for at_us, kind, item in capture_events(frames, blocks):
        delay = start + (at_us - CAPTURE_EPOCH_US) / 1e6 / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kind == 0:
            muxer.add_video(item)
            out.write(f"{item.timestamp_us}\n")
        else:
            muxer.add_audio(item)
    time.sleep(600)  # never sealed: the parent cuts the power first


def kill_while_writing(tmp_path: Path, archive: ArchiveSecretKey, clip: EncodedClip,
                       pcm: np.ndarray, delays_s: list[float]) -> list[float]:
    """SIGKILL a writer after each delay, recover, check; the media lost at each kill (s)."""
    frames = clip.frames(jitter_us=800)
    data_file = tmp_path / "capture.pickle"
    data_file.write_bytes(pickle.dumps(
        ([(f.data, f.timestamp_us, f.keyframe, f.index) for f in frames],
         pcm[: len(frames) * AUDIO_RATE // FPS])))
    speed = 4.0
    losses = []
    for trial, delay in enumerate(delays_s):
        store = tmp_path / f"kill-{trial}"
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.device.test_recovery", str(store),
             archive.public_raw.hex(), str(data_file), str(speed)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", child.stderr.read()
            time.sleep(delay)
            os.kill(child.pid, signal.SIGKILL)  # a hard kill: nothing gets to run after it
            given = [int(line) for line in child.stdout.read().split()]
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
            child.stderr.close()
        before = pending_files(store)

        [result] = recover_pending(store, journal_key=KEY)

        after = pending_files(store)
        if result.segment is None:  # killed before a fragment was whole
            assert after[result.tail_file] == before[NAME]
            losses.append((given[-1] - frames[0].timestamp_us) / 1e6 if given else 0.0)
            continue
        check_recovered(result, store, archive, frames, pcm)
        kept = (store / "media" / result.file).read_bytes()
        tail = after[result.tail_file] if result.tail_file else b""
        assert kept + tail == before[NAME], "bytes were lost, not kept aside"
        last_kept_us = (result.segment.last_capture_utc_ns - UTC_OFFSET_NS) // 1000
        losses.append((given[-1] - last_kept_us) / 1e6)
    return losses


def test_sigkill_while_writing_loses_at_most_the_fragment_in_flight(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    # The clip lasts 8 s, written at 4x: 2 s. Kills early, mid-way and late.
    losses = kill_while_writing(tmp_path, archive, clip, pcm, [0.45, 1.1, 1.8])
    assert max(losses) <= 1.0, losses


@pytest.mark.slow
def test_twenty_sigkills_at_random_instants(
    clip: EncodedClip, pcm: np.ndarray, archive: ArchiveSecretKey, tmp_path: Path
) -> None:
    delays = list(np.random.default_rng(2).uniform(0.05, 2.2, 20))
    losses = kill_while_writing(tmp_path, archive, clip, pcm, delays)
    assert max(losses) <= 1.0, losses


if __name__ == "__main__":  # the writer process of the SIGKILL tests
    _child(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
