"""The function button's menu: a choice made with short presses."""

from __future__ import annotations

import threading
from collections.abc import Callable

MENU_SECONDS = 3.0  # after the last press, a choice made with the function button is taken


class FunctionMenu:
    """Choose one of ``choices`` with short presses of the function button.

    The first choice is taken unless pressed again; each press moves on one
    (the device confirms with a short vibration). ``MENU_SECONDS`` after the
    last press the choice is made.

    >>> menu = FunctionMenu(("weather", "location_change", "other"), print, seconds=60)
    >>> menu.press()
    >>> menu.cancel()
    'location_change'
    """

    def __init__(self, choices: tuple[str, ...], chosen: Callable[[str], None],
                 seconds: float = MENU_SECONDS):
        self.choices, self.chosen, self.seconds = choices, chosen, seconds
        self.index = 0
        self._timer = self._arm()

    def _arm(self) -> threading.Timer:
        timer = threading.Timer(self.seconds, lambda: self.chosen(self.choices[self.index]))
        timer.daemon = True
        timer.start()
        return timer

    def press(self) -> None:
        self._timer.cancel()
        self.index = (self.index + 1) % len(self.choices)
        self._timer = self._arm()

    def cancel(self) -> str:
        """Stop waiting; the choice as it stands."""
        self._timer.cancel()
        return self.choices[self.index]
