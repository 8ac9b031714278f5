"""The example shift that `make demo` runs is a valid scenario."""

from __future__ import annotations

from pathlib import Path

from device.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def test_demo_shift_parses_and_exercises_the_cut_and_the_voice_note():
    scenario = load_scenario(ROOT / "docs" / "examples" / "shift.toml")
    actions = [step.action for step in scenario.steps]
    assert {"press_record", "power_cut", "power_restore", "speak", "end"} <= set(actions)
    assert scenario.duration < 60
