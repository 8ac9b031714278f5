"""A voice note's media: an audio-only segment of the segments' own muxer, sealed like one.

Written as it is spoken (device/recorder/mux.py's NoteWriter), with
:class:`~device.muxer.SegmentMuxer` opened without a picture, sealed by
:class:`~device.sealer.SegmentSealer`; here the same two, driven by hand.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from daemon.export import export_store
from device.muxer import SegmentMuxer, SegmentSummary
from device.sealer import SegmentSealer
from device.vad import SpeechListener
from hardware.frames import AudioBlock
from protocol.entries import Interruption, MediaFile, RecordStart, RecordStop, Resume, VoiceNote
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import decrypt_segment
from protocol.store_reader import MEDIA_DIR
from tests.conftest import OFFICER, Unit
from tests.device.conftest import StrictSink
from tests.device.test_vad import _sim_capture, espeak_speech

RATE = 48_000
FIRST_US = 7_000_000_000  # an arbitrary monotonic capture time
BLOCK = 960  # the microphone's 20 ms


def as_blocks(pcm: np.ndarray, block: int = BLOCK, rate: int = RATE,
              first_us: int = FIRST_US) -> list[AudioBlock]:
    """Microphone-like blocks of ``pcm``: sample n captured at first_us + n / rate."""
    return [AudioBlock(pcm[i : i + block], first_us + i * 1_000_000 // rate, rate)
            for i in range(0, len(pcm), block)]


def spoken_note() -> np.ndarray:
    """Half a second of quiet, an espeak-ng sentence, half a second of quiet."""
    quiet = np.zeros(RATE // 2, np.int16)
    return np.concatenate([quiet, espeak_speech(), quiet])


def decode(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)


def ffprobe(path: Path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
         "-count_packets", str(path)], capture_output=True, text=True, check=True)
    assert result.stderr == ""
    return json.loads(result.stdout)


def write_note(pcm: np.ndarray) -> tuple[StrictSink, SegmentSummary]:
    sink = StrictSink()
    muxer = SegmentMuxer(sink, audio_rate=RATE, on_fragment_end=sink.on_fragment_end)
    for block in as_blocks(pcm):
        muxer.add_audio(block)
    return sink, muxer.close()


def speech_of(blocks: list[AudioBlock]) -> float:
    listener = SpeechListener(blocks[0].rate)
    for block in blocks:
        listener.put(block)
    return listener.close().speech_seconds


def seal_note(store: Path, file: str, archive_public: bytes,
              blocks: list[AudioBlock]) -> tuple[MediaFile, SegmentSummary]:
    """What the recorder's mux and seal stages do with a note's blocks, in one thread."""
    sealer = SegmentSealer(store, file, archive_public, codecs={"audio": "flac"},
                           context={"kind": "voice_note"})
    muxer = SegmentMuxer(sealer, audio_rate=blocks[0].rate, on_fragment_end=sealer.end_fragment)
    for block in blocks:
        muxer.add_audio(block)
    summary = muxer.close()
    return sealer.close(), summary


# -- sealed, decrypted, played -------------------------------------------------------------


def test_a_sealed_voice_note_decrypts_to_an_mp4_of_exactly_its_samples(tmp_path: Path) -> None:
    archive = ArchiveSecretKey.generate()
    pcm = spoken_note()
    media, summary = seal_note(tmp_path, "v000042-1.cseg", archive.public_raw, as_blocks(pcm))
    stored = (tmp_path / MEDIA_DIR / media.file).read_bytes()
    assert media.codecs == {"audio": "flac"} and media.size == len(stored)
    assert not (tmp_path / "pending" / media.file).exists()

    plain = decrypt_segment(stored, archive)
    assert plain.complete
    assert len(plain.plaintext) == media.plaintext_size == summary.bytes_written
    mp4 = tmp_path / "note.mp4"
    mp4.write_bytes(plain.plaintext)

    probe = ffprobe(mp4)
    [stream] = probe["streams"]
    assert (stream["codec_type"], stream["codec_name"]) == ("audio", "flac")
    assert (int(stream["sample_rate"]), stream["channels"]) == (RATE, 1)
    assert float(probe["format"]["duration"]) == pytest.approx(len(pcm) / RATE, abs=0.01)

    decoded = decode(plain.plaintext)
    assert decoded.dtype == np.int16
    assert np.array_equal(decoded, pcm)  # bit-identical, not a sample more or less

    assert summary.first_sample_timestamp_us == summary.origin_us == FIRST_US
    assert summary.audio_samples == len(pcm) and summary.frames == 0
    assert summary.audio_timing_error_us <= 1
    assert summary.fragments >= len(pcm) / RATE / 0.4  # fragments of at most 0.4 s


def test_silence_has_no_speech_and_espeak_has() -> None:
    # The speech detector hears the PCM the note is written from (device/recorder/memo.py).
    assert speech_of(as_blocks(np.zeros(5 * RATE, np.int16))) == 0.0
    assert speech_of(as_blocks(spoken_note())) > 2.0


def test_the_simulators_microphone_gives_notes_with_and_without_speech() -> None:
    # What end-to-end tests record: the background tone, with or without speak(2.0).
    assert speech_of(list(_sim_capture(3.0, 0.0, 0.0))) == 0.0
    assert 1.5 <= speech_of(list(_sim_capture(0.5, 2.0, 0.5))) <= 2.3


def test_exported_from_a_store_it_plays_on_its_own(unit: Unit, tmp_path: Path) -> None:
    pcm = spoken_note()
    [start] = unit.append(RecordStart(trigger="button", category="scene", officer=OFFICER,
                                      pre_record_seconds=0))
    recording = start.entry.seq
    [cut] = unit.append(Interruption(reason="battery", detected_by="battery_gauge",
                                     cut_utc_ns=start.entry.time.utc_ns, recording=recording))
    unit.append(Resume(interruption=cut.entry.seq, recording=recording))
    media, summary = seal_note(unit.store, f"v{cut.entry.seq:06d}-1.cseg",
                               unit.archive_public, as_blocks(pcm))
    [note] = unit.append(VoiceNote(
        interruption=cut.entry.seq, media=media, first_capture_utc_ns=unit.clock.utc_ns,
        audio_samples=summary.audio_samples, audio_rate=RATE,
        speech_seconds=round(speech_of(as_blocks(pcm)), 3)))
    unit.append(RecordStop(recording=recording, trigger="button"))

    report = unit.verify()
    [interruption] = [i for i in report.interruptions if i.seq == cut.entry.seq]
    assert interruption.explained and interruption.voice_note == note.entry.seq

    results = export_store(unit.store, unit.trust, unit.archive, tmp_path / "export")
    [exported] = [r for r in results if r.file == media.file]
    assert exported.problem == "" and exported.out is not None
    # Played on its own: ffmpeg turns the exported file alone into the original sound.
    wav = tmp_path / "played.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(exported.out), "-f", "wav",
                    "-acodec", "pcm_s16le", str(wav)], check=True)
    from hardware.speaker import load_wav

    played = load_wav(wav)
    assert played.rate == RATE
    assert np.array_equal(played.samples, pcm)


# -- the file's shape ------------------------------------------------------------------


def test_fragments_are_short_and_the_sink_is_only_appended_to() -> None:
    pcm = spoken_note()
    sink, summary = write_note(pcm)
    assert sink.forbidden_calls == []
    assert summary.fragments == len(sink.fragment_ends) >= 10
    # A segment's fragments: at most muxer.MAX_FRAGMENT_US (0.4 s) each.
    assert all(f.audio_samples <= 0.4 * RATE for f in sink.fragment_ends)
    assert all(f.video_frames == 0 for f in sink.fragment_ends)
    assert sum(f.audio_samples for f in sink.fragment_ends) == len(pcm)
    assert [f.index for f in sink.fragment_ends] == list(range(len(sink.fragment_ends)))
    last = sink.fragment_ends[-1]
    assert last.total_audio_samples == len(pcm)
    assert last.first_sample_us == FIRST_US
    assert last.last_sample_us == FIRST_US + round((len(pcm) - 1) * 1_000_000 / RATE)
    # After the last fragment comes only the mfra index (one entry per fragment).
    tail = bytes(sink.data[last.end_offset:])
    assert tail[4:8] == b"mfra" and int.from_bytes(tail[:4], "big") == len(tail)


def test_a_power_cut_keeps_every_sample_before_the_last_fragment_end() -> None:
    pcm = spoken_note()
    sink, _ = write_note(pcm)
    for fragment in sink.fragment_ends[:3]:
        prefix = decode(bytes(sink.data[: fragment.end_offset]))
        assert len(prefix) == fragment.total_audio_samples
        assert np.array_equal(prefix, pcm[: len(prefix)])


def test_other_rates_are_taken_as_given(tmp_path: Path) -> None:
    rate = 16_000
    pcm = espeak_speech(rate=rate)
    archive = ArchiveSecretKey.generate()
    media, summary = seal_note(tmp_path, "v16k.cseg", archive.public_raw,
                               as_blocks(pcm, block=320, rate=rate))
    assert summary.audio_samples == len(pcm)
    plain = decrypt_segment((tmp_path / MEDIA_DIR / media.file).read_bytes(), archive)
    assert np.array_equal(decode(plain.plaintext), pcm)


def test_refuses_audio_it_cannot_write() -> None:
    muxer = SegmentMuxer(StrictSink(), audio_rate=RATE)
    with pytest.raises(ValueError, match="16000 Hz"):
        muxer.add_audio(AudioBlock(np.zeros(160, np.int16), 0, 16_000))
    with pytest.raises(ValueError, match="int16"):
        muxer.add_audio(AudioBlock(np.zeros(160, np.float32), 0, RATE))
    with pytest.raises(ValueError, match="shape"):
        muxer.add_audio(AudioBlock(np.zeros((160, 2), np.int16), 0, RATE))
    with pytest.raises(ValueError, match="without video"):
        muxer.add_video(None)  # type: ignore[arg-type]
    muxer.close()
    with pytest.raises(ValueError, match="closed"):
        muxer.add_audio(AudioBlock(np.zeros(160, np.int16), 0, RATE))
    with pytest.raises(ValueError, match="height or fps"):
        SegmentMuxer(StrictSink(), fps=30, audio_rate=RATE)


# -- sealed by the recorder's seal stage: the segments' two-phase close ------------------------


def seal_stage_note(unit: Unit, blocks: list[AudioBlock], append_fails: bool = False):
    """A note written as the mux stage writes it, handed message by message to a real
    seal stage on the unit's ledger; returns the note's ref and what the journal was
    while the entry was being appended."""
    from device.config import RecorderConfig
    from device.recorder.appender import EntryAppender
    from device.recorder.memo import Memo, VoiceNotes
    from device.recorder.messages import NoteRef, SealMemo
    from device.recorder.mux import NoteWriter
    from device.recorder.seal import SealStage
    from device.recorder.stats import RecorderStats
    from device.sealer import journal_path
    from hardware.clock import SystemClock

    config = RecorderConfig.from_toml("")
    stats = RecorderStats()
    appender = EntryAppender(unit.ledger(), SystemClock())
    notes = VoiceNotes(config, appender, stats, signal=lambda _: None)
    stage = SealStage(config, stats, appender, None, lambda _: None,  # type: ignore[arg-type]
                      notes, unit.archive_public, lambda: SegmentSealer, lambda _: None)

    class Direct:  # the seal queue, handled at once in this thread
        def put(self, message: object, nbytes: int = 0) -> None:
            stage.handle(message)  # type: ignore[arg-type]

    class MuxSide:
        seal = Direct()
        config = RecorderConfig.from_toml("")

    ref = NoteRef(f"v{12:06d}-1.cseg", interruption=12)
    writer = NoteWriter(MuxSide(), ref)  # type: ignore[arg-type]
    for block in blocks:
        writer.muxer.add_audio(block)
    summary = writer.muxer.close()
    journal = journal_path(unit.store / "pending" / ref.file)
    seen: list[bool] = []
    real_append = appender.append

    def append(body):  # noqa: ANN001, ANN202 - the appender's own signature
        seen.append(journal.exists())
        if append_fails:
            raise OSError("the ledger refused the entry")
        return real_append(body)

    appender.append = append  # type: ignore[method-assign]
    stage.handle(SealMemo(Memo(ref, max_us=60_000_000), writer.sink.ref, summary))
    return ref, journal, seen


def test_the_seal_stage_lets_the_journal_go_only_after_the_notes_entry(unit: Unit) -> None:
    [start] = unit.append(RecordStart(trigger="button", category="scene", officer=OFFICER,
                                      pre_record_seconds=0))
    blocks = as_blocks(np.zeros(RATE, np.int16))
    ref, journal, seen = seal_stage_note(unit, blocks)
    assert seen == [True]  # the entry was appended while the journal was still there
    assert not journal.exists() and (unit.store / MEDIA_DIR / ref.file).exists()
    from protocol.envelope import parse_line, split_lines

    entries = [parse_line(line).entry for line in split_lines(unit.ledger_path.read_bytes())]
    [note] = [e.body for e in entries if isinstance(e.body, VoiceNote)]
    assert note.interruption == 12 and note.media.file == ref.file
    assert note.audio_samples == RATE and note.media.codecs == {"audio": "flac"}
    assert entries[-1].seq > start.entry.seq


def test_a_refused_entry_leaves_the_notes_journal_for_recovery(unit: Unit) -> None:
    blocks = as_blocks(np.zeros(RATE, np.int16))
    with pytest.raises(OSError, match="refused"):
        seal_stage_note(unit, blocks, append_fails=True)
    ref = f"v{12:06d}-1.cseg"
    from device.sealer import journal_path

    assert journal_path(unit.store / "pending" / ref).exists()
    assert (unit.store / MEDIA_DIR / ref).exists()  # sealed whole; its entry is what is missing


def test_docstring_examples() -> None:
    import doctest

    import device.muxer
    import hardware.frame_index

    for module in (device.muxer, hardware.frame_index):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__
