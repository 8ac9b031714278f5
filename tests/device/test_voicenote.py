"""Voice notes: real FLAC in fragmented MP4, really sealed, decrypted and judged by ffprobe/PyAV."""

from __future__ import annotations

import doctest
import io
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

import device.voicenote
from daemon.export import export_store
from device.voicenote import VoiceNoteSummary, VoiceNoteWriter, seal_voice_note
from hardware.frames import AudioBlock
from protocol.entries import Interruption, RecordStart, RecordStop, Resume, VoiceNote
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


def write_note(pcm: np.ndarray, **options: object) -> tuple[StrictSink, VoiceNoteSummary]:
    sink = StrictSink()
    writer = VoiceNoteWriter(sink, RATE, sink.on_fragment_end, **options)  # type: ignore[arg-type]
    for block in as_blocks(pcm):
        writer.add(block)
    return sink, writer.close()


# -- sealed, decrypted, played -------------------------------------------------------------


def test_a_sealed_voice_note_decrypts_to_an_mp4_of_exactly_its_samples(tmp_path: Path) -> None:
    archive = ArchiveSecretKey.generate()
    pcm = spoken_note()
    media, summary = seal_voice_note(tmp_path, "v000042-1.cseg", archive.public_raw,
                                     as_blocks(pcm))
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

    assert summary.first_sample_us == FIRST_US
    assert summary.audio_samples == len(pcm) and summary.rate == RATE
    assert summary.audio_timing_error_us <= 1
    assert summary.speech_seconds > 2.0
    assert summary.fragments >= summary.seconds  # at least one fragment per second


def test_silence_has_no_speech_and_espeak_has(tmp_path: Path) -> None:
    _, quiet = write_note(np.zeros(5 * RATE, np.int16))
    assert quiet.speech_seconds == 0.0
    _, spoken = write_note(spoken_note())
    assert spoken.speech_seconds > 2.0


def test_the_simulators_microphone_gives_notes_with_and_without_speech() -> None:
    # What end-to-end tests record: the background tone, with or without speak(2.0).
    sink, silent = StrictSink(), None
    writer = VoiceNoteWriter(sink, RATE)
    for block in _sim_capture(3.0, 0.0, 0.0):
        writer.add(block)
    silent = writer.close()
    writer = VoiceNoteWriter(StrictSink(), RATE)
    for block in _sim_capture(0.5, 2.0, 0.5):
        writer.add(block)
    spoken = writer.close()
    assert silent.speech_seconds == 0.0
    assert 1.5 <= spoken.speech_seconds <= 2.3


def test_exported_from_a_store_it_plays_on_its_own(unit: Unit, tmp_path: Path) -> None:
    pcm = spoken_note()
    [start] = unit.append(RecordStart(trigger="button", category="scene", officer=OFFICER,
                                      pre_record_seconds=0))
    recording = start.entry.seq
    [cut] = unit.append(Interruption(reason="battery", detected_by="battery_gauge",
                                     cut_utc_ns=start.entry.time.utc_ns, recording=recording))
    unit.append(Resume(interruption=cut.entry.seq, recording=recording))
    media, summary = seal_voice_note(unit.store, f"v{cut.entry.seq:06d}-1.cseg",
                                     unit.archive_public, as_blocks(pcm))
    [note] = unit.append(VoiceNote(
        interruption=cut.entry.seq, media=media, first_capture_utc_ns=unit.clock.utc_ns,
        audio_samples=summary.audio_samples, audio_rate=RATE,
        speech_seconds=round(summary.speech_seconds, 3)))
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


def test_fragments_are_at_most_a_second_and_the_sink_is_only_appended_to() -> None:
    pcm = spoken_note()
    sink, summary = write_note(pcm)
    assert sink.forbidden_calls == []
    assert summary.fragments == len(sink.fragment_ends) >= 4
    assert all(f.audio_samples <= RATE for f in sink.fragment_ends)  # <= 1 s each
    assert sum(f.audio_samples for f in sink.fragment_ends) == len(pcm)
    assert [f.index for f in sink.fragment_ends] == list(range(len(sink.fragment_ends)))
    last = sink.fragment_ends[-1]
    assert last.total_audio_samples == len(pcm)
    assert last.first_sample_us == FIRST_US
    assert last.last_sample_us == FIRST_US + round((len(pcm) - 1) * 1_000_000 / RATE)
    # After the last fragment comes only the small mfra index.
    assert 0 < len(sink.data) - last.end_offset < 200


def test_a_power_cut_keeps_every_sample_before_the_last_fragment_end() -> None:
    pcm = spoken_note()
    sink, _ = write_note(pcm)
    for fragment in sink.fragment_ends[:3]:
        prefix = decode(bytes(sink.data[: fragment.end_offset]))
        assert len(prefix) == fragment.total_audio_samples
        assert np.array_equal(prefix, pcm[: len(prefix)])


def test_max_seconds_caps_the_note_and_hands_back_the_rest() -> None:
    pcm = (np.arange(5 * RATE) % 2000 - 1000).astype(np.int16)
    sink = StrictSink()
    writer = VoiceNoteWriter(sink, RATE, max_seconds=2.0)
    rests = [writer.add(block) for block in as_blocks(pcm, block=1000)]
    summary = writer.close()
    assert writer.full
    assert summary.audio_samples == 2 * RATE
    assert summary.truncated_samples == 3 * RATE
    first_rest = next(rest for rest in rests if rest is not None)
    # The block straddling the cap is split at the exact sample, with its capture time.
    assert first_rest.timestamp_us == FIRST_US + 2 * 1_000_000
    assert np.array_equal(first_rest.samples, pcm[2 * RATE : 2 * RATE + len(first_rest.samples)])
    assert np.array_equal(decode(bytes(sink.data)), pcm[: 2 * RATE])


def test_an_empty_note_is_still_a_valid_file(tmp_path: Path) -> None:
    sink = StrictSink()
    summary = VoiceNoteWriter(sink, RATE).close()
    assert (summary.audio_samples, summary.first_sample_us, summary.speech_seconds) == (
        0, None, 0.0)
    path = tmp_path / "empty.mp4"
    path.write_bytes(bytes(sink.data))
    [stream] = ffprobe(path)["streams"]
    assert stream["codec_name"] == "flac"


def test_other_rates_are_taken_from_the_blocks(tmp_path: Path) -> None:
    rate = 16_000
    pcm = espeak_speech(rate=rate)
    archive = ArchiveSecretKey.generate()
    media, summary = seal_voice_note(tmp_path, "v16k.cseg", archive.public_raw,
                                     as_blocks(pcm, block=320, rate=rate))
    assert summary.rate == rate and summary.speech_seconds > 2.0
    plain = decrypt_segment((tmp_path / MEDIA_DIR / media.file).read_bytes(), archive)
    assert np.array_equal(decode(plain.plaintext), pcm)


def test_seal_stops_at_max_seconds(tmp_path: Path) -> None:
    pcm = np.zeros(3 * RATE, np.int16)
    media, summary = seal_voice_note(tmp_path, "v-cap.cseg",
                                     ArchiveSecretKey.generate().public_raw, as_blocks(pcm),
                                     max_seconds=1.0)
    assert summary.audio_samples == RATE
    assert media.size > 0


def test_refuses_audio_it_cannot_write() -> None:
    writer = VoiceNoteWriter(StrictSink(), RATE)
    with pytest.raises(ValueError, match="16000 Hz"):
        writer.add(AudioBlock(np.zeros(160, np.int16), 0, 16_000))
    with pytest.raises(ValueError, match="int16"):
        writer.add(AudioBlock(np.zeros(160, np.float32), 0, RATE))
    with pytest.raises(ValueError, match="mono"):
        writer.add(AudioBlock(np.zeros((160, 2), np.int16), 0, RATE))
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add(AudioBlock(np.zeros(160, np.int16), 0, RATE))
    with pytest.raises(ValueError, match="max_seconds"):
        VoiceNoteWriter(StrictSink(), RATE, max_seconds=0)


def test_docstring_examples() -> None:
    result = doctest.testmod(device.voicenote, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_journal_goes_only_after_the_entry(tmp_path: Path):
    """The same two-phase close as a segment's: while the caller appends the note's
    entry the journal is still there; a failing append leaves it for recovery."""
    from device.sealer import journal_path

    archive = ArchiveSecretKey.generate()
    blocks = [AudioBlock(np.zeros(4_800, np.int16), timestamp_us=0, rate=48_000)]
    seen = []

    def append_entry(media, summary) -> None:
        seen.append(journal_path(tmp_path / "pending" / "vn-1.cseg").exists())

    seal_voice_note(tmp_path, "vn-1.cseg", archive.public_raw, blocks, on_sealed=append_entry)
    assert seen == [True]
    assert not journal_path(tmp_path / "pending" / "vn-1.cseg").exists()

    def refuse(media, summary) -> None:
        raise OSError("the ledger refused the entry")

    with pytest.raises(OSError):
        seal_voice_note(tmp_path, "vn-2.cseg", archive.public_raw, blocks, on_sealed=refuse)
    assert journal_path(tmp_path / "pending" / "vn-2.cseg").exists()
