"""Speaker contract: real playback through PortAudio into the null sink (recorded back
from its monitor), the simulator, and the Pi's amplifier (``-m hardware``)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from hardware.camera import monotonic_us
from hardware.microphone import SoundDeviceMicrophone
from hardware.sim.signals import band_energy_ratio, dominant_frequency, to_int16
from hardware.sim.speaker import SimSpeaker
from hardware.speaker import Prompt, SoundDeviceSpeaker, load_wav, save_wav

from .conftest import require_pi

RATE = 48_000


def beep(freq: float, seconds: float, rate: int = RATE) -> np.ndarray:
    return to_int16(0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate))


def test_wav_round_trip(tmp_path) -> None:
    samples = beep(440, 0.25, 22_050)
    save_wav(tmp_path / "p.wav", samples, 22_050)
    prompt = load_wav(tmp_path / "p.wav")
    assert prompt.rate == 22_050 and prompt.name == "p.wav"
    assert np.array_equal(prompt.samples, samples)
    assert prompt.seconds == pytest.approx(0.25, abs=1e-4)


def test_sounddevice_speaker_is_heard_on_the_sink(pulse_null_sink, tmp_path) -> None:
    path = tmp_path / "prompt.wav"
    save_wav(path, beep(750, 0.8), RATE)
    heard: list = []
    mic = SoundDeviceMicrophone()
    mic.start()
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            block = mic.read(timeout=0.5)
            if block is not None:
                heard.append(block)

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:  # the stream is up
            time.sleep(0.05)
        with SoundDeviceSpeaker() as speaker:
            t0 = time.monotonic()
            speaker.play(path)
            took = time.monotonic() - t0
            assert speaker.played[-1].name == "prompt.wav"
            assert not speaker.is_active
        time.sleep(0.3)
    finally:
        stop.set()
        listener.join()
        mic.close()
    assert 0.7 < took < 3.0  # play() blocks for about the prompt's length
    loud = [b for b in heard if np.abs(b.samples).max() > 8000]
    assert len(loud) >= 25, "the prompt did not reach the sink"
    middle = np.concatenate([b.samples for b in loud[5:30]])
    assert abs(dominant_frequency(middle, RATE) - 750) < 5


@pytest.mark.hardware
def test_pi_speaker_plays(pi_factory) -> None:
    require_pi("the speaker")
    with pi_factory.speaker() as speaker:
        speaker.play(beep(1000, 0.3), rate=RATE)
        assert speaker.played


def test_sim_speaker_takes_the_prompts_time_and_remembers() -> None:
    speaker = SimSpeaker()
    played = []
    speaker.when_played = played.append
    t0 = time.monotonic()
    speaker.play(beep(500, 0.3), rate=RATE, wait=False)
    time.sleep(0.05)
    assert speaker.is_active
    speaker.play(Prompt(beep(600, 0.2), RATE, "second"))  # waits for the first
    took = time.monotonic() - t0
    assert 0.45 < took < 1.0
    assert [p.seconds for p in speaker.played] == pytest.approx([0.3, 0.2])
    assert played[-1].name == "second"
    with pytest.raises(ValueError):
        speaker.play(np.zeros(10))  # raw samples need a rate


def test_sim_speaker_is_heard_by_the_sim_microphone(sim_hardware) -> None:
    mic = sim_hardware.microphone()
    mic.start()
    speaker = SimSpeaker(realtime=False, echo_into=mic)
    before = mic.read(1)
    speaker.play(beep(150, 0.2), rate=RATE)
    blocks = [mic.read(1) for _ in range(12)]
    mic.close()
    low = [band_energy_ratio(b.samples, RATE, (100, 200)) for b in blocks]
    assert band_energy_ratio(before.samples, RATE, (100, 200)) < 0.01  # tone only
    assert sum(r > 0.1 for r in low) >= 8  # 0.2 s of prompt = 10 blocks, under the tone
    assert mic.spoken_samples == int(0.2 * RATE)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_prompt_plays(tmp_path) -> None:
    path = tmp_path / "say.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "Recording interrupted. Please say why."], check=True
    )
    prompt = load_wav(path)
    assert prompt.rate in (22_050, 16_000, 44_100, 48_000)
    assert 1.0 < prompt.seconds < 6.0
    speaker = SimSpeaker(realtime=False)
    started = monotonic_us()
    speaker.play(path)
    assert speaker.played[0].name == "say.wav"
    assert monotonic_us() - started < 1_000_000
