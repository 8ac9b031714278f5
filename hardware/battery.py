"""The battery gauge: percent, voltage, charging / external power, minutes left.

    >>> from hardware.factory import get_factory
    >>> battery = get_factory().battery()
    >>> status = battery.read()     # never raises
    >>> status.known, str(status)   # (False, 'unknown') when the gauge can't be read

Backends: :class:`INA219Battery` (Waveshare UPS HAT, I2C via smbus2),
:class:`SysfsBattery` (the Linux ``power_supply`` class) and :class:`PiSugarBattery`
(pisugar-server's TCP interface). An unreadable gauge gives an *unknown* status
with the reason; it never raises into the recorder.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardware.board import BatterySettings

# Open-circuit voltage of one Li-ion cell against charge left. Rough, but a gauge
# without coulomb counting has nothing better; flat in the middle, steep at the ends.
LI_ION_CURVE: tuple[tuple[float, float], ...] = (
    (3.00, 0.0), (3.30, 5.0), (3.50, 10.0), (3.60, 20.0), (3.70, 40.0),
    (3.80, 60.0), (3.90, 72.0), (4.00, 85.0), (4.10, 95.0), (4.20, 100.0),
)


def percent_from_voltage(volts: float, cells: int = 1) -> float:
    """Charge left (0-100) of ``cells`` Li-ion cells in series at ``volts``."""
    per_cell = volts / cells
    curve = LI_ION_CURVE
    if per_cell <= curve[0][0]:
        return 0.0
    for (v0, p0), (v1, p1) in zip(curve, curve[1:], strict=False):
        if per_cell <= v1:
            return p0 + (p1 - p0) * (per_cell - v0) / (v1 - v0)
    return 100.0


@dataclass(frozen=True, slots=True)
class BatteryStatus:
    """One reading. Fields are None when the backend cannot say."""

    percent: float | None = None
    voltage: float | None = None
    current_ma: float | None = None  # positive = charging
    charging: bool | None = None
    external_power: bool | None = None
    minutes_left: int | None = None
    source: str = ""
    error: str | None = None  # why the reading is unknown

    @property
    def known(self) -> bool:
        return self.percent is not None

    @property
    def state(self) -> str:
        """``unknown``, ``charging``, ``full``, ``external`` or ``discharging``."""
        if not self.known:
            return "unknown"
        if self.charging:
            return "charging"
        if self.external_power:
            return "full" if (self.percent or 0) >= 99.5 else "external"
        return "discharging"

    @classmethod
    def unknown(cls, source: str, error: str) -> BatteryStatus:
        return cls(source=source, error=error)

    def __str__(self) -> str:
        if not self.known:
            return "unknown"
        text = f"{self.percent:.0f}% {self.state}"
        if self.voltage is not None:
            text += f" {self.voltage:.2f}V"
        if self.minutes_left is not None:
            text += f" ~{self.minutes_left} min left"
        return text


class DrainEstimator:
    """Minutes left from how fast the percentage has been falling lately."""

    def __init__(self, window_s: float = 600.0) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, float]] = deque()

    def add(self, t: float, percent: float) -> None:
        self._points.append((t, percent))
        while self._points and t - self._points[0][0] > self.window_s:
            self._points.popleft()

    def reset(self) -> None:
        self._points.clear()

    def minutes_left(self) -> int | None:
        if len(self._points) < 2:
            return None
        (t0, p0), (t1, p1) = self._points[0], self._points[-1]
        if t1 - t0 < 30 or p1 >= p0:
            return None  # too little history, or not draining
        rate = (p0 - p1) / (t1 - t0)  # percent per second
        return int(p1 / rate / 60)


class Battery(ABC):
    """A battery gauge. :meth:`read` never raises; see the module docstring."""

    name = "battery"

    def __init__(self, low_percent: float = 15.0) -> None:
        self.low_percent = low_percent
        self._estimator = DrainEstimator()
        self.last: BatteryStatus = BatteryStatus.unknown(self.name, "not read yet")

    def read(self) -> BatteryStatus:
        try:
            status = self._read()
        except Exception as exc:  # a gauge fault must never stop the recorder
            status = BatteryStatus.unknown(self.name, f"{type(exc).__name__}: {exc}")
        if status.known and status.minutes_left is None:
            if status.charging or status.external_power:
                self._estimator.reset()
            else:
                self._estimator.add(time.monotonic(), float(status.percent or 0.0))
                status = replace(status, minutes_left=self._estimator.minutes_left())
        self.last = status
        return status

    @property
    def percent(self) -> float | None:
        return self.read().percent

    @property
    def is_low(self) -> bool:
        """True when known to be at or below ``low_percent`` and not charging."""
        status = self.read()
        return status.known and not status.charging and (status.percent or 0) <= self.low_percent

    def close(self) -> None:
        return None  # nothing to release by default

    def __enter__(self) -> Battery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _read(self) -> BatteryStatus: ...


class UnreadableBattery(Battery):
    """Stands in for a gauge that cannot be used at all: always unknown, with the reason."""

    def __init__(self, reason: str, name: str = "battery", low_percent: float = 15.0) -> None:
        self.name = name
        self.reason = reason
        super().__init__(low_percent)

    def _read(self) -> BatteryStatus:
        return BatteryStatus.unknown(self.name, self.reason)


class NoBattery(UnreadableBattery):
    """For boards without a gauge."""

    def __init__(self, low_percent: float = 15.0) -> None:
        super().__init__("this board has no battery gauge", "none", low_percent)


# INA219 registers (datasheet SBOS448): shunt voltage LSB 10 uV (signed), bus
# voltage in bits 15..3 with LSB 4 mV, bit 0 = math overflow.
_INA219_SHUNT = 0x01
_INA219_BUS = 0x02


class INA219Battery(Battery):
    """The INA219 on a Waveshare UPS HAT, over I2C with smbus2.

    Current comes from the shunt voltage and the shunt's resistance, so the chip's
    calibration register is never written: reading is all we do to it.
    """

    name = "ina219"

    def __init__(
        self,
        bus: Any,
        address: int = 0x42,
        *,
        cells: int = 2,
        shunt_ohms: float = 0.01,
        capacity_mah: int = 3000,
        charging_current_positive: bool = True,
        low_percent: float = 15.0,
    ) -> None:
        super().__init__(low_percent)
        self._bus = bus
        self.address = address
        self.cells = cells
        self.shunt_ohms = shunt_ohms
        self.capacity_mah = capacity_mah
        self._sign = 1 if charging_current_positive else -1

    @classmethod
    def open(cls, bus_number: int, address: int, settings: BatterySettings) -> INA219Battery:
        """Open ``/dev/i2c-N`` with smbus2 (imported only here)."""
        from smbus2 import SMBus

        return cls(
            SMBus(bus_number),
            address,
            cells=settings.cells,
            shunt_ohms=settings.shunt_ohms,
            capacity_mah=settings.capacity_mah,
            charging_current_positive=settings.charging_current_positive,
            low_percent=settings.low_percent,
        )

    def _register(self, register: int) -> int:
        hi, lo = self._bus.read_i2c_block_data(self.address, register, 2)
        return (hi << 8) | lo

    def _read(self) -> BatteryStatus:
        bus_raw = self._register(_INA219_BUS)
        if bus_raw & 0x1:
            raise OSError("INA219 reports a math overflow")
        volts = (bus_raw >> 3) * 0.004
        shunt_raw = self._register(_INA219_SHUNT)
        if shunt_raw & 0x8000:
            shunt_raw -= 0x10000
        current_ma = self._sign * shunt_raw * 10e-6 / self.shunt_ohms * 1000
        if volts < 0.5 * self.cells:
            raise OSError(f"implausible battery voltage {volts:.2f} V")
        percent = percent_from_voltage(volts, self.cells)
        # Above a small threshold current flows into the battery: a charger is on.
        charging = current_ma > 20
        minutes = None
        if current_ma < -20:
            minutes = int(self.capacity_mah * percent / 100 / -current_ma * 60)
        return BatteryStatus(
            percent=round(percent, 1),
            voltage=round(volts, 3),
            current_ma=round(current_ma, 1),
            charging=charging,
            external_power=current_ma > -20,
            minutes_left=minutes,
            source=self.name,
        )

    def close(self) -> None:
        close = getattr(self._bus, "close", None)
        if close is not None:
            close()


class SysfsBattery(Battery):
    """The kernel's ``/sys/class/power_supply`` (a fuel-gauge driver, e.g. on a PiSugar 3)."""

    name = "sysfs"

    def __init__(
        self,
        root: str | Path = "/sys/class/power_supply",
        supply: str | None = None,
        *,
        low_percent: float = 15.0,
    ) -> None:
        super().__init__(low_percent)
        self.root = Path(root)
        self.supply = supply

    def _supplies(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if (p / "type").exists())

    def _battery_dir(self) -> Path:
        if self.supply:
            return self.root / self.supply
        for path in self._supplies():
            if _read_text(path / "type") == "Battery":
                return path
        raise FileNotFoundError(f"no battery in {self.root}")

    def _read(self) -> BatteryStatus:
        bat = self._battery_dir()
        percent = float(_read_text(bat / "capacity"))
        status = _read_text(bat / "status", "Unknown")
        volts = _read_number(bat / "voltage_now", 1e-6)
        current = _read_number(bat / "current_now", 1e-3)  # uA -> mA
        online = [
            _read_text(p / "online", "0") == "1"
            for p in self._supplies()
            if _read_text(p / "type") in ("Mains", "USB", "USB_C", "USB_PD")
        ]
        external = any(online) if online else status in ("Charging", "Full", "Not charging")
        minutes = None
        tte = _read_number(bat / "time_to_empty_now", 1.0)
        if tte is not None:
            minutes = int(tte // 60)
        elif status == "Discharging":
            energy = _read_number(bat / "energy_now", 1.0)
            power = _read_number(bat / "power_now", 1.0)
            if energy and power:
                minutes = int(energy / power * 60)
        return BatteryStatus(
            percent=percent,
            voltage=None if volts is None else round(volts, 3),
            current_ma=current,
            charging=status == "Charging",
            external_power=external,
            minutes_left=minutes,
            source=self.name,
        )


def _read_text(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        if default is None:
            raise
        return default


def _read_number(path: Path, scale: float) -> float | None:
    try:
        return float(path.read_text().strip()) * scale
    except (OSError, ValueError):
        return None


class PiSugarBattery(Battery):
    """PiSugar 2/3 through pisugar-server's text protocol on TCP port 8423."""

    name = "pisugar"

    def __init__(self, address: str = "127.0.0.1:8423", *, timeout: float = 1.0,
                 low_percent: float = 15.0) -> None:
        super().__init__(low_percent)
        host, _, port = address.rpartition(":")
        self.host, self.port, self.timeout = host or "127.0.0.1", int(port), timeout

    def _query(self, sock: socket.socket, reader: Any, what: str) -> str:
        sock.sendall(f"get {what}\n".encode())
        line = reader.readline().decode().strip()
        key, sep, value = line.partition(":")
        if not sep or key.strip() != what:
            raise OSError(f"unexpected pisugar reply {line!r} to 'get {what}'")
        return value.strip()

    def _read(self) -> BatteryStatus:
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            reader = sock.makefile("rb")
            percent = float(self._query(sock, reader, "battery"))
            volts = float(self._query(sock, reader, "battery_v"))
            charging = self._query(sock, reader, "battery_charging") == "true"
            plugged = self._query(sock, reader, "battery_power_plugged") == "true"
        return BatteryStatus(
            percent=round(max(0.0, min(100.0, percent)), 1),
            voltage=round(volts, 3),
            charging=charging,
            external_power=plugged,
            source=self.name,
        )
