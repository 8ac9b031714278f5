"""Controls on gpiozero's MockFactory pins: the same gpiozero code that runs on the Pi."""

from __future__ import annotations

import threading
import time

import pytest

from hardware.controls import ControlEvent, Controls

LONG = 0.3  # long-press threshold for the tests (2 s on the device)


@pytest.fixture
def controls(sim_hardware):
    with sim_hardware.controls(long_press=LONG, bounce_time=None) as c:
        yield c


def events(controls: Controls, wait: float = 0.3) -> list[ControlEvent]:
    seen, deadline = [], time.monotonic() + wait
    while (event := controls.read_event(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        seen.append(event)
    return seen


def test_record_and_marker_fire_on_press(sim_hardware, controls) -> None:
    pin = sim_hardware.pin("record")
    pin.drive_low()
    assert controls.read_event(timeout=1) is ControlEvent.RECORD  # before the release
    assert controls.record_button.is_pressed and controls.is_active
    pin.drive_high()
    sim_hardware.press("marker")
    assert events(controls) == [ControlEvent.MARKER]
    assert not controls.is_active


def test_function_short_press_fires_on_release(sim_hardware, controls) -> None:
    pin = sim_hardware.pin("function")
    pin.drive_low()
    assert controls.read_event(timeout=0.1) is None  # might still become a long press
    pin.drive_high()
    assert events(controls) == [ControlEvent.FUNCTION]


def test_function_long_press_is_a_distinct_event(sim_hardware, controls) -> None:
    sim_hardware.press("function", hold=LONG + 0.25)
    assert events(controls) == [ControlEvent.FUNCTION_LONG]  # and no short press after it


def test_chords_replace_the_single_presses(sim_hardware, controls) -> None:
    function = sim_hardware.pin("function")
    function.drive_low()
    sim_hardware.press("record")
    sim_hardware.press("marker")
    time.sleep(LONG + 0.1)  # held past the long-press time: still only the chords
    function.drive_high()
    assert events(controls) == [ControlEvent.FUNCTION_RECORD, ControlEvent.FUNCTION_MARKER]
    sim_hardware.press("function")  # the next press is a plain one again
    assert events(controls) == [ControlEvent.FUNCTION]


def test_dock_detect(sim_hardware, controls) -> None:
    assert not controls.is_docked
    sim_hardware.set_docked(True)
    assert controls.read_event(timeout=1) is ControlEvent.DOCKED
    assert controls.is_docked
    sim_hardware.set_docked(False)
    assert controls.read_event(timeout=1) is ControlEvent.UNDOCKED
    assert not controls.is_docked


def test_when_event_callback(sim_hardware, controls) -> None:
    got = threading.Event()
    seen = []

    def callback(event: ControlEvent) -> None:
        seen.append(event)
        got.set()

    controls.when_event = callback
    sim_hardware.press("record")
    assert got.wait(1)
    assert seen == [ControlEvent.RECORD]
    assert ControlEvent.RECORD == "record"  # events are plain strings for logs and JSON


def test_pins_are_released_on_close(sim_hardware) -> None:
    first = sim_hardware.controls()
    first.close()
    second = sim_hardware.controls()  # would raise "pin already in use" if not released
    second.close()


@pytest.mark.hardware
def test_controls_open_on_the_pis_pins(pi_factory) -> None:
    with pi_factory.controls() as controls:
        assert not controls.is_active, "a button reads as pressed: check the wiring"
