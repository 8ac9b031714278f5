"""hardware/espeak.py: the one espeak-ng synthesiser of the prompts and the simulated officer."""

from __future__ import annotations

import numpy as np
import pytest

from hardware.espeak import espeak, espeak_version


def test_speech_comes_back_as_samples_at_espeaks_own_rate() -> None:
    samples, rate = espeak(["Voice note saved."], voice="en", speed_wpm=150)
    assert rate == 22_050 and samples.dtype == np.int16
    assert 0.4 < len(samples) / rate < 3.0 and np.abs(samples.astype(np.int32)).max() > 3000
    assert espeak_version().startswith("eSpeak NG")


def test_a_missing_espeak_is_an_error_saying_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt install espeak-ng"):
        espeak(["hello"], voice="en", speed_wpm=150)


def test_a_built_folder_is_readable_by_the_service_user_not_only_its_builder(tmp_path) -> None:
    # Built by root at install time, spoken by the recorder's own user (the booted
    # test found a 0700 folder: the prompts were "unavailable" under systemd).
    from hardware.espeak import build_folder

    folder = tmp_path / "prompts"
    build_folder(folder, {"v": 1}, lambda staging: (staging / "a.wav").write_bytes(b"x"))
    assert folder.stat().st_mode & 0o777 == 0o755


def test_a_folder_an_older_build_left_unreadable_is_not_built_already(tmp_path) -> None:
    # An upgrade over a 0700 folder (built before the fix above) must rebuild it.
    from hardware.espeak import build_folder, built_already, with_build_key

    folder, wanted = tmp_path / "prompts", with_build_key({"v": 1})
    build_folder(folder, wanted, lambda staging: (staging / "a.wav").write_bytes(b"x"))
    assert built_already(folder, wanted, ["a.wav"])
    folder.chmod(0o700)
    assert not built_already(folder, wanted, ["a.wav"])
