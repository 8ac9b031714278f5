"""Spoken prompts: built with the real espeak-ng, joined, and heard by the real VAD."""

from __future__ import annotations

import doctest
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import device.prompts
from device.prompts import (
    FORMAT,
    LANGUAGE_TABLE,
    LANGUAGES,
    MANIFEST,
    PROMPT_DIR_ENV,
    PROMPT_RATE,
    PromptLibrary,
    PromptLibraryMissing,
    SpokenPrompt,
    _split_at_silence,
    build_prompts,
    default_prompt_dir,
    main,
    synthesise_many,
)
from device.vad import SpeechDetector
from hardware.sim.speaker import SimSpeaker
from hardware.speaker import load_wav
from protocol.entries import INTERRUPTION_REASONS

WHEN = datetime(2025, 3, 1, 14, 32)
BUILD_LIMIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both languages, built once for the module (1-3 s on two x86 cores)."""
    folder = tmp_path_factory.mktemp("share") / "prompts"
    result = build_prompts(folder)
    print(f"prompt build: {result.pieces} pieces in {result.seconds:.1f} s")
    assert result.built
    assert result.seconds < BUILD_LIMIT_SECONDS
    return folder


def heard(prompt: SpokenPrompt) -> SpeechDetector:
    detector = SpeechDetector(prompt.rate)
    detector.add(prompt.samples)
    return detector


# -- the build ------------------------------------------------------------------------


def test_build_writes_every_piece_of_both_languages(built: Path) -> None:
    manifest = json.loads((built / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["rate"] == PROMPT_RATE
    assert "1.5" in manifest["espeak_ng"] or "eSpeak" in manifest["espeak_ng"]
    assert set(manifest["languages"]) == set(LANGUAGES)
    for code in LANGUAGES:
        pieces = manifest["languages"][code]["pieces"]
        # 24 hours, 60 minutes, every reason the ledger allows, and the fixed phrases.
        assert {f"hour_{h}" for h in range(24)} <= set(pieces)
        assert {f"minute_{m}" for m in range(60)} <= set(pieces)
        assert {f"reason_{r}" for r in INTERRUPTION_REASONS} <= set(pieces)
        for name in pieces:
            wav = load_wav(built / code / f"{name}.wav")
            assert wav.rate == PROMPT_RATE
            # Trimmed, but a real utterance: at least a syllable, and loud.
            assert 0.1 < wav.seconds < 4.0, (code, name, wav.seconds)
            assert np.abs(wav.samples.astype(np.int32)).max() > 3000, (code, name)


def test_a_second_build_is_a_no_op(built: Path) -> None:
    manifest = built / MANIFEST
    before = manifest.stat().st_mtime_ns
    started = time.perf_counter()
    result = build_prompts(built)
    assert not result.built
    assert time.perf_counter() - started < 1.0
    assert manifest.stat().st_mtime_ns == before


def test_an_incomplete_folder_is_rebuilt_whole(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    assert build_prompts(folder, languages=["en"]).built
    (folder / "en" / "reason_weather.wav").unlink()
    with pytest.raises(PromptLibraryMissing, match="reason_weather.wav"):
        PromptLibrary(folder, "en").interruption_prompt(WHEN, "weather")
    assert build_prompts(folder, languages=["en"]).built
    assert PromptLibrary(folder, "en").interruption_prompt(WHEN, "weather").seconds > 1
    # Nothing left behind from building beside it and swapping in.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts"]


def test_the_command_line_builds_and_says(built: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(built)]) == 0
    assert "already up to date" in capsys.readouterr().out
    wav = tmp_path / "prompt.wav"
    assert main(["say", str(wav), "--dir", str(built), "--language", "en", "--time", "09:05",
                 "--reason", "storage_full"]) == 0
    assert "interrupted at 9:05 because of full storage" in capsys.readouterr().out
    assert load_wav(wav).seconds > 2
    assert main(["say", str(wav), "--dir", str(tmp_path / "nowhere")]) == 1
    assert "no prompt library" in capsys.readouterr().err


# -- prompts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("language", "text"), [
    ("en", "Recording was interrupted at 14:32 because of low battery. Please state the reason."),
    ("zh", "录像在14:32因电量低中断。请说明原因。"),
])
def test_the_interruption_prompt_is_speech(built: Path, language: str, text: str) -> None:
    prompt = PromptLibrary(built, language).interruption_prompt(WHEN, "battery")
    samples, rate = prompt  # it unpacks as (pcm, rate)
    assert rate == PROMPT_RATE and samples.dtype == np.int16 and samples.ndim == 1
    assert prompt.text == text
    assert 3.0 < prompt.seconds < 12.0
    detector = heard(prompt)
    assert detector.has_speech
    # Mostly speech: short gaps between pieces, one pause between the sentences.
    assert detector.speech_seconds > 0.7 * prompt.seconds
    assert 2 <= len(detector.runs) <= 4


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_prompt_is_its_pieces_in_order(built: Path, language: str) -> None:
    library = PromptLibrary(built, language)
    prompt = library.interruption_prompt(WHEN, "location_change")
    names = ["interrupted_at", "hour_14", "minute_32", "because_of", "reason_location_change"]
    assert prompt.name.startswith("+".join(names))
    position = 0
    for name in names:
        piece = library.piece(name)
        found = _find(prompt.samples, piece, position)
        assert found >= position, name
        position = found + len(piece)


def _find(haystack: np.ndarray, needle: np.ndarray, start: int) -> int:
    """Where ``needle`` occurs in ``haystack`` at or after ``start`` (-1: nowhere)."""
    first = np.flatnonzero(haystack[start:] == needle[0]) + start
    for at in first:
        if np.array_equal(haystack[at : at + len(needle)], needle):
            return int(at)
    return -1


def test_time_and_reason_change_the_audio(built: Path) -> None:
    library = PromptLibrary(built, "en")
    base = library.interruption_prompt(WHEN, "battery")
    for other in (library.interruption_prompt(WHEN.replace(minute=33), "battery"),
                  library.interruption_prompt(WHEN.replace(hour=15), "battery"),
                  library.interruption_prompt(WHEN, "crash")):
        assert not np.array_equal(other.samples, base.samples)
    assert library.interruption_prompt(WHEN.replace(minute=0), "crash").text.startswith(
        "Recording was interrupted at 14:00 because of a system crash.")
    assert "at 0:05 " in library.interruption_prompt(datetime(2025, 1, 1, 0, 5), "other").text


def test_chinese_says_liang_dian_and_zheng(built: Path) -> None:
    pieces = json.loads((built / MANIFEST).read_text(encoding="utf-8"))["languages"]["zh"]
    assert pieces["voice"] == "cmn-latn-pinyin"
    assert pieces["pieces"]["hour_2"] == "两点"
    assert pieces["pieces"]["minute_0"] == "整"
    assert pieces["pieces"]["minute_5"] == "零5分"


def test_an_aware_time_is_spoken_in_local_time(built: Path) -> None:
    library = PromptLibrary(built, "en")
    utc = datetime(2025, 3, 1, 6, 32, tzinfo=UTC)
    local = utc.astimezone()
    assert f"hour_{local.hour}+minute_{local.minute}" in library.interruption_prompt(
        utc, "battery").name


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_other_phrases(built: Path, language: str) -> None:
    library = PromptLibrary(built, language)
    for prompt in (library.exemption_confirmed(), library.voice_note_saved(),
                   library.no_speech_heard()):
        assert prompt.rate == PROMPT_RATE
        assert heard(prompt).speech_seconds > 0.5, prompt.text


def test_every_reason_in_every_language(built: Path) -> None:
    for language in LANGUAGES:
        library = PromptLibrary(built, language)
        for reason in INTERRUPTION_REASONS:
            prompt = library.interruption_prompt(WHEN, reason)
            assert LANGUAGE_TABLE[language].reasons[reason] in prompt.text


def test_write_wav_and_play(built: Path, tmp_path: Path) -> None:
    prompt = PromptLibrary(built, "zh").interruption_prompt(WHEN, "mic_fault")
    path = tmp_path / "prompt.wav"
    prompt.write_wav(path)
    wav = load_wav(path)
    assert wav.rate == prompt.rate
    assert np.array_equal(wav.samples, prompt.samples)
    speaker = SimSpeaker(realtime=False)
    speaker.play(prompt)
    assert speaker.played[-1] is prompt


# -- errors ----------------------------------------------------------------------------


def test_an_unknown_reason_is_refused_by_name(built: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown interruption reason 'flat_tyre'.*battery"):
        PromptLibrary(built, "en").interruption_prompt(WHEN, "flat_tyre")


def test_an_unknown_language_is_refused(built: Path) -> None:
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        PromptLibrary(built, "fr")


def test_a_missing_library_names_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "share" / "custody" / "prompts"
    with pytest.raises(PromptLibraryMissing) as caught:
        PromptLibrary(folder, "zh")
    assert isinstance(caught.value, FileNotFoundError)
    assert str(folder) in str(caught.value)
    assert f"python -m device.prompts build {folder}" in str(caught.value)


def test_a_library_without_the_language_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "rate": PROMPT_RATE,
                                               "languages": {"en": {"pieces": {}}}}))
    with pytest.raises(PromptLibraryMissing, match="has no 'zh' prompts"):
        PromptLibrary(folder, "zh")


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PROMPT_DIR_ENV, raising=False)
    assert default_prompt_dir() == Path(sys.prefix) / "share" / "custody" / "prompts"
    monkeypatch.setenv(PROMPT_DIR_ENV, os.fspath(tmp_path))
    assert default_prompt_dir() == tmp_path
    with pytest.raises(PromptLibraryMissing, match=str(tmp_path)):
        PromptLibrary(language="en")


def test_docstring_examples() -> None:
    result = doctest.testmod(device.prompts, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_batch_synthesis_falls_back_to_one_process_per_text() -> None:
    # An empty text makes no sound, so the batch cut finds 2 parts for 3 texts.
    spoken = synthesise_many(["one", "", "three"], "en")
    assert len(spoken) == 3
    assert not np.any(spoken[1]) and np.any(spoken[0]) and np.any(spoken[2])


def test_split_at_silence() -> None:
    rate = 1000
    sound = np.full(100, 5000, np.int16)
    gap = np.zeros(800, np.int16)
    short_gap = np.zeros(300, np.int16)
    samples = np.concatenate([gap, sound, gap, sound, short_gap, sound, gap])
    parts = _split_at_silence(samples, rate, 0.75)
    assert [len(p) for p in parts] == [100, 500]
