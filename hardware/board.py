"""Board definitions: which pin, bus address and setting each device uses.

A board is a TOML file (see ``hardware/boards/*.toml``). Loading validates it and
every error names the offending key, so a technician editing a board file is told
exactly which line to fix::

    >>> from hardware.board import load_board
    >>> board = load_board("pi4-cm3-waveshare")
    >>> board.pins.record_button
    17
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_BOARD = "pi4-cm3-waveshare"
ZERO_BOARD = "pizero2w-cm3"

# GPIO numbers on the 40-pin header a device may use. 0 and 1 are the HAT ID
# EEPROM bus, so they are left out on purpose.
HEADER_GPIOS = frozenset(range(2, 28))


class BoardError(ValueError):
    """A board file is malformed. ``key`` is the dotted key at fault (``pins.buzzer``)."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


@dataclass(frozen=True, slots=True)
class Pins:
    """BCM GPIO numbers of the buttons, inputs and outputs."""

    record_button: int
    marker_button: int
    function_button: int
    dock_detect: int
    recording_led: int
    status_led: int
    buzzer: int
    vibration: int


@dataclass(frozen=True, slots=True)
class I2CSettings:
    bus: int = 1
    battery_gauge: int | None = 0x42
    rtc: int | None = 0x68


@dataclass(frozen=True, slots=True)
class CameraSettings:
    width: int = 1920
    height: int = 1080
    fps: int = 30
    bitrate: int = 8_000_000
    keyframe_interval: int = 30
    encoder: str = "auto"  # auto | hardware | software
    overlay: bool = True
    camera_num: int = 0


@dataclass(frozen=True, slots=True)
class AudioSettings:
    interface: str = "i2s"  # i2s | usb
    backend: str = "sounddevice"  # sounddevice | pyaudio
    rate: int = 48_000
    block: int = 960
    input_device: str | None = None
    output_device: str | None = None


@dataclass(frozen=True, slots=True)
class BatterySettings:
    backend: str = "ina219"  # ina219 | sysfs | pisugar | none
    cells: int = 2
    shunt_ohms: float = 0.01
    capacity_mah: int = 3000
    low_percent: float = 15.0
    charging_current_positive: bool = True
    sysfs_root: str = "/sys/class/power_supply"
    sysfs_name: str | None = None
    pisugar_address: str = "127.0.0.1:8423"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: str = "/var/lib/custody"
    reserve_bytes: int = 256 * 1024 * 1024
    low_bytes: int = 2 * 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ClockSettings:
    rtc_device: str = "/dev/rtc0"
    rtc_sysfs: str = "/sys/class/rtc/rtc0"
    state_file: str | None = None


@dataclass(frozen=True, slots=True)
class SerialSettings:
    ports: tuple[str, ...] = ("ttyGS0", "ttyAMA0", "ttyS0")
    baudrate: int = 115_200


@dataclass(frozen=True, slots=True)
class Board:
    """A validated board definition."""

    name: str
    model: str
    pins: Pins
    i2c: I2CSettings = field(default_factory=I2CSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    battery: BatterySettings = field(default_factory=BatterySettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    serial: SerialSettings = field(default_factory=SerialSettings)


_SECTIONS: dict[str, type] = {
    "pins": Pins,
    "i2c": I2CSettings,
    "camera": CameraSettings,
    "audio": AudioSettings,
    "battery": BatterySettings,
    "storage": StorageSettings,
    "clock": ClockSettings,
    "serial": SerialSettings,
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "camera.encoder": ("auto", "hardware", "software"),
    "audio.interface": ("i2s", "usb"),
    "audio.backend": ("sounddevice", "pyaudio"),
    "battery.backend": ("ina219", "sysfs", "pisugar", "none"),
}

_POSITIVE = {
    "camera.width", "camera.height", "camera.fps", "camera.bitrate",
    "camera.keyframe_interval", "audio.rate", "audio.block", "battery.cells",
    "battery.capacity_mah", "battery.shunt_ohms", "serial.baudrate",
}


def board_names() -> list[str]:
    """Names of the board files shipped with the package."""
    folder = resources.files("hardware") / "boards"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def detect_pi_model(path: str = "/proc/device-tree/model") -> str | None:
    """The Pi's model string (``Raspberry Pi 4 Model B Rev 1.5``), or None off a Pi."""
    try:
        model = Path(path).read_bytes().rstrip(b"\0").decode(errors="replace")
    except OSError:
        return None
    return model if model.startswith("Raspberry Pi") else None


def default_board_name() -> str:
    """``CUSTODY_BOARD`` if set, else the shipped board matching this Pi."""
    env = os.environ.get("CUSTODY_BOARD")
    if env:
        return env
    model = detect_pi_model() or ""
    return ZERO_BOARD if "Zero 2" in model else DEFAULT_BOARD


def load_board(name_or_path: str | os.PathLike[str] | None = None) -> Board:
    """Load and validate a board by shipped name or by file path.

    ``None`` means :func:`default_board_name`. Raises :class:`BoardError`.
    """
    ref = os.fspath(name_or_path) if name_or_path is not None else default_board_name()
    if ref.endswith(".toml") or os.sep in ref:
        path = Path(ref)
        try:
            text = path.read_text()
        except OSError as exc:
            raise BoardError("board", f"cannot read board file: {exc}", str(path)) from exc
        return parse_board(text, source=str(path))
    resource = resources.files("hardware") / "boards" / f"{ref}.toml"
    if not resource.is_file():
        known = ", ".join(board_names())
        raise BoardError("board", f"no shipped board named {ref!r} (known: {known})")
    return parse_board(resource.read_text(), source=f"{ref}.toml")


def parse_board(text: str | dict[str, Any], source: str = "") -> Board:
    """Validate TOML text (or an already parsed table) into a :class:`Board`."""
    if isinstance(text, str):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BoardError("board", f"not valid TOML: {exc}", source) from exc
    else:
        data = text
    for key in data:
        if key != "board" and key not in _SECTIONS:
            raise BoardError(key, "unknown section", source)
    head = data.get("board", {})
    if not isinstance(head, dict):
        raise BoardError("board", "must be a table", source)
    for key in head:
        if key not in ("name", "model"):
            raise BoardError(f"board.{key}", "unknown key", source)
    name = head.get("name", Path(source).stem if source else "custom")
    model = head.get("model", "")
    if not isinstance(name, str) or not isinstance(model, str):
        raise BoardError("board.name", "name and model must be strings", source)
    if "pins" not in data:
        raise BoardError("pins", "missing section (every device needs a pin)", source)
    parts = {s: _section(s, cls, data.get(s, {}), source) for s, cls in _SECTIONS.items()}
    board = Board(name=name, model=model, **parts)
    _check_pins(board, source)
    return board


def _section(name: str, cls: type, table: Any, source: str) -> Any:
    if not isinstance(table, dict):
        raise BoardError(name, "must be a table", source)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in table:
        if key not in known:
            raise BoardError(f"{name}.{key}", "unknown key", source)
    values = {}
    for f in fields(cls):
        key = f"{name}.{f.name}"
        if f.name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                what = "missing device" if name == "pins" else "missing key"
                raise BoardError(key, what, source)
            continue
        value = _coerce(key, table[f.name], hints[f.name], source)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise BoardError(key, f"must be one of {', '.join(_CHOICES[key])}", source)
        if key in _POSITIVE and value <= 0:
            raise BoardError(key, "must be positive", source)
        values[f.name] = value
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(key, value, options[0], source)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BoardError(key, "expected a list of strings", source)
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise BoardError(key, f"expected true or false, got {value!r}", source)
        return value
    if hint is int:
        if key.startswith("pins."):
            return _pin_number(key, value, source)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BoardError(key, f"expected an integer, got {value!r}", source)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BoardError(key, f"expected a number, got {value!r}", source)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise BoardError(key, f"expected a string, got {value!r}", source)
        return value
    raise BoardError(key, f"unsupported type {hint!r}", source)  # pragma: no cover


def _pin_number(key: str, value: Any, source: str) -> int:
    """Accept ``17``, ``"GPIO17"`` or ``"BCM17"``; anything else is an unknown pin."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        for prefix in ("GPIO", "BCM"):
            if text.startswith(prefix) and text[len(prefix):].isdigit():
                number = int(text[len(prefix):])
    if number is None or number not in HEADER_GPIOS:
        raise BoardError(key, f"unknown pin {value!r} (use a BCM GPIO number 2-27)", source)
    return number


def _check_pins(board: Board, source: str) -> None:
    reserved: dict[int, str] = {}
    if board.i2c.battery_gauge is not None or board.i2c.rtc is not None:
        reserved.update({2: "I2C SDA", 3: "I2C SCL"})
    if board.audio.interface == "i2s":
        reserved.update({18: "I2S clock", 19: "I2S frame", 20: "I2S data in", 21: "I2S data out"})
    if any(p in ("ttyAMA0", "ttyS0") for p in board.serial.ports):
        reserved.update({14: "UART TX", 15: "UART RX"})
    used: dict[int, str] = {}
    for f in fields(Pins):
        key = f"pins.{f.name}"
        pin = getattr(board.pins, f.name)
        if pin in used:
            raise BoardError(key, f"GPIO{pin} is already used by {used[pin]}", source)
        if pin in reserved:
            raise BoardError(key, f"GPIO{pin} is reserved for {reserved[pin]}", source)
        used[pin] = key
