"""Indicator patterns, observed on the MockFactory pins they drive."""

from __future__ import annotations

import pytest

from hardware.indicators import OUTPUTS, PATTERNS, Pattern, Step

PINS = {"status": "status_led", "buzzer": "buzzer", "vibration": "vibration"}


def expected_states(pattern: Pattern, output: str) -> list[bool]:
    """What one output's pin should go through: off, then each step, then off."""
    states = [False]
    for step in pattern.steps:
        on = output in step.on
        if on != states[-1]:
            states.append(on)
    if states[-1]:
        states.append(False)
    return states


def seen_states(pin) -> list[bool]:
    states = [s.state for s in pin.states]
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


@pytest.mark.parametrize(
    "name", ["recording_started", "recording_stopped", "low_battery", "storage_low", "prompt"]
)
def test_each_named_pattern_drives_its_outputs(sim_hardware, name) -> None:
    indicators = sim_hardware.indicators()
    pins = {out: sim_hardware.pin(PINS[out]) for out in OUTPUTS}
    for pin in pins.values():
        pin.clear_states()
    indicators.signal(name, wait=True)
    record = indicators.history[-1]
    pattern = PATTERNS[name]
    for output, pin in pins.items():
        assert seen_states(pin) == expected_states(pattern, output), output
    assert pattern.seconds - 0.01 <= record.finished - record.started < pattern.seconds + 0.3
    assert any(pattern.steps[0].on)  # every pattern does something at once


def test_error_pattern_is_distinct_and_uses_everything() -> None:
    error = PATTERNS["error"]
    assert all(set(OUTPUTS) <= step.on for step in error.steps if step.on)
    shapes = {tuple((tuple(sorted(s.on)), s.seconds) for s in p.steps) for p in PATTERNS.values()}
    assert len(shapes) == len(PATTERNS)  # no two patterns feel the same


def test_recording_led_is_steady_and_untouched_by_patterns(sim_hardware) -> None:
    indicators = sim_hardware.indicators()
    red = sim_hardware.pin("recording_led")
    assert not indicators.recording
    indicators.recording = True
    red.clear_states()
    indicators.signal("error", wait=True)
    indicators.signal("recording_stopped", wait=True)
    assert seen_states(red) == [True]  # stayed on throughout
    indicators.recording = False
    assert not red.state


def test_patterns_queue_and_play_in_order(sim_hardware) -> None:
    indicators = sim_hardware.indicators()
    played = []
    indicators.when_signalled = lambda record: played.append(record.pattern)
    for name in ("prompt", "marker", "low_battery"):
        indicators.signal(name)
    assert indicators.is_active
    assert indicators.wait(timeout=5)
    assert not indicators.is_active
    assert played == ["prompt", "marker", "low_battery"]
    starts = [r.started for r in indicators.history]
    assert starts == sorted(starts)
    for a, b in zip(indicators.history, indicators.history[1:], strict=False):
        assert b.started >= a.finished  # one after another, never overlapping


def test_unknown_patterns_are_refused(sim_hardware) -> None:
    indicators = sim_hardware.indicators()
    with pytest.raises(ValueError, match="known:"):
        indicators.signal("party")
    with pytest.raises(ValueError):
        indicators.signal(Pattern("bad", (Step(frozenset({"recording"}), 0.1),)))


@pytest.mark.hardware
def test_pi_indicators_play(pi_factory) -> None:
    with pi_factory.indicators() as indicators:
        indicators.signal("prompt", wait=True)
        assert indicators.history[-1].pattern == "prompt"
