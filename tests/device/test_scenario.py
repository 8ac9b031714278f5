"""Simulator scenarios: checked before anything runs, every error naming its step."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import device.scenario
from device.config import RecorderConfig
from device.scenario import (
    ACTIONS,
    ALLOWED_WHILE_POWER_CUT,
    Scenario,
    ScenarioError,
    Step,
    load_scenario,
    parse_scenario,
)
from tests.device.test_config import markdown_table, unquote

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"

POWER_CUT_STORY = """
[device]            # any recorder setting
segment_seconds = 5
video = "640x360@15"
pre_record_seconds = 0

[[at]]
t = 0
do = "press_record"
[[at]]
t = 17
do = "power_cut"    # hard kill: no chance to seal
[[at]]
t = 20
do = "power_restore"
[[at]]
t = 22
do = "speak"
seconds = 5
[[at]]
t = 37
do = "end"
"""


def steps(*lines: str) -> str:
    """``[[at]]`` tables from ``"t = 0, do = 'speak', seconds = 5"``-style lines."""
    return "\n".join("[[at]]\n" + line.replace(", ", "\n") for line in lines)


def scenario_error(text: str, source: str = "scenario.toml") -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source)
    return caught.value


# -- what a valid scenario gives -----------------------------------------------------


def test_the_power_cut_story_parses_into_steps_and_overrides() -> None:
    scenario = parse_scenario(POWER_CUT_STORY, "scenario.toml")
    assert dict(scenario.device_overrides) == {
        "segment_seconds": 5, "video": "640x360@15", "pre_record_seconds": 0,
    }
    assert [(s.t, s.action) for s in scenario.steps] == [
        (0, "press_record"), (17, "power_cut"), (20, "power_restore"), (22, "speak"), (37, "end"),
    ]
    assert scenario.steps[3].params == {"seconds": 5.0}
    assert [s.index for s in scenario.steps] == [0, 1, 2, 3, 4]
    assert [s.number for s in scenario.steps] == [1, 2, 3, 4, 5]
    assert all(isinstance(s.t, float) for s in scenario.steps)
    assert not any(s.implied for s in scenario.steps)
    assert scenario.duration == 37


def test_without_an_end_one_is_implied_at_the_last_steps_time() -> None:
    scenario = parse_scenario(steps("t = 0, do = 'press_record'", "t = 12.5, do = 'dock'"))
    assert scenario.steps[-1] == Step(12.5, "end", {}, 2, implied=True)
    assert scenario.duration == 12.5


def test_the_overrides_apply_to_the_simulators_settings() -> None:
    base = RecorderConfig.from_toml('device_id = "SIM-1"\nhardware = "sim"')
    config = parse_scenario(POWER_CUT_STORY).recorder_config(base)
    assert (config.device_id, config.hardware) == ("SIM-1", "sim")
    assert (config.segment_seconds, config.fps, config.pre_record_seconds) == (5, 15, 0)


def test_overrides_are_checked_against_the_settings_they_apply_to() -> None:
    scenario = parse_scenario('[device]\nvideo = "640x360@15"\n' + steps("t = 0, do = 'end'"))
    base = RecorderConfig.from_toml("keyframe_interval = 24")
    with pytest.raises(ScenarioError) as caught:
        scenario.recorder_config(base)
    assert caught.value.where == "[device].video"
    with pytest.raises(ScenarioError, match=r"^\[device\]\.video: "):
        parse_scenario('[device]\nvideo = "640x360@15"\n' + steps("t = 0, do = 'end'"), base=base)


def test_equal_times_run_in_file_order() -> None:
    scenario = parse_scenario(steps("t = 5, do = 'camera_fault'", "t = 5, do = 'camera_ok'"))
    assert [s.action for s in scenario.steps] == ["camera_fault", "camera_ok", "end"]


def test_every_action_with_valid_parameters_is_accepted() -> None:
    good = {"seconds": 1.5, "percent": 50, "bytes": 0, "commands": '["status"]'}
    lines = ["t = 0, do = 'camera_fault'", "t = 0, do = 'power_cut'", "t = 0, do = 'power_restore'"]
    for name, action in ACTIONS.items():
        if name in ("camera_fault", "power_cut", "power_restore", "end"):
            continue
        params = "".join(f", {key} = {good[key]}" for key in action.params)
        lines.append(f"t = 1, do = '{name}'{params}")
    scenario = parse_scenario(steps(*lines, "t = 2, do = 'end'"))
    assert {s.action for s in scenario.steps} == set(ACTIONS)


@pytest.mark.parametrize("seconds", [-3600, -0.5, 0.5, 86_400])
def test_the_clock_may_jump_either_way(seconds: float) -> None:
    scenario = parse_scenario(steps(f"t = 0, do = 'clock_jump', seconds = {seconds}"))
    assert scenario.steps[0].params == {"seconds": seconds}


@pytest.mark.parametrize("action", sorted(ALLOWED_WHILE_POWER_CUT))
def test_what_may_happen_while_the_power_is_cut(action: str) -> None:
    params = {"battery": ", percent = 80"}.get(action, "")
    parse_scenario(steps("t = 0, do = 'power_cut'", f"t = 1, do = '{action}'{params}"))


def test_a_scenario_can_be_loaded_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.toml"
    path.write_text(POWER_CUT_STORY)
    scenario = load_scenario(path)
    assert scenario == parse_scenario(POWER_CUT_STORY)
    assert scenario.source == str(path)
    path.write_text(steps("t = 0, do = 'jump'"))
    with pytest.raises(ScenarioError, match=f"^{re.escape(str(path))}: step 1 "):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.toml")


# -- every problem names its step ----------------------------------------------------


def test_an_unknown_action_names_the_step_and_suggests_the_closest() -> None:
    text = steps("t = 0, do = 'press_record'", "t = 10, do = 'speak', seconds = 2",
                 "t = 17, do = 'power_kut'")
    assert str(scenario_error(text)) == (
        'scenario.toml: step 3 (t=17, do="power_kut"): unknown action; did you mean "power_cut"?'
    )


BAD_STEPS = [
    # (steps, step named, words in the problem)
    (["do = 'end'"], 'step 1 (do="end")', "missing t"),
    (["t = 0"], "step 1 (t=0)", "missing do"),
    (["t = -1, do = 'end'"], 'step 1 (t=-1, do="end")', "t must be a number of seconds, 0 or more"),
    (["t = '5', do = 'end'"], 'step 1 (t="5", do="end")', "t must be a number"),
    (["t = true, do = 'end'"], 'step 1 (t=true, do="end")', "t must be a number"),
    (["t = nan, do = 'end'"], "step 1", "t must be a number"),
    (["t = 0, do = 5"], "step 1 (t=0, do=5)", "do must be an action's name"),
    (["t = 0, do = 'record'"], 'step 1 (t=0, do="record")', "unknown action"),
    (["t = 0, do = 'speak'"], 'step 1 (t=0, do="speak")', "missing parameter seconds"),
    (["t = 0, do = 'hold_function'"], "step 1", "missing parameter seconds"),
    (["t = 0, do = 'battery'"], "step 1", "missing parameter percent"),
    (["t = 0, do = 'storage_left'"], "step 1", "missing parameter bytes"),
    (["t = 0, do = 'clock_jump'"], "step 1", "missing parameter seconds"),
    (["t = 0, do = 'speak', secs = 5"], "step 1",
     'unknown parameter secs; did you mean "seconds"?'),
    (["t = 0, do = 'speak', seconds = 5, loud = true"], "step 1", "unknown parameter loud"),
    (["t = 0, do = 'press_record', seconds = 1"], 'step 1 (t=0, do="press_record")',
     "unknown parameter seconds (press_record takes none)"),
    (["t = 0, do = 'speak', seconds = 0"], "step 1", "seconds must be a number of seconds above 0"),
    (["t = 0, do = 'speak', seconds = '5'"], "step 1", 'got "5"'),
    (["t = 0, do = 'hold_function', seconds = -1"], "step 1", "above 0, got -1"),
    (["t = 0, do = 'battery', percent = 101"], "step 1", "percent must be a number from 0 to 100"),
    (["t = 0, do = 'battery', percent = -1"], "step 1", "from 0 to 100"),
    (["t = 0, do = 'battery', percent = false"], "step 1", "got false"),
    (["t = 0, do = 'storage_left', bytes = -1"], "step 1", "bytes must be a whole number"),
    (["t = 0, do = 'storage_left', bytes = 1e9"], "step 1", "got 1000000000.0"),
    (["t = 0, do = 'clock_jump', seconds = 0"], "step 1", "seconds must be a non-zero number"),
    (["t = 0, do = 'clock_jump', seconds = 'back'"], "step 1", "non-zero number"),
    (["t = 5, do = 'dock'", "t = 4, do = 'undock'"], 'step 2 (t=4, do="undock")',
     'comes before the step above it (step 1 (t=5, do="dock"))'),
    (["t = 0, do = 'power_restore'"], 'step 1 (t=0, do="power_restore")', "the power is not cut"),
    (["t = 0, do = 'power_cut'", "t = 1, do = 'power_restore'", "t = 2, do = 'power_restore'"],
     'step 3 (t=2, do="power_restore")', "the power is not cut"),
    (["t = 0, do = 'camera_ok'"], 'step 1 (t=0, do="camera_ok")', "the camera is not faulty"),
    (["t = 0, do = 'camera_fault'", "t = 1, do = 'camera_ok'", "t = 2, do = 'camera_ok'"],
     "step 3", "the camera is not faulty"),
    (["t = 0, do = 'end'", "t = 0, do = 'dock'"], 'step 2 (t=0, do="dock")',
     'comes after the end (step 1 (t=0, do="end"))'),
    (["t = 0, do = 'end'", "t = 1, do = 'end'"], "step 2", "comes after the end"),
]
PARAM_OK = {"commands": '["status"]'}
# While the power is cut, everything but power_restore, battery, dock, undock and end
# is refused, naming the step that cut the power.
BAD_STEPS += [
    (["t = 0, do = 'press_record'", "t = 3, do = 'power_cut'",
      f"t = 4, do = '{name}'" + "".join(f", {key} = {PARAM_OK.get(key, 1)}"
                                        for key in action.params)],
     f'step 3 (t=4, do="{name}")',
     'impossible while the power is cut (step 2 (t=3, do="power_cut"))')
    for name, action in ACTIONS.items()
    if name not in ALLOWED_WHILE_POWER_CUT
]


@pytest.mark.parametrize(("lines", "where", "problem"), BAD_STEPS)
def test_an_invalid_step_is_an_error_naming_the_step(
    lines: list[str], where: str, problem: str
) -> None:
    error = scenario_error(steps(*lines))
    assert error.where.startswith(where)
    assert str(error).startswith(f"scenario.toml: {error.where}: ")
    assert problem in error.problem


@pytest.mark.parametrize(
    ("device", "where", "problem"),
    [
        ("segment_seconds = 0", "[device].segment_seconds", "between 1 and 600, got 0"),
        ("segment_second = 5", "[device].segment_second", 'did you mean "segment_seconds"?'),
        ('pre_record_audio = "no"', "[device].pre_record_audio", "true or false"),
        ('video = "640x360"', "[device].video", "WIDTHxHEIGHT@FPS"),
        ("battery_critical_minutes = 30", "[device].battery_critical_minutes", "below"),
        ("[device.categories.scene]\nretention_days = 0\ndescription = 'x'",
         "[device].categories.scene.retention_days", "above 0"),
    ],
)
def test_a_bad_device_override_is_named_as_device_dot_key(
    device: str, where: str, problem: str
) -> None:
    text = f"[device]\n{device}\n" if not device.startswith("[") else device + "\n"
    error = scenario_error(text + steps("t = 0, do = 'end'"))
    assert error.where == where
    assert str(error).startswith(f"scenario.toml: {where}: ")
    assert problem in error.problem


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("", "at", "no steps"),
        ("[device]\nsegment_seconds = 5", "at", "no steps"),
        ("[[step]]\nt = 0\ndo = 'end'", "step", "unknown table"),
        ("[[ats]]\nt = 0\ndo = 'end'", "ats", 'did you mean "at"?'),
        ("t = 0", "t", "unknown key"),
        ("device = 5\n" + steps("t = 0, do = 'end'"), "device", "must be a [device] table"),
        ("at = 5", "at", "array of tables"),
        ("at = [1, 2]", "at", "array of tables"),
        ("[[at]\nt = 0", "", "not valid TOML"),
    ],
)
def test_a_malformed_file_is_an_error_saying_where(text: str, where: str, problem: str) -> None:
    error = scenario_error(text)
    assert error.where == where
    assert problem in error.problem
    assert str(error).startswith("scenario.toml: ")


def test_the_first_problem_is_reported_before_anything_runs() -> None:
    # A mistake near the end of a long run is caught when the file is read.
    lines = [f"t = {t}, do = 'press_marker'" for t in range(100)] + ["t = 3600, do = 'speek'"]
    error = scenario_error(steps(*lines))
    assert error.where == 'step 101 (t=3600, do="speek")'
    assert error.problem == 'unknown action; did you mean "speak"?'


def test_scenarios_are_values() -> None:
    a, b = parse_scenario(POWER_CUT_STORY), parse_scenario(POWER_CUT_STORY)
    assert a == b
    assert isinstance(a, Scenario)
    with pytest.raises(TypeError):
        a.steps[0].params["x"] = 1  # type: ignore[index]


# -- the docs list what the code knows ---------------------------------------------


def documented_params(cell: str) -> dict[str, str]:
    """``"`seconds`: number above 0"`` -> ``{"seconds": "number above 0"}``; ``—`` -> ``{}``."""
    if cell == "—":
        return {}
    return dict(
        (name, allowed.strip()) for name, allowed in re.findall(r"`(\w+)`:\s*([^`;]+)", cell)
    )


def test_the_actions_table_lists_every_action_and_its_parameters() -> None:
    rows = markdown_table(DOC.read_text(), "Action")
    assert [unquote(row[0]) for row in rows] == list(ACTIONS)
    for name, params, _meaning in rows:
        action = ACTIONS[unquote(name)]
        expected = {key: param.allowed for key, param in action.params.items()}
        assert documented_params(params) == expected, name


def test_the_docs_list_what_may_happen_while_the_power_is_cut() -> None:
    rule = re.search(r"While the power is cut, only (.*?) can happen", DOC.read_text(), re.DOTALL)
    assert rule
    assert re.findall(r"`(\w+)`", rule.group(1)) == list(ALLOWED_WHILE_POWER_CUT)


def test_the_docs_example_is_valid() -> None:
    example = re.search(r"## Example.*?```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example
    scenario = parse_scenario(example.group(1))
    assert scenario.duration == 37
    scenario.recorder_config(RecorderConfig())


def test_the_docs_error_examples_are_real_messages() -> None:
    shown = re.search(r"the problem:\n\n```\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert shown
    made = [
        steps("t = 0, do = 'press_record'", "t = 10, do = 'speak', seconds = 1",
              "t = 17, do = 'power_kut'"),
        steps("t = 0, do = 'press_record'", "t = 10, do = 'speak', seconds = 1",
              "t = 17, do = 'power_cut'", "t = 20, do = 'battery', percent = 50",
              "t = 21, do = 'speak', seconds = 5"),
        "[device]\nsegment_seconds = 0\n" + steps("t = 0, do = 'end'"),
    ]
    assert shown.group(1).splitlines() == [str(scenario_error(text)) for text in made]


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(device.scenario, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("commands", ["[]", '"status"', '[1]', '[""]',
                                      '["status\\u0007"]'])
def test_a_console_step_needs_a_list_of_command_lines(commands: str) -> None:
    error = scenario_error(steps(f"t = 0, do = 'console', commands = {commands}"))
    assert "commands must be a list of console command lines" in str(error)


# -- several devices ---------------------------------------------------------------

TWO_DEVICES = """
[device]
segment_seconds = 5
[devices.alpha]
officer = "PC-0001"
[devices.bravo]
segment_seconds = 10
[[at]]
t = 0
do = "press_record"
device = "alpha"
[[at]]
t = 1
do = "power_cut"
device = "bravo"
[[at]]
t = 2
do = "press_record"     # alpha's power is not cut
device = "alpha"
[[at]]
t = 3
do = "dock"
device = "bravo"
[[at]]
t = 9
do = "end"
"""


def test_a_scenario_of_several_devices_gives_each_its_steps_and_settings() -> None:
    scenario = parse_scenario(TWO_DEVICES)
    assert list(scenario.devices) == ["alpha", "bravo"]
    assert scenario.devices["alpha"].officer == "PC-0001"
    assert scenario.devices["bravo"].officer == "PC-SIM-02"  # a default per device
    assert [(s.t, s.action) for s in scenario.steps_for("bravo")] == [
        (1.0, "power_cut"), (3.0, "dock"), (9.0, "end")]
    assert [s.device for s in scenario.steps] == ["alpha", "bravo", "alpha", "bravo", None]
    base = RecorderConfig()
    assert scenario.recorder_config(base, "alpha").segment_seconds == 5
    assert scenario.recorder_config(base, "bravo").segment_seconds == 10


def test_a_one_device_scenario_has_no_devices_and_its_steps_name_none() -> None:
    scenario = parse_scenario(POWER_CUT_STORY)
    assert scenario.devices == {} and all(s.device is None for s in scenario.steps)


def test_the_power_rules_hold_per_device() -> None:
    # bravo's power cut does not stop alpha; but bravo itself cannot be pressed.
    text = TWO_DEVICES.replace('do = "dock"\ndevice = "bravo"', 'do = "press_marker"\n'
                               'device = "bravo"')
    error = scenario_error(text)
    assert error.where == 'step 4 (t=3, do="press_marker", device="bravo")'
    assert "impossible while the power is cut" in error.problem


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (('device = "alpha"\n[[at]]\nt = 1', '[[at]]\nt = 1'), 'step 1 (t=0, do="press_record")',
         "missing device (one of alpha, bravo)"),
        (('device = "alpha"\n[[at]]\nt = 1', 'device = "alfa"\n[[at]]\nt = 1'),
         'step 1 (t=0, do="press_record", device="alfa")', 'did you mean "alpha"?'),
        (('do = "end"', 'do = "end"\ndevice = "alpha"'), 'step 5 (t=9, do="end", device="alpha")',
         "takes no device"),
        (("[devices.bravo]\nsegment_seconds = 10", "[devices.bravo]\nsegment_seconds = 0"),
         "[devices.bravo].segment_seconds", "between 1 and 600"),
        (("[devices.bravo]\nsegment_seconds = 10", "[devices.bravo]\nsegment_second = 1"),
         "[devices.bravo].segment_second", 'did you mean "segment_seconds"?'),
        (('officer = "PC-0001"', "officer = 7"), "[devices.alpha].officer", "officer id"),
        (("[devices.alpha]", '[devices."al/pha"]'), '[devices.al/pha]', "letters, digits"),
    ],
)
def test_a_bad_device_or_step_device_is_named(change: tuple[str, str], where: str,
                                              problem: str) -> None:
    old, new = change
    assert old in TWO_DEVICES
    error = scenario_error(TWO_DEVICES.replace(old, new, 1))
    assert error.where == where, error
    assert problem in error.problem, error


def test_a_one_device_scenario_takes_no_device_on_a_step() -> None:
    error = scenario_error(steps("t = 0, do = 'press_record', device = 'alpha'"))
    assert "this scenario has one device" in error.problem


def test_devices_must_be_tables() -> None:
    assert scenario_error("devices = 3\n" + steps("t = 0, do = 'end'")).where == "devices"


def test_the_docs_example_of_several_devices_is_valid() -> None:
    example = re.search(r"## Several devices.*?```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example
    scenario = parse_scenario(example.group(1))
    assert list(scenario.devices) == ["CAM-A", "CAM-B"]
    assert scenario.recorder_config(RecorderConfig(), "CAM-B").segment_seconds == 6


def test_a_step_may_carry_a_note_of_what_it_stands_for() -> None:
    [step, _end] = parse_scenario(steps("t = 0, do = 'press_record', note = 'arriving'")).steps
    assert step.note == "arriving" and step.params == {}
    assert "note must be a line of text" in scenario_error(
        steps("t = 0, do = 'end', note = 3")).problem
