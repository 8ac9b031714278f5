"""Known test signals for the simulated microphone, and helpers to recognise them.

The tone's frequency steps once a second through eight values, so any stretch of
audio says which second (mod 8) since the epoch it belongs to; audio/video sync and
lost audio can be checked from the samples alone. Because every frequency is a
whole number of hertz, each second holds whole cycles and the tone is continuous
across steps without tracking phase.

The voice-like signal is a harmonic buzz at a speaking pitch (about 120 Hz) shaped
by vowel-like formants and a syllable rhythm: well below the tone's band, so the two
are easy to tell apart.
"""

from __future__ import annotations

import numpy as np

TONE_BASE_HZ = 500
TONE_STEP_HZ = 100
TONE_STEPS = 8
VOICE_BAND_HZ = (80.0, 400.0)


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


def voice_like(count: int, rate: int, amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    """``count`` float samples of a voice-like signal (pitch ~120 Hz, syllables ~4/s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(count) / rate
    # Intonation: the pitch wanders slowly around 120 Hz.
    f0 = 120 + 15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = np.zeros(count)
    for harmonic in range(1, 13):
        # Two broad formant bumps (~250 Hz and ~700 Hz) weight the harmonics.
        centre = harmonic * 120
        weight = np.exp(-(((centre - 250) / 150) ** 2))
        weight += 0.4 * np.exp(-(((centre - 700) / 200) ** 2))
        signal += (weight + 0.05) / harmonic * np.sin(harmonic * phase)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28)) ** 2
    signal *= syllables
    peak = np.max(np.abs(signal)) or 1.0
    return amplitude * signal / peak


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
