"""The example shifts are valid scenarios; `make demo` runs the two-device one."""

from __future__ import annotations

from pathlib import Path

from device.config import RecorderConfig
from device.scenario import load_scenario
from device.watch import CRITICAL_PERCENT

ROOT = Path(__file__).resolve().parents[1]


def test_demo_shift_parses_and_exercises_the_cut_and_the_voice_note():
    scenario = load_scenario(ROOT / "docs" / "examples" / "shift.toml")
    actions = [step.action for step in scenario.steps]
    assert {"press_record", "power_cut", "power_restore", "speak", "end"} <= set(actions)
    assert scenario.duration < 60


def test_the_two_device_shift_has_all_make_demo_promises():
    scenario = load_scenario(ROOT / "docs" / "examples" / "two-device-shift.toml")
    assert len(scenario.devices) == 2
    for name in scenario.devices:
        scenario.recorder_config(RecorderConfig(), name)
    actions = {(s.device, s.action) for s in scenario.steps}
    a, b = scenario.devices
    # markers; battery critical mid-recording, the charger, the voice note
    assert {(a, "press_marker"), (a, "power_restore"), (a, "speak")} <= actions
    assert any(s.action == "battery" and s.params["percent"] <= CRITICAL_PERCENT
               for s in scenario.steps_for(a))
    # an exemption (a long function press in standby) and storage nearly full
    assert any(s.action == "hold_function" and s.params["seconds"] >= 2
               for s in scenario.steps_for(b))
    assert (b, "storage_left") in actions
    # both docking at the same instant
    docks = {s.device: s.t for s in scenario.steps if s.action == "dock"}
    assert set(docks) == {a, b} and docks[a] == docks[b]
    assert all(s.note for s in scenario.steps)  # the demo narrates every step
    assert scenario.duration <= 120  # make demo: at most 5 minutes in all
