"""Scenarios for ``custody sim SCENARIO.toml``: what happens to a simulated device, and when.

A scenario is a TOML file with an optional ``[device]`` table of recorder
settings (the names of :mod:`device.config`) and a list of timed ``[[at]]``
steps, each doing one action (see ``docs/scenarios.md``). A scenario of
several devices names them in ``[devices.NAME]`` tables (each its own
settings, on top of ``[device]``, and its ``officer``); every step then says
which ``device`` it happens to, except ``end``, which ends them all. The whole file is
checked before anything runs, so a typo fails in a second, not half-way
through a long run; every message names the step and the problem::

    >>> scenario = parse_scenario('''
    ... [device]
    ... segment_seconds = 5
    ... [[at]]
    ... t = 0
    ... do = "press_record"
    ... [[at]]
    ... t = 17
    ... do = "power_cut"
    ... ''')
    >>> [(step.t, step.action) for step in scenario.steps]
    [(0.0, 'press_record'), (17.0, 'power_cut'), (17.0, 'end')]
    >>> scenario.duration
    17.0
    >>> parse_scenario('[[at]]\\nt = 17\\ndo = "power_kut"', source="scenario.toml")
    Traceback (most recent call last):
    ...
    device.scenario.ScenarioError: scenario.toml: step 1 (t=17, do="power_kut"): unknown action; \
did you mean "power_cut"?
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from device.config import ConfigError, RecorderConfig, did_you_mean, show_value, toml_value
from device.watch import CRITICAL_PERCENT


class ScenarioError(ValueError):
    """A scenario file is invalid.

    ``where`` is the step (``step 3 (t=17, do="speak")``) or key (``[device].video``) at fault.
    """

    def __init__(self, where: str, problem: str, source: str = "") -> None:
        self.where = where
        self.problem = problem
        self.source = source
        super().__init__(": ".join(part for part in (source, where, problem) if part))


class _Invalid(Exception):
    """A parameter checker's complaint; the caller names the step."""


# -- parameter checks ---------------------------------------------------------------

ParamCheck = Callable[[Any], Any]


def _is_number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)


def _positive_seconds(raw: Any) -> float:
    if not _is_number(raw) or raw <= 0:
        raise _Invalid(f"must be a number of seconds above 0, got {show_value(raw)}")
    return float(raw)


def _percent(raw: Any) -> float:
    if not _is_number(raw) or not 0 <= raw <= 100:
        raise _Invalid(f"must be a number from 0 to 100, got {show_value(raw)}")
    return float(raw)


def _byte_count(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise _Invalid(f"must be a whole number of bytes, 0 or more, got {show_value(raw)}")
    return raw


def _clock_step(raw: Any) -> float:
    if not _is_number(raw) or raw == 0:
        raise _Invalid(
            f"must be a non-zero number of seconds (negative: back), got {show_value(raw)}"
        )
    return float(raw)


def _console_commands(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(
            isinstance(c, str) and c.strip() and c.isprintable() for c in raw):
        raise _Invalid(f"must be a list of console command lines, got {show_value(raw)}")
    return tuple(raw)


@dataclass(frozen=True)
class Param:
    """An action's parameter: its check and, for messages and docs, what it allows."""

    check: ParamCheck
    allowed: str


_SECONDS = Param(_positive_seconds, "number above 0")


@dataclass(frozen=True)
class Action:
    """What a step may do: its parameters (all required) and what it means."""

    name: str
    meaning: str
    params: Mapping[str, Param] = field(default_factory=dict)


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("press_record", "Press the record button (starts, or stops, a recording)"),
        Action("press_marker", "Press the marker button (tags a key moment)"),
        Action("hold_function", "Hold the function button", {"seconds": _SECONDS}),
        Action("battery", "Set the battery's charge",
               {"percent": Param(_percent, "number from 0 to 100")}),
        Action("power_cut", "Cut the power at once: nothing gets a chance to seal"),
        Action("power_restore", "Give the power back; the device boots"),
        Action("storage_left", "Set the free space on the store",
               {"bytes": Param(_byte_count, "whole number, 0 or more")}),
        Action("camera_fault", "The camera stops delivering frames"),
        Action("camera_ok", "The faulty camera works again"),
        Action("speak", "The officer speaks into the microphone", {"seconds": _SECONDS}),
        Action("clock_jump", "Step the wall clock (not the monotonic clock)",
               {"seconds": Param(_clock_step, "non-zero number (negative: back)")}),
        Action("dock", "Put the device in its dock"),
        Action("undock", "Take the device out of its dock"),
        Action("console", "A technician logs in at the serial console and types commands",
               {"commands": Param(_console_commands, "list of command lines")}),
        Action("end", "End the scenario"),
    )
}

# A device without power cannot be pressed, fill up or hear anything; what remains
# is what happens *to* it: power back, the battery charging, being (un)docked.
ALLOWED_WHILE_POWER_CUT: tuple[str, ...] = ("power_restore", "battery", "dock", "undock", "end")


@dataclass(frozen=True)
class Step:
    """One ``[[at]]`` step. ``index`` is its place in :attr:`Scenario.steps` (0-based).

    ``implied`` is true only for the ``end`` added when a scenario has none.
    """

    t: float
    action: str
    params: Mapping[str, Any]
    index: int
    implied: bool = False
    device: str | None = None  # the device it happens to, in a scenario of several
    note: str = field(default="", compare=False)  # what it stands for, for a narrated run


    @property
    def number(self) -> int:
        """The 1-based step number used in messages."""
        return self.index + 1

    def __str__(self) -> str:
        return _describe(self.number, self.t, self.action, self.device)


#: A device's name in ``[devices.NAME]`` is its device id: the characters of an identity.
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SimDevice:
    """One device of a scenario of several: its name (its device id), officer, settings."""

    name: str
    officer: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Scenario:
    """A checked scenario: recorder setting overrides and steps ending with an ``end``.

    ``devices`` is empty for a scenario of one (unnamed) device.
    """

    device_overrides: Mapping[str, Any]
    steps: tuple[Step, ...]
    source: str = field(default="", compare=False)
    devices: Mapping[str, SimDevice] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def duration(self) -> float:
        """Seconds from the start to the ``end`` step."""
        return self.steps[-1].t

    def recorder_config(self, base: RecorderConfig, device: str | None = None) -> RecorderConfig:
        """``base`` with this scenario's ``[device]`` settings applied, then those of
        ``[devices.<device>]`` if a device is named.

        Relative paths in ``[device]`` are taken relative to the scenario file's folder.
        """
        config = _apply_device(self.device_overrides, base, self.source)
        if device is not None:
            config = _apply_device(self.devices[device].overrides, config, self.source,
                                   f"[devices.{device}]")
        return config

    def steps_for(self, device: str) -> tuple[Step, ...]:
        """The steps that happen to ``device``, with the ``end`` that ends them all."""
        return tuple(s for s in self.steps if s.device in (device, None))


def _apply_device(
    overrides: Mapping[str, Any], base: RecorderConfig, source: str, table: str = "[device]"
) -> RecorderConfig:
    base_dir = Path(source).parent if source else None
    try:
        return base.with_overrides(overrides, base_dir=base_dir)
    except ConfigError as exc:
        raise ScenarioError(f"{table}.{exc.key}", exc.problem, source) from None


def load_scenario(path: str | os.PathLike[str], base: RecorderConfig | None = None) -> Scenario:
    """Read and check a scenario file (see :func:`parse_scenario`)."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError("", f"cannot read scenario: {exc}", source) from exc
    return parse_scenario(text, source, base)


def parse_scenario(text: str, source: str = "", base: RecorderConfig | None = None) -> Scenario:
    """Check a scenario's TOML and return it; raises :class:`ScenarioError` on the first problem.

    ``[device]`` is checked on top of ``base`` (default: the default settings); the
    simulator applies it again to its real settings with :meth:`Scenario.recorder_config`.
    Without an ``end`` step, one is implied at the last step's time.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"not valid TOML: {exc}", source) from exc
    for key in data:
        if key not in ("device", "devices", "at"):
            what = "unknown table" if isinstance(data[key], dict | list) else "unknown key"
            hint = did_you_mean(key, ("device", "devices", "at")) or (
                " (a scenario has [device], [devices.NAME] and [[at]])")
            raise ScenarioError(key, what + hint, source)

    device = data.get("device", {})
    if not isinstance(device, dict):
        raise ScenarioError("device", "must be a [device] table of recorder settings", source)
    overrides = MappingProxyType(dict(device))
    shared = _apply_device(overrides, base or RecorderConfig(), source)
    devices = _check_devices(data.get("devices", {}), shared, source)

    raw_steps = data.get("at", [])
    if not isinstance(raw_steps, list) or not all(isinstance(s, dict) for s in raw_steps):
        raise ScenarioError("at", "steps are [[at]] tables (an array of tables)", source)
    if not raw_steps:
        raise ScenarioError("at", "no steps: add [[at]] tables with t and do", source)
    steps = _check_steps(raw_steps, source, devices)
    return Scenario(overrides, steps, source, MappingProxyType(devices))


def _check_devices(raw: Any, shared: RecorderConfig, source: str) -> dict[str, SimDevice]:
    """``[devices.NAME]`` tables: each name a device id, each table settings + ``officer``."""
    if not isinstance(raw, dict) or not all(isinstance(t, dict) for t in raw.values()):
        raise ScenarioError("devices", "must be [devices.NAME] tables, one per device "
                            "(its recorder settings and officer)", source)
    devices: dict[str, SimDevice] = {}
    for number, (name, table) in enumerate(raw.items(), start=1):
        where = f"[devices.{name}]"
        if not DEVICE_NAME.fullmatch(name):
            raise ScenarioError(where, "a device's name is its id: letters, digits, . _ - "
                                "(up to 64, starting with a letter or digit)", source)
        settings = dict(table)
        officer = settings.pop("officer", f"PC-SIM-{number:02d}")
        if not isinstance(officer, str) or not DEVICE_NAME.fullmatch(officer):
            raise ScenarioError(f"{where}.officer", "must be an officer id (letters, digits, "
                                f". _ -), got {show_value(officer)}", source)
        _apply_device(settings, shared, source, where)
        devices[name] = SimDevice(name, officer, MappingProxyType(settings))
    return devices


@dataclass
class _DeviceState:
    """What the checks know of one device while reading the steps."""

    power_cut_at: Step | None = None  # the step that cut the power, while it is cut
    flat_at: Step | None = None  # a battery step at the critical level: the device shuts down
    camera_fault_at: Step | None = None


def _check_steps(raw_steps: list[dict[str, Any]], source: str,
                 devices: Mapping[str, SimDevice]) -> tuple[Step, ...]:
    steps: list[Step] = []
    states: dict[str | None, _DeviceState] = {}
    end: Step | None = None
    for index, raw in enumerate(raw_steps):
        step = _check_step(index, raw, source, devices)
        fail = partial(ScenarioError, str(step), source=source)
        state = states.setdefault(step.device, _DeviceState())
        power_cut_at, flat_at = state.power_cut_at, state.flat_at
        camera_fault_at = state.camera_fault_at

        if end is not None:
            raise fail(f"comes after the end ({end}); nothing can follow an end")
        # In time order: each device's steps among themselves (a scenario of several may
        # list them device by device); the end after every step.
        above = [s for s in steps if step.device is None or s.device == step.device]
        latest = max(above, key=lambda s: s.t, default=None)
        if latest is not None and step.t < latest.t:
            raise fail(f"comes before the step above it ({latest}); "
                       f"steps must be in time order" + (f" for {step.device}"
                                                         if step.device else ""))
        if power_cut_at is not None and step.action not in ALLOWED_WHILE_POWER_CUT:
            allowed = ", ".join(ALLOWED_WHILE_POWER_CUT)
            raise fail(f"impossible while the power is cut ({power_cut_at}); "
                       f"only {allowed} can happen then")
        if step.action == "power_restore" and power_cut_at is None and flat_at is None:
            raise fail("the power is not cut (power_restore must follow a power_cut, "
                       "or a battery run down to the critical level)")
        if step.action == "camera_ok" and camera_fault_at is None:
            raise fail("the camera is not faulty (camera_ok must follow a camera_fault)")

        if step.action == "power_cut":
            state.power_cut_at = step
        elif step.action == "power_restore":
            state.power_cut_at = state.flat_at = None
        elif step.action == "battery" and step.params["percent"] <= CRITICAL_PERCENT:
            state.flat_at = step
        elif step.action == "camera_fault":
            state.camera_fault_at = camera_fault_at or step
        elif step.action == "camera_ok":
            state.camera_fault_at = None
        elif step.action == "end":
            end = step
        steps.append(step)
    if end is None:
        last = max(s.t for s in steps)
        steps.append(Step(last, "end", MappingProxyType({}), len(steps), implied=True))
    return tuple(steps)


def _check_step(index: int, raw: dict[str, Any], source: str,
                devices: Mapping[str, SimDevice]) -> Step:
    """One step on its own: ``t``, ``do``, its ``device`` and the action's parameters."""
    where = _describe(index + 1, raw.get("t"), raw.get("do"), raw.get("device"))

    def fail(problem: str) -> ScenarioError:
        return ScenarioError(where, problem, source)

    if "t" not in raw:
        raise fail('missing t (seconds from the start)')
    t = raw["t"]
    if not _is_number(t) or t < 0:
        raise fail(f"t must be a number of seconds, 0 or more, got {show_value(t)}")
    if "do" not in raw:
        raise fail(f'missing do (one of {", ".join(ACTIONS)})')
    action_name = raw["do"]
    if not isinstance(action_name, str):
        raise fail(f"do must be an action's name (a string), got {show_value(action_name)}")
    action = ACTIONS.get(action_name)
    if action is None:
        raise fail("unknown action" + did_you_mean(action_name, ACTIONS))

    device = _step_device(raw, action_name, devices, fail)
    note = raw.get("note", "")
    if not isinstance(note, str) or not note.isprintable():
        raise fail(f"note must be a line of text, got {show_value(note)}")
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("t", "do", "device", "note"):
            continue
        if key not in action.params:
            if not action.params:
                raise fail(f"unknown parameter {key} ({action_name} takes none)")
            raise fail(f"unknown parameter {key}" + did_you_mean(key, action.params)
                       + f" ({action_name} takes {', '.join(action.params)})")
        try:
            params[key] = action.params[key].check(value)
        except _Invalid as exc:
            raise fail(f"{key} {exc}") from None
    for key in action.params:
        if key not in params:
            raise fail(f"missing parameter {key}")
    return Step(float(t), action_name, MappingProxyType(params), index, device=device,
                note=note)


def _step_device(raw: dict[str, Any], action: str, devices: Mapping[str, SimDevice],
                 fail: Callable[[str], ScenarioError]) -> str | None:
    """Which device a step happens to: none in a one-device scenario; else one of
    ``[devices.NAME]``, for every step but ``end`` (which ends them all)."""
    if "device" not in raw:
        if devices and action != "end":
            raise fail(f"missing device (one of {', '.join(devices)})")
        return None
    name = raw["device"]
    if not devices:
        raise fail("device names a device of [devices.NAME] tables; this scenario has one "
                   "device, which every step is done to")
    if action == "end":
        raise fail("end ends every device; it takes no device")
    if not isinstance(name, str) or name not in devices:
        hint = did_you_mean(name, devices) if isinstance(name, str) else ""
        raise fail(f"device {show_value(name)} is not one of the scenario's devices "
                   f"({', '.join(devices)}){hint}")
    return name


def _describe(number: int, t: Any, action: Any, device: Any = None) -> str:
    """``step 3 (t=17, do="speak", device="alpha")``, leaving out what the step lacks."""
    parts = []
    if t is not None:
        # A valid t reads as the user wrote it (t=17, not t=17.0); anything else as given.
        is_number = isinstance(t, int | float) and not isinstance(t, bool)
        parts.append(f"t={toml_value(t) if is_number else show_value(t)}")
    if action is not None:
        parts.append(f"do={show_value(action)}")
    if device is not None:
        parts.append(f"device={show_value(device)}")
    return f"step {number} ({', '.join(parts)})" if parts else f"step {number}"
