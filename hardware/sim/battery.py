"""Simulated battery: scripted discharge and charge, forced levels, a sudden cut.

    >>> battery = SimBattery(percent=80, time_scale=60)  # one real second = one minute
    >>> battery.discharge(percent_per_minute=1.0)
    >>> battery.read().percent <= 80
    True
    >>> battery.set_level(10); battery.is_low
    True
    >>> battery.fail()                 # the gauge stops answering
    >>> str(battery.read())
    'unknown'

Also here: :class:`SimINA219Bus`, an I2C bus holding an INA219's registers, so the
real :class:`hardware.battery.INA219Battery` code runs unchanged on a PC.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hardware.battery import LI_ION_CURVE, Battery, BatteryStatus


def voltage_from_percent(percent: float, cells: int = 1) -> float:
    """Inverse of :func:`hardware.battery.percent_from_voltage`."""
    curve = LI_ION_CURVE
    if percent <= 0:
        return curve[0][0] * cells
    for (v0, p0), (v1, p1) in zip(curve, curve[1:], strict=False):
        if percent <= p1:
            return (v0 + (v1 - v0) * (percent - p0) / (p1 - p0)) * cells
    return curve[-1][0] * cells


@dataclass(frozen=True, slots=True)
class Phase:
    """A scripted stretch: ``discharge`` / ``charge`` at ``rate`` %/min, or ``hold``."""

    kind: str
    seconds: float  # simulated seconds
    rate: float = 1.0


class SimBattery(Battery):
    name = "sim"

    def __init__(
        self,
        percent: float = 100.0,
        *,
        cells: int = 2,
        capacity_mah: int = 3000,
        time_scale: float = 1.0,
        low_percent: float = 15.0,
    ) -> None:
        super().__init__(low_percent)
        self.cells = cells
        self.capacity_mah = capacity_mah
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._level = float(percent)
        self._since = time.monotonic()
        self._rate = 0.0  # percent per simulated minute; + charging, - discharging
        self._external = False
        self._script: list[Phase] = []
        self._failing: str | None = None
        self.is_cut = False
        self.when_cut: Callable[[], None] | None = None

    # -- scripting ----------------------------------------------------------------

    def _settle(self) -> None:
        """Bring the level up to now, walking through any scripted phases."""
        now = time.monotonic()
        elapsed = (now - self._since) * self.time_scale
        self._since = now
        while elapsed > 0:
            if self._script:
                phase = self._script[0]
                step = min(elapsed, phase.seconds)
                self._apply(self._rate_of(phase), step)
                elapsed -= step
                remaining = phase.seconds - step
                if remaining <= 0:
                    self._script.pop(0)
                    self._enter_next_phase()
                else:
                    self._script[0] = Phase(phase.kind, remaining, phase.rate)
            else:
                self._apply(self._rate, elapsed)
                elapsed = 0

    def _apply(self, rate: float, seconds: float) -> None:
        self._level = min(100.0, max(0.0, self._level + rate * seconds / 60))

    @staticmethod
    def _rate_of(phase: Phase) -> float:
        return {"discharge": -phase.rate, "charge": phase.rate, "hold": 0.0}[phase.kind]

    def _enter_next_phase(self) -> None:
        if self._script:
            phase = self._script[0]
            self._rate = self._rate_of(phase)
            self._external = phase.kind == "charge"

    def script(self, *phases: Phase) -> None:
        """Run ``phases`` in order (then keep the last phase's rate)."""
        for phase in phases:
            if phase.kind not in ("discharge", "charge", "hold"):
                raise ValueError(f"unknown phase kind {phase.kind!r}")
        with self._lock:
            self._settle()
            self._script = list(phases)
            self._enter_next_phase()

    def discharge(self, percent_per_minute: float = 1.0) -> None:
        with self._lock:
            self._settle()
            self._script.clear()
            self._rate, self._external = -percent_per_minute, False

    def charge(self, percent_per_minute: float = 2.0) -> None:
        with self._lock:
            self._settle()
            self._script.clear()
            self._rate, self._external = percent_per_minute, True

    def hold(self, external_power: bool = False) -> None:
        with self._lock:
            self._settle()
            self._script.clear()
            self._rate, self._external = 0.0, external_power

    def set_level(self, percent: float) -> None:
        """Force the level (the current rate carries on from there)."""
        with self._lock:
            self._settle()
            self._level = float(min(100.0, max(0.0, percent)))

    def fail(self, reason: str | None = "gauge not answering (I2C error)") -> None:
        """Make the gauge unreadable (``fail(None)`` heals it)."""
        self._failing = reason

    def cut(self) -> None:
        """Sudden power loss: the battery is gone. Calls ``when_cut`` once."""
        with self._lock:
            if self.is_cut:
                return
            self.is_cut = True
            self._level, self._rate = 0.0, 0.0
        if self.when_cut is not None:
            self.when_cut()

    # -- Battery --------------------------------------------------------------------

    def _read(self) -> BatteryStatus:
        if self._failing:
            raise OSError(errno.EREMOTEIO, self._failing)
        with self._lock:
            if self.is_cut:
                raise OSError(errno.ENODEV, "power cut")
            self._settle()
            level, rate, external = self._level, self._rate, self._external
        current_ma = rate / 100 * self.capacity_mah * 60  # %/min -> mA
        charging = rate > 0 and level < 100
        minutes = None
        if rate < 0:
            minutes = int(level / -rate)
        return BatteryStatus(
            percent=round(level, 2),
            voltage=round(voltage_from_percent(level, self.cells), 3),
            current_ma=round(current_ma, 1),
            charging=charging,
            external_power=external,
            minutes_left=minutes,
            source=self.name,
        )


class SimINA219Bus:
    """An smbus2-like I2C bus with one INA219 on it. Set volts and current; read back."""

    def __init__(self, address: int = 0x42, *, shunt_ohms: float = 0.01) -> None:
        self.address = address
        self.shunt_ohms = shunt_ohms
        self.volts = 8.0
        self.current_ma = -500.0
        self.failing = False
        self.closed = False

    def _registers(self) -> dict[int, int]:
        bus = int(round(self.volts / 0.004)) << 3 | 0b10  # CNVR set: conversion ready
        shunt = int(round(self.current_ma / 1000 * self.shunt_ohms / 10e-6)) & 0xFFFF
        return {0x00: 0x399F, 0x01: shunt, 0x02: bus & 0xFFFF}

    def read_i2c_block_data(self, address: int, register: int, length: int) -> list[int]:
        if self.closed:
            raise OSError(errno.EBADF, "bus closed")
        if self.failing or address != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")  # no ACK on the bus
        value = self._registers().get(register, 0)
        return [(value >> 8) & 0xFF, value & 0xFF][:length]

    def close(self) -> None:
        self.closed = True
