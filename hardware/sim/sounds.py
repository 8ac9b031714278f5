"""Labelled sounds for judging a speech detector: espeak-ng speech and sox-made non-speech.

Everything here is made by the real tools, not by formulas of ours, so that a
detector is judged on sounds it did not help to design: speech is spoken by
espeak-ng (``speech``), and every non-speech kind - tones, keypad (DTMF)
tones, chords, mains hum, sirens, noise, silence - is synthesised by sox
(``non_speech``). All come back as mono int16 at the rate asked for.

    >>> clip = non_speech("hum_50", seconds=1.0, rate=16_000)
    >>> clip.dtype, len(clip)
    (dtype('int16'), 16000)

Used by ``benchmarks/vad.py``, the detector's tests, and the simulator's
officer voice (:mod:`hardware.sim.voices`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence

import numpy as np

from hardware.espeak import espeak

SOX = "sox"

# DTMF: each key is one low (row) and one high (column) frequency, ITU-T Q.23.
_DTMF_ROWS = (697, 770, 852, 941)
_DTMF_COLUMNS = (1209, 1336, 1477, 1633)
_DTMF_KEYS = ("123A", "456B", "789C", "*0#D")


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise RuntimeError(f"{tool} is not installed (Debian: apt install {tool})")


def sox_synth(seconds: float, rate: int, *effects: str) -> np.ndarray:
    """``sox -n ... synth SECONDS EFFECTS...`` as mono int16 at ``rate``.

    ``effects`` begin with the synth's own arguments (``"sine", "440"``);
    several generators give several channels, which ``remix`` can mix down.
    """
    _require(SOX)
    command = [SOX, "-n", "-r", str(rate), "-e", "signed-integer", "-b", "16", "-c", "1",
               "-t", "raw", "-", "synth", f"{seconds:.6f}", *effects]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sox failed ({' '.join(command)}): {result.stderr.decode().strip()}")
    samples = np.frombuffer(result.stdout, dtype="<i2").astype(np.int16)
    return _exact_length(samples, round(seconds * rate))


def _exact_length(samples: np.ndarray, count: int) -> np.ndarray:
    if len(samples) >= count:
        return samples[:count]
    return np.concatenate([samples, np.zeros(count - len(samples), np.int16)])


def _level(dbfs: float) -> list[str]:
    """sox effects that bring a signal's peak to ``dbfs``."""
    return ["gain", "-n", f"{dbfs:g}"]


def _sequence(pieces: Sequence[np.ndarray], seconds: float, rate: int) -> np.ndarray:
    """``pieces`` one after another, repeated to fill ``seconds``."""
    out, total = [], 0
    count = round(seconds * rate)
    while total < count:
        for piece in pieces:
            out.append(piece)
            total += len(piece)
    return np.concatenate(out)[:count]


def dtmf_key(key: str, seconds: float, rate: int, dbfs: float = -6) -> np.ndarray:
    """The keypad tone of ``key`` (0-9, *, #, A-D): two sines, one row and one column."""
    for row, keys in enumerate(_DTMF_KEYS):
        if key in keys:
            low, high = _DTMF_ROWS[row], _DTMF_COLUMNS[keys.index(key)]
            return sox_synth(seconds, rate, "sine", str(low), "sine", str(high),
                             "remix", "-", *_level(dbfs))
    raise ValueError(f"no DTMF key {key!r}")


def _dtmf_dialling(seconds: float, rate: int, keys: str = "0123456789*#") -> np.ndarray:
    gap = np.zeros(round(0.08 * rate), np.int16)
    pieces = []
    for key in keys:
        pieces += [dtmf_key(key, 0.12, rate), gap]
    return _sequence(pieces, seconds, rate)


def _siren(seconds: float, rate: int, low: float, high: float, half_period: float,
           wave: str = "sine", glide: bool = True) -> np.ndarray:
    """Up and down between ``low`` and ``high`` Hz: swept (wail, yelp) or stepped (hi-lo)."""
    if glide:
        up = sox_synth(half_period, rate, wave, f"{low:g}-{high:g}", *_level(-6))
        down = sox_synth(half_period, rate, wave, f"{high:g}-{low:g}", *_level(-6))
    else:
        up = sox_synth(half_period, rate, wave, f"{low:g}", *_level(-6))
        down = sox_synth(half_period, rate, wave, f"{high:g}", *_level(-6))
    return _sequence([up, down], seconds, rate)


def _hum(fundamental: float, harmonics: int = 6) -> Callable[[float, int], np.ndarray]:
    """Mains hum: ``fundamental`` and its harmonics, each quieter (1/n)."""
    def make(seconds: float, rate: int) -> np.ndarray:
        generators, weights = [], []
        for n in range(1, harmonics + 1):
            generators += ["sine", f"{fundamental * n:g}"]
            weights.append(f"{n}v{1 / n:.3f}")
        return sox_synth(seconds, rate, *generators, "remix", ",".join(weights), *_level(-10))
    return make


def _pulsed(make: Callable[[float, int], np.ndarray], on: float, off: float
            ) -> Callable[[float, int], np.ndarray]:
    """``make``'s sound switched on for ``on`` seconds, off for ``off``, again and again."""
    def pulsed(seconds: float, rate: int) -> np.ndarray:
        return _sequence([make(on, rate), np.zeros(round(off * rate), np.int16)], seconds, rate)
    return pulsed


def _with_noise(make: Callable[[float, int], np.ndarray], colour: str, snr_db: float
                ) -> Callable[[float, int], np.ndarray]:
    """``make``'s sound with ``colour`` noise ``snr_db`` below it."""
    def noisy(seconds: float, rate: int) -> np.ndarray:
        return mix_at_snr(make(seconds, rate), sox_synth(seconds, rate, f"{colour}noise"),
                          snr_db)
    return noisy


def _plain(*effects: str) -> Callable[[float, int], np.ndarray]:
    return lambda seconds, rate: sox_synth(seconds, rate, *effects)


def _beeps(hz: float, on: float, off: float) -> Callable[[float, int], np.ndarray]:
    def make(seconds: float, rate: int) -> np.ndarray:
        return _sequence([sox_synth(on, rate, "sine", f"{hz:g}", *_level(-6)),
                          np.zeros(round(off * rate), np.int16)], seconds, rate)
    return make


#: Every non-speech kind, by name: ``(seconds, rate) -> mono int16``.
NON_SPEECH: dict[str, Callable[[float, int], np.ndarray]] = {
    # Steady tones: a beep, a whistle, a test tone; square and sawtooth ones are
    # rich in harmonics, as a voice is.
    **{f"tone_{hz}": _plain("sine", str(hz), *_level(-6))
       for hz in (150, 300, 440, 1000, 2000, 3400)},
    "tone_square_440": _plain("square", "440", *_level(-12)),
    "tone_sawtooth_220": _plain("sawtooth", "220", *_level(-12)),
    "beeps_1000": _beeps(1000, 0.1, 0.1),
    "beeps_2500": _beeps(2500, 0.3, 0.2),
    # Keypad tones: dialling a number, and keys held down.
    "dtmf_dialling": _dtmf_dialling,
    "dtmf_held_5": lambda seconds, rate: dtmf_key("5", seconds, rate),
    "dtmf_held_hash": lambda seconds, rate: dtmf_key("#", seconds, rate),
    "dtmf_held_1_quiet": lambda seconds, rate: dtmf_key("1", seconds, rate, dbfs=-30),
    # Two-note chords (and one of three).
    "chord_third_440_554": _plain("sine", "440", "sine", "554", "remix", "-", *_level(-6)),
    "chord_fifth_200_300": _plain("sine", "200", "sine", "300", "remix", "-", *_level(-6)),
    "chord_fifth_330_495": _plain("square", "330", "square", "495", "remix", "-",
                                  *_level(-12)),
    "chord_octave_262_524": _plain("sine", "262", "sine", "524", "remix", "-", *_level(-6)),
    "chord_triad_262_330_392": _plain("sine", "262", "sine", "330", "sine", "392",
                                      "remix", "-", *_level(-6)),
    "chord_fifth_200_300_pulsed": _pulsed(_plain("sine", "200", "sine", "300", "remix", "-",
                                                 *_level(-6)), 0.4, 0.2),
    "chord_fifth_200_300_in_noise": _with_noise(_plain("sine", "200", "sine", "300", "remix",
                                                       "-", *_level(-6)), "pink", 20),
    "ringing_400_450": _pulsed(_plain("sine", "400", "sine", "450", "remix", "-", *_level(-6)),
                               0.4, 0.2),
    "doorbell_660_550": lambda seconds, rate: _siren(seconds, rate, 660, 550, 0.5, "square",
                                                     glide=False),
    # Mains hum and its harmonics; a transformer's 100/120 Hz buzz.
    "hum_50": _hum(50),
    "hum_60": _hum(60),
    "hum_100": _hum(100, 4),
    "hum_120": _hum(120, 4),
    "hum_50_square": _plain("square", "50", "lowpass", "2000", *_level(-10)),
    "hum_60_sawtooth": _plain("sawtooth", "60", "lowpass", "3000", *_level(-10)),
    "hum_120_in_noise": _with_noise(_hum(120, 4), "white", 15),
    # Sirens: wail (slow sweep), yelp (fast sweep), hi-lo (two notes in turn).
    "siren_wail": lambda seconds, rate: _siren(seconds, rate, 600, 1400, 1.5),
    "siren_wail_square": lambda seconds, rate: _siren(seconds, rate, 500, 1300, 1.2, "square"),
    "siren_yelp": lambda seconds, rate: _siren(seconds, rate, 700, 1600, 0.15),
    "siren_yelp_sawtooth": lambda seconds, rate: _siren(seconds, rate, 400, 1200, 0.2,
                                                        "sawtooth"),
    "siren_hi_lo": lambda seconds, rate: _siren(seconds, rate, 450, 600, 0.5, glide=False),
    "siren_low_sweep": lambda seconds, rate: _siren(seconds, rate, 150, 400, 0.8, "sawtooth"),
    # Noise: white, pink and brown, loud and quiet.
    **{f"noise_{colour}_{abs(dbfs)}": _plain(f"{colour}noise", *_level(dbfs))
       for colour in ("white", "pink", "brown") for dbfs in (-6, -26)},
    # Silence: digital, and the hiss of a quiet microphone.
    "silence": lambda seconds, rate: np.zeros(round(seconds * rate), np.int16),
    "silence_hiss": _plain("whitenoise", *_level(-60)),
}


def non_speech(kind: str, seconds: float, rate: int) -> np.ndarray:
    """One non-speech sound of ``kind`` (a key of :data:`NON_SPEECH`)."""
    try:
        make = NON_SPEECH[kind]
    except KeyError:
        raise ValueError(f"unknown sound {kind!r}; known: {', '.join(NON_SPEECH)}") from None
    return _exact_length(make(seconds, rate), round(seconds * rate))


def speech(text: str, voice: str, rate: int, speed_wpm: int = 160, pitch: int = 50,
           trim: bool = True) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice`` (converted to ``rate`` by sox), as mono int16.

    ``trim`` cuts espeak-ng's leading and trailing silence. The level is
    espeak-ng's own (peaks near full scale), 3 dB down so nothing clips.
    """
    _require(SOX)
    native, native_rate = espeak([text], voice, speed_wpm, pitch)
    converted = subprocess.run(
        [SOX, "-t", "raw", "-r", str(native_rate), "-e", "signed-integer", "-b", "16", "-c", "1",
         "-", "-r", str(rate), "-e", "signed-integer", "-b", "16", "-c", "1",
         "-t", "raw", "-", "gain", "-n", "-3"],
        input=native.astype("<i2").tobytes(), capture_output=True, check=False)
    if converted.returncode != 0:
        raise RuntimeError(f"sox failed converting speech: {converted.stderr.decode()}")
    samples = np.frombuffer(converted.stdout, dtype="<i2").astype(np.int16)
    if trim:
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 100)
        samples = samples[loud[0] : loud[-1] + 1] if len(loud) else samples[:0]
    return samples


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal`` plus ``noise`` scaled so that signal power / noise power is ``snr_db``.

    Powers are means over the whole of each (so ``signal`` should be trimmed);
    ``noise`` must be at least as long as ``signal``, and the result is as long
    as ``noise`` with ``signal`` centred in it. Scaled down together if the sum
    would clip.
    """
    if len(noise) < len(signal):
        raise ValueError("the noise must be at least as long as the signal")
    s = signal.astype(np.float64)
    n = noise.astype(np.float64)
    noise_power = np.mean(n**2)
    if noise_power == 0:
        raise ValueError("the noise is silent")
    n *= np.sqrt(np.mean(s**2) / noise_power / 10 ** (snr_db / 10))
    start = (len(n) - len(s)) // 2
    n[start : start + len(s)] += s
    peak = np.max(np.abs(n))
    if peak > 32767:
        n *= 32767 / peak
    return np.round(n).astype(np.int16)
