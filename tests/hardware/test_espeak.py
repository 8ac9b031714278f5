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
