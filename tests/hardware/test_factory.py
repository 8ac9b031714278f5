"""Choosing backends: environment, explicit names, and the swap-in fixture."""

from __future__ import annotations

import pytest
from gpiozero import Button, Device

from custody_cli import main as custody
from hardware.factory import (
    PiFactory,
    backend_name,
    get_factory,
    make_factory,
    set_factory,
)
from hardware.sim.factory import SimFactory


def test_backend_comes_from_argument_then_environment(monkeypatch) -> None:
    monkeypatch.delenv("CUSTODY_HW", raising=False)
    assert backend_name() == "pi"  # never a silent fall-back to simulated evidence
    monkeypatch.setenv("CUSTODY_HW", "sim")
    assert backend_name() == "sim"
    assert backend_name("pi") == "pi"
    monkeypatch.setenv("CUSTODY_HW", "emulator")
    with pytest.raises(ValueError, match="emulator"):
        backend_name()


def test_make_factory_builds_each_backend(monkeypatch) -> None:
    with make_factory("sim", "pizero2w-cm3") as sim:
        assert isinstance(sim, SimFactory) and sim.board.name == "pizero2w-cm3"
        assert sim.camera_config().width == 1280  # the board's settings
        assert sim.camera_config(width=320, height=180).height == 180
    pi = make_factory("pi")
    assert isinstance(pi, PiFactory)


def test_fixture_swaps_the_simulator_in(sim_hardware) -> None:
    assert get_factory() is sim_hardware
    assert backend_name() == "sim"
    # Code that builds gpiozero devices itself lands on the simulator's mock pins.
    button = Button(sim_hardware.board.pins.marker_button)
    sim_hardware.pin("marker").drive_low()
    assert button.is_pressed
    assert Device.pin_factory is sim_hardware.pin_factory


def test_set_factory_returns_the_previous_one() -> None:
    first, second = SimFactory(), SimFactory()
    try:
        previous = set_factory(first)
        assert set_factory(second) is first
        assert get_factory() is second
        set_factory(previous)
    finally:
        first.close()
        second.close()


def test_sim_devices_share_state_and_epoch(sim_hardware) -> None:
    assert sim_hardware.battery() is sim_hardware.battery()
    assert sim_hardware.clock() is sim_hardware.clock()
    camera, mic = sim_hardware.camera(), sim_hardware.microphone()
    assert camera.epoch_us == mic.epoch_us == sim_hardware.epoch_us
    mic.start()
    sim_hardware.speak(0.2)
    assert mic.is_speaking
    mic.close()


def test_status_command(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CUSTODY_HW", "sim")
    assert custody(["hw", "status"]) == 0
    out = capsys.readouterr().out
    assert "battery: 100% " in out and "storage:" in out and "never_set" in out


def test_microphone_falls_back_to_pyaudio(monkeypatch, sim_hardware) -> None:
    import hardware.factory as factory_module
    from hardware.microphone import PyAudioMicrophone, SoundDeviceMicrophone

    assert isinstance(sim_hardware.microphone(backend="sounddevice"), SoundDeviceMicrophone)
    monkeypatch.setattr(factory_module, "_sounddevice_usable", lambda: False)
    assert isinstance(sim_hardware.microphone(backend="sounddevice"), PyAudioMicrophone)
