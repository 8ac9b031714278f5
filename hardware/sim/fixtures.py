"""pytest fixtures that swap the simulator in (import them into a conftest.py).

    # conftest.py
    from hardware.sim.fixtures import pulse_null_sink, sim_hardware  # noqa: F401

    def test_record_button(sim_hardware):
        controls = sim_hardware.controls()
        sim_hardware.press("record")
        assert controls.read_event(timeout=1) == "record"

* ``sim_hardware`` - a :class:`~hardware.sim.factory.SimFactory` installed as the
  default factory (``get_factory()`` returns it, ``CUSTODY_HW=sim``), with gpiozero's
  default pin factory set to its MockFactory; everything is closed afterwards.
* ``pulse_null_sink`` - a private PulseAudio server with a null sink for the session,
  made PortAudio's default device; skipped only if ``pulseaudio`` is not installed.
* ``console_cable`` - a pty pair standing in for the console's serial cable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardware.board import load_board
from hardware.factory import ENV_BACKEND, set_factory
from hardware.sim.factory import SimFactory
from hardware.sim.pulse import PulseNullSink, pulseaudio_binary
from hardware.sim.serial import SimSerialCable


@pytest.fixture
def sim_hardware(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[SimFactory]:
    from gpiozero import Device

    monkeypatch.setenv(ENV_BACKEND, "sim")
    sim = SimFactory(load_board(), storage_root=tmp_path / "sim-storage")
    previous_pins = Device.pin_factory
    Device.pin_factory = sim.pin_factory
    previous = set_factory(sim)
    try:
        yield sim
    finally:
        set_factory(previous)
        sim.close()
        Device.pin_factory = previous_pins


@pytest.fixture(scope="session")
def pulse_null_sink() -> Iterator[PulseNullSink]:
    if pulseaudio_binary() is None:
        pytest.skip("pulseaudio is not installed (apt install pulseaudio pulseaudio-utils)")
    with PulseNullSink() as pulse:
        pulse.apply_env()
        yield pulse


@pytest.fixture
def console_cable() -> Iterator[SimSerialCable]:
    with SimSerialCable() as cable:
        yield cable
