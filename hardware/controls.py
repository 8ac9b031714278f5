"""The officer's controls: record, marker and function buttons, and the dock-detect input.

Built on gpiozero, so the same code drives real pins on a Pi and gpiozero's
MockFactory pins in the simulator::

    >>> from gpiozero.pins.mock import MockFactory
    >>> from hardware.board import load_board
    >>> controls = Controls(load_board().pins, pin_factory=MockFactory())
    >>> controls.when_event = print                 # or controls.read_event(timeout)
    >>> controls.record_button.is_pressed
    False

Events (:class:`ControlEvent`):

* ``record`` and ``marker`` fire on press - the record button must respond at once.
* ``function`` fires on release of a short press; ``function_long`` fires once the
  function button has been held for ``long_press`` seconds (no ``function`` follows).
* Holding function and then pressing record or marker is a chord:
  ``function+record`` / ``function+marker`` fire instead of ``record`` / ``marker``,
  and the function button's own release is then silent.
* ``docked`` / ``undocked`` follow the dock-detect input (pulled low by the dock).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from gpiozero import Button, DigitalInputDevice

from hardware.board import Pins


class ControlEvent(StrEnum):
    RECORD = "record"
    MARKER = "marker"
    FUNCTION = "function"
    FUNCTION_LONG = "function_long"
    FUNCTION_RECORD = "function+record"
    FUNCTION_MARKER = "function+marker"
    DOCKED = "docked"
    UNDOCKED = "undocked"


class Controls:
    """The buttons and dock input, reporting :class:`ControlEvent` s. See the module doc."""

    def __init__(
        self,
        pins: Pins,
        *,
        pin_factory: Any = None,
        long_press: float = 2.0,
        bounce_time: float | None = 0.02,
    ) -> None:
        self.long_press = long_press
        self.when_event: Callable[[ControlEvent], None] | None = None
        self._events: queue.Queue[ControlEvent] = queue.Queue()
        self._state = threading.Lock()
        self._function_used = False  # the current function press already meant something
        self._devices: list[Any] = []
        try:
            self.record_button = self._add(
                Button(pins.record_button, bounce_time=bounce_time, pin_factory=pin_factory)
            )
            self.marker_button = self._add(
                Button(pins.marker_button, bounce_time=bounce_time, pin_factory=pin_factory)
            )
            self.function_button = self._add(
                Button(
                    pins.function_button,
                    bounce_time=bounce_time,
                    hold_time=long_press,
                    pin_factory=pin_factory,
                )
            )
            # The dock's pogo pin pulls the input low; the pull-up keeps it high
            # (undocked) when the device is in the field.
            self.dock = self._add(
                DigitalInputDevice(
                    pins.dock_detect, pull_up=True, bounce_time=0.05, pin_factory=pin_factory
                )
            )
        except Exception:
            self.close()
            raise
        self.record_button.when_pressed = lambda: self._pressed(ControlEvent.RECORD)
        self.marker_button.when_pressed = lambda: self._pressed(ControlEvent.MARKER)
        self.function_button.when_pressed = self._function_pressed
        self.function_button.when_held = self._function_held
        self.function_button.when_released = self._function_released
        self.dock.when_activated = lambda: self._emit(ControlEvent.DOCKED)
        self.dock.when_deactivated = lambda: self._emit(ControlEvent.UNDOCKED)

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    # -- state ------------------------------------------------------------------

    @property
    def is_docked(self) -> bool:
        return bool(self.dock.is_active)

    @property
    def is_active(self) -> bool:
        """True while any button is held down."""
        return any(
            b.is_pressed for b in (self.record_button, self.marker_button, self.function_button)
        )

    def read_event(self, timeout: float | None = None) -> ControlEvent | None:
        """The next event, or None after ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()

    def __enter__(self) -> Controls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- gpiozero callbacks (run on gpiozero's threads) -------------------------

    def _emit(self, event: ControlEvent) -> None:
        self._events.put(event)
        callback = self.when_event
        if callback is not None:
            callback(event)

    def _pressed(self, event: ControlEvent) -> None:
        with self._state:
            chord = self.function_button.is_pressed
            if chord:
                self._function_used = True
        if chord:
            event = (
                ControlEvent.FUNCTION_RECORD
                if event is ControlEvent.RECORD
                else ControlEvent.FUNCTION_MARKER
            )
        self._emit(event)

    def _function_pressed(self) -> None:
        with self._state:
            self._function_used = False

    def _function_held(self) -> None:
        with self._state:
            if self._function_used:
                return
            self._function_used = True
        self._emit(ControlEvent.FUNCTION_LONG)

    def _function_released(self) -> None:
        with self._state:
            used, self._function_used = self._function_used, False
        if not used:
            self._emit(ControlEvent.FUNCTION)
