"""What the officer sees, hears and feels: recording LED, status LED, buzzer, vibration.

    >>> from gpiozero.pins.mock import MockFactory
    >>> from hardware.board import load_board
    >>> indicators = Indicators(load_board().pins, pin_factory=MockFactory())
    >>> indicators.recording = True              # red LED steady on while recording
    >>> indicators.signal("recording_started")   # a named pattern, played in order
    >>> indicators.wait()
    True
    >>> indicators.history[-1].pattern
    'recording_started'

Patterns never touch the red recording LED: it shows one thing only - whether the
device is recording - so that it can be trusted by the people being recorded.
Patterns are queued and played one after another; none is dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Buzzer, DigitalOutputDevice

from hardware.board import Pins

OUTPUTS = ("status", "buzzer", "vibration")


@dataclass(frozen=True, slots=True)
class Step:
    """Outputs switched on (the rest off) for ``seconds``."""

    on: frozenset[str]
    seconds: float


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    steps: tuple[Step, ...]

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


def _pattern(name: str, *steps: tuple[str, float]) -> Pattern:
    """Steps as ("status+buzzer", 0.1) pairs; "" means all off."""
    return Pattern(
        name, tuple(Step(frozenset(o for o in on.split("+") if o), s) for on, s in steps)
    )


PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        # One firm buzz-and-vibrate: the officer knows without looking.
        _pattern("recording_started", ("buzzer+vibration", 0.3)),
        _pattern(
            "recording_stopped",
            ("buzzer+vibration", 0.12), ("", 0.1), ("buzzer+vibration", 0.12),
        ),
        _pattern(
            "low_battery",
            ("status+buzzer", 0.1), ("", 0.1), ("status+buzzer", 0.1), ("", 0.1),
            ("status+buzzer", 0.1),
        ),
        _pattern("storage_low", ("status+buzzer", 0.4), ("", 0.2), ("status+buzzer", 0.4)),
        # The voice-note prompt: a long vibration and a short beep, then speak.
        _pattern("prompt", ("vibration", 0.5), ("buzzer", 0.1)),
        _pattern(
            "error",
            *[("status+buzzer+vibration", 0.06), ("", 0.06)] * 4,
            ("status+buzzer+vibration", 0.3),
        ),
        _pattern("marker", ("vibration", 0.1)),
        # Art. 10: a recording not yet handed in is nearly due (shown on each press).
        _pattern("overdue", ("status", 0.2), ("", 0.2), ("status", 0.2), ("", 0.2),
                 ("status", 0.2)),
    )
}


@dataclass(frozen=True, slots=True)
class Signalled:
    """One pattern played: when it started and finished (monotonic seconds)."""

    pattern: str
    started: float
    finished: float


class Indicators:
    """The LEDs, buzzer and vibration motor. See the module docstring."""

    def __init__(self, pins: Pins, *, pin_factory: Any = None) -> None:
        self._devices: list[Any] = []
        try:
            self.recording_led = self._add(LED(pins.recording_led, pin_factory=pin_factory))
            self.status_led = self._add(LED(pins.status_led, pin_factory=pin_factory))
            self.buzzer = self._add(Buzzer(pins.buzzer, pin_factory=pin_factory))
            self.vibration = self._add(DigitalOutputDevice(pins.vibration, pin_factory=pin_factory))
        except Exception:
            self.close()
            raise
        self._outputs = {
            "status": self.status_led, "buzzer": self.buzzer, "vibration": self.vibration
        }
        self.history: list[Signalled] = []
        self.when_signalled: Callable[[Signalled], None] | None = None
        self._queue: queue.Queue[tuple[Pattern, threading.Event] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="indicators", daemon=True)
        self._worker.start()

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    @property
    def recording(self) -> bool:
        return bool(self.recording_led.is_lit)

    @recording.setter
    def recording(self, value: bool) -> None:
        """Red LED on (steady) while recording, off otherwise."""
        if value:
            self.recording_led.on()
        else:
            self.recording_led.off()

    @property
    def is_active(self) -> bool:
        """True while a pattern is playing or queued."""
        return not self._idle.is_set()

    def signal(self, pattern: str | Pattern, wait: bool = False) -> None:
        """Queue a named pattern (see ``PATTERNS``); with ``wait``, return once played."""
        if isinstance(pattern, str):
            try:
                pattern = PATTERNS[pattern]
            except KeyError:
                raise ValueError(
                    f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})"
                ) from None
        for step in pattern.steps:
            unknown = step.on - set(OUTPUTS)
            if unknown:
                raise ValueError(f"pattern {pattern.name!r} uses unknown outputs {unknown}")
        done = threading.Event()
        with self._pending_lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put((pattern, done))
        if wait:
            done.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued pattern has played. False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        if hasattr(self, "_worker"):
            self._queue.put(None)
            self._worker.join(timeout=5)
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()

    def __enter__(self) -> Indicators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pattern, done = item
            started = time.monotonic()
            for step in pattern.steps:
                for name, device in self._outputs.items():
                    if name in step.on:
                        device.on()
                    else:
                        device.off()
                time.sleep(step.seconds)
            for device in self._outputs.values():
                device.off()
            record = Signalled(pattern.name, started, time.monotonic())
            self.history.append(record)
            done.set()
            if self.when_signalled is not None:
                self.when_signalled(record)
            with self._pending_lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()
