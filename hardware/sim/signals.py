"""Known test signals for the simulated microphone, and helpers to recognise them.

The tone's frequency steps once a second through eight values, so any stretch of
audio says which second (mod 8) since the epoch it belongs to; audio/video sync and
lost audio can be checked from the samples alone. Because every frequency is a
whole number of hertz, each second holds whole cycles and the tone is continuous
across steps without tracking phase.

The simulated officer's voice is real speech (:mod:`hardware.sim.voices`), not a
signal made here.
"""

from __future__ import annotations

import numpy as np

TONE_BASE_HZ = 500
TONE_STEP_HZ = 100
TONE_STEPS = 8


def tone_frequency(second: int) -> int:
    """The tone's frequency during whole second ``second`` since the epoch."""
    return TONE_BASE_HZ + TONE_STEP_HZ * (second % TONE_STEPS)


def tone(first_sample: int, count: int, rate: int, amplitude: float = 0.25) -> np.ndarray:
    """``count`` float samples of the stepped tone from absolute sample ``first_sample``."""
    n = np.arange(first_sample, first_sample + count, dtype=np.int64)
    second, within = np.divmod(n, rate)
    freq = TONE_BASE_HZ + TONE_STEP_HZ * (second % TONE_STEPS)
    # (freq * within) % rate keeps the phase argument small and exact in integers.
    phase = 2 * np.pi * ((freq * within) % rate) / rate
    return amplitude * np.sin(phase)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in ``samples`` (Hz), by FFT with a Hann window."""
    data = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(data))


def band_energy_ratio(samples: np.ndarray, rate: int, band: tuple[float, float]) -> float:
    """Share of the signal's energy (DC excluded) inside ``band`` (Hz)."""
    data = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(data)) ** 2
    freqs = np.fft.rfftfreq(len(data), 1 / rate)
    power[0] = 0.0
    total = power.sum()
    if total == 0:
        return 0.0
    inside = power[(freqs >= band[0]) & (freqs <= band[1])].sum()
    return float(inside / total)
