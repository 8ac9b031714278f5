"""Microphone contract: the simulator, real PortAudio capture from a PulseAudio null sink
(sounddevice, and PyAudio when installed), and the I2S microphone on a Pi."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hardware.camera import monotonic_us
from hardware.microphone import MicrophoneConfig, SampleClock
from hardware.sim.microphone import SimMicrophone
from hardware.sim.signals import dominant_frequency, to_int16, tone, tone_frequency
from hardware.sim.voices import installed_voice

from .conftest import require_module, require_pi

RATE = 48_000


@pytest.fixture(
    params=[
        "sim",
        "sounddevice",
        "pyaudio",
        pytest.param("pi-i2s", marks=pytest.mark.hardware),
    ]
)
def mic_factory(request, sim_hardware):
    """(factory, backend) pairs; the PortAudio ones record from the null sink."""
    if request.param == "sim":
        return sim_hardware, "sim"
    if request.param == "pi-i2s":
        require_pi("the I2S microphone")
        return request.getfixturevalue("pi_factory"), None
    require_module(request.param, "PortAudio binding")
    request.getfixturevalue("pulse_null_sink")  # PortAudio's default device: the sink
    return sim_hardware, request.param


def collect(mic, seconds: float) -> list:
    """Blocks for ``seconds`` after the first one (a PortAudio stream through
    PulseAudio takes up to ~2 s to deliver its first block)."""
    first = mic.read(timeout=5.0)
    assert first is not None, "microphone delivered nothing"
    blocks, end = [first], time.monotonic() + seconds
    while time.monotonic() < end:
        block = mic.read(timeout=1.0)
        assert block is not None, "microphone stopped delivering"
        blocks.append(block)
    return blocks


def test_blocks_are_48k_mono_int16_with_contiguous_timestamps(mic_factory) -> None:
    factory, backend = mic_factory
    with factory.microphone(MicrophoneConfig(), backend=backend) as mic:
        mic.start()
        assert mic.is_active
        started = monotonic_us()
        blocks = collect(mic, 0.6)
    assert not mic.is_active
    assert len(blocks) >= 20
    for block in blocks:
        assert block.rate == RATE
        assert block.samples.dtype == np.int16 and block.samples.ndim == 1
        assert len(block.samples) == 960
    # Sample-accurate: each block starts where the previous one ended.
    for a, b in zip(blocks, blocks[1:], strict=False):
        assert abs(b.timestamp_us - a.end_us) <= 1
    assert mic.resyncs == 0 and mic.overflows == 0
    # On the capture clock: captured before it was read. Timestamps advance by
    # sample count from an anchor and are re-anchored only beyond resync_us
    # (50 ms), so that is the most they may lead the clock: PulseAudio's null
    # sink delivers in bursts, and under load a block can look a few ms early.
    last = blocks[-1]
    assert last.end_us <= monotonic_us() + MicrophoneConfig().resync_us
    assert started - 500_000 < blocks[0].timestamp_us < started + 3_000_000


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_real_capture_hears_what_is_played(backend, sim_hardware, pulse_null_sink) -> None:
    require_module(backend, "PortAudio binding")
    factory, pulse = sim_hardware, pulse_null_sink
    with factory.microphone(backend=backend) as mic:
        mic.start()
        collect(mic, 0.3)  # let the stream settle
        tone = to_int16(0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE))
        played_at = monotonic_us()
        pulse.play(tone, RATE, wait=False)
        blocks = collect(mic, 1.6)
    samples = np.concatenate([b.samples for b in blocks])
    loud = [b for b in blocks if np.abs(b.samples).max() > 8000]
    assert len(loud) >= 30, "the played tone was not recorded"
    middle = np.concatenate([b.samples for b in loud[5:25]])
    assert abs(dominant_frequency(middle, RATE) - 1000) < 5
    # The tone's onset is stamped near when it was played (pacat start-up and
    # PulseAudio's buffering, not seconds).
    onset = loud[0].timestamp_us
    assert played_at - 50_000 < onset < played_at + 600_000
    assert np.abs(samples).max() <= 32767


def test_sim_tone_steps_each_second_since_the_epoch() -> None:
    epoch = monotonic_us() - 2_950_000  # second 3 starts 50 ms from now
    with SimMicrophone(epoch_us=epoch) as mic:
        mic.start()
        blocks = collect(mic, 0.5)
    for block in blocks[2:]:
        second = (block.timestamp_us - epoch) // 1_000_000
        if (block.end_us - epoch) // 1_000_000 != second:
            continue  # straddles a step
        assert abs(dominant_frequency(block.samples, RATE) - tone_frequency(second)) <= 50
    seconds = {(b.timestamp_us - epoch) // 1_000_000 for b in blocks}
    assert {2, 3} <= seconds  # it crossed a step
    for b in blocks:  # sample n is captured at epoch + n / rate
        n = round((b.timestamp_us - epoch) * RATE / 1_000_000)
        assert b.timestamp_us == epoch + n * 1_000_000 // RATE


def test_sim_speak_plays_the_installed_espeak_phrases() -> None:
    with SimMicrophone(realtime=False) as mic:
        mic.start()
        quiet = [mic.read(1) for _ in range(25)]
        mic.speak(seconds=0.5)
        rest = [mic.read(1) for _ in range(50)]
    blocks = quiet + rest
    first = round((blocks[0].timestamp_us - mic.epoch_us) * RATE / 1_000_000)
    heard = np.concatenate([b.samples for b in blocks]).astype(np.int64)
    # What is left after taking out the known background tone is the voice.
    voice = heard - to_int16(tone(first, len(heard), RATE)).astype(np.int64)
    spoken = np.flatnonzero(np.abs(voice) > 1)
    assert len(spoken) and spoken[0] >= 25 * 960  # nothing before speak()
    start = spoken[0] - spoken[0] % 960  # from the next block on
    expected = to_int16(installed_voice().say(0.5)).astype(np.int64)
    # The mix is rounded once, the two parts here twice: within 1 LSB.
    assert np.max(np.abs(voice[start : start + len(expected)] - expected)) <= 1
    assert np.max(np.abs(voice[start + len(expected) :])) <= 1
    assert mic.spoken_samples == RATE // 2


def test_sim_restart_continues_sample_count() -> None:
    with SimMicrophone(realtime=False) as mic:
        mic.start()
        a = [mic.read(1) for _ in range(5)]
        mic.stop()
        mic.start()
        b = mic.read(1)
    assert b.timestamp_us >= a[-1].end_us


def _blocks(clock: SampleClock, observed: list[int]) -> list[int]:
    stamps = []
    for seen in observed:
        stamps += [ts for _, ts in clock.push(np.zeros(960, np.int16), seen)]
    return stamps


def test_sample_clock_settles_on_the_earliest_estimate() -> None:
    clock = SampleClock(RATE, 20_000, settle_us=200_000)
    t = 5_000_000
    # Ten 20 ms blocks; callbacks are late by 0-9 ms (never early). The 4th is on time.
    jitter = [7000, 3000, 9000, 0, 4000, 8000, 2000, 6000, 5000, 1000]
    held = [clock.push(np.zeros(960, np.int16), t + k * 20_000 + j) for k, j in enumerate(jitter)]
    assert all(h == [] for h in held[:9])  # held back while settling
    assert [ts for _, ts in held[9]] == [t + k * 20_000 for k in range(10)]
    assert clock.resyncs == 0


def test_sample_clock_ignores_bursts_and_resyncs_on_lost_samples() -> None:
    clock = SampleClock(RATE, 20_000, settle_us=0, persist_us=100_000)
    t = 1_000_000
    # A 50 ms hiccup, then a burst that arrives 60 ms "early": nothing moves.
    stamps = _blocks(clock, [t, t + 20_000, t + 90_000, t + 60_000, t + 20_000, t + 40_000,
                             t + 60_000, t + 140_000, t + 160_000])
    assert stamps == [t + k * 20_000 for k in range(9)]
    assert clock.resyncs == 0
    # 300 ms of samples lost: every later estimate is ~300 ms late -> one resync,
    # by the least late of them (callbacks are only ever late, never early).
    lost = [t + 480_000 + k * 20_000 + (3_000 if k % 2 else 0) for k in range(10)]
    stamps = _blocks(clock, lost)
    assert clock.resyncs == 1
    assert stamps[-1] == t + 480_000 + 9 * 20_000
    assert all(b - a == 20_000 for a, b in zip(stamps[5:], stamps[6:], strict=False))
    # Estimates that stay earlier than the stamps (the anchor was wrong) move it too.
    later = stamps[-1] + 20_000
    early = _blocks(clock, [later + k * 20_000 - 70_000 for k in range(6)])
    assert clock.resyncs == 2 and early[-1] == later + 5 * 20_000 - 70_000
    clock.break_continuity()  # an overflow: anchor afresh, not counted as a surprise
    assert _blocks(clock, [9_999_999]) == [9_999_999]
    assert clock.resyncs == 2
