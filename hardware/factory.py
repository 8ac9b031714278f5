"""Choosing backends: one factory hands out every device, real or simulated.

    >>> from hardware.factory import get_factory
    >>> hw = get_factory()                 # CUSTODY_HW=sim|pi, CUSTODY_BOARD=name|path
    >>> camera = hw.camera(officer_id="4711")
    >>> controls, battery = hw.controls(), hw.battery()

As gpiozero has ``Device.pin_factory``, this package has one default factory:
:func:`get_factory` makes it on first use from the environment, :func:`set_factory`
swaps it (the ``sim_hardware`` pytest fixture does). The default backend is ``pi``:
a recorder must never quietly fall back to simulated evidence, so the simulator
is only ever used when asked for.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardware.board import Board, load_board
from hardware.camera import Camera, CameraConfig
from hardware.microphone import Microphone, MicrophoneConfig
from hardware.otp import OtpSecret, PiOtp

if TYPE_CHECKING:
    from hardware.battery import Battery
    from hardware.clock import Clock
    from hardware.controls import Controls
    from hardware.indicators import Indicators
    from hardware.serialport import SerialPort
    from hardware.speaker import Speaker
    from hardware.storage import Storage

#: Backend name -> "module:class" of its factory, imported only when chosen (as
#: gpiozero names its pin factories): this module never imports a backend.
BACKEND_FACTORIES: dict[str, str] = {
    "pi": "hardware.factory:PiFactory",
    "sim": "hardware.sim.factory:SimFactory",
}
BACKENDS = tuple(BACKEND_FACTORIES)
ENV_BACKEND = "CUSTODY_HW"


def backend_name(explicit: str | None = None) -> str:
    """``explicit``, else ``$CUSTODY_HW``, else ``pi``. Raises ValueError if unknown."""
    name = explicit or os.environ.get(ENV_BACKEND) or "pi"
    if name not in BACKENDS:
        raise ValueError(f"unknown hardware backend {name!r} (choose {' or '.join(BACKENDS)})")
    return name


class HardwareFactory(ABC):
    """Makes the devices of one board. Subclasses: :class:`PiFactory` and the simulator's."""

    name = "abstract"
    #: The recorder service waits for its world's start (``sim_begin``) before booting.
    waits_for_epoch = False

    @classmethod
    def for_service(cls, board: Board | None, epoch_unix_ns: int | None = None
                    ) -> HardwareFactory:
        """The factory the recorder service runs on (a simulated world: from its epoch)."""
        return cls(board)

    def control_commands(self) -> dict[str, Callable[..., dict]]:
        """Control-socket commands only this backend offers (a simulator's world), by name."""
        return {}

    @classmethod
    def otp_secret(cls, state_dir: Path | None = None) -> OtpSecret:
        """The board's OTP secret (a Pi's: through the firmware mailbox, root only).
        ``state_dir`` is where a simulated board keeps its own (never the store)."""
        return PiOtp()

    def __init__(self, board: Board | None = None) -> None:
        self.board = board if board is not None else load_board()

    def camera_config(self, config: CameraConfig | None = None, **overrides: Any) -> CameraConfig:
        if config is None:
            return CameraConfig.from_board(self.board.camera, **overrides)
        if overrides:
            from dataclasses import replace

            return replace(config, **overrides)
        return config

    def microphone_config(self, config: MicrophoneConfig | None = None) -> MicrophoneConfig:
        return config or MicrophoneConfig.from_board(self.board.audio)

    @abstractmethod
    def camera(self, config: CameraConfig | None = None, **overrides: Any) -> Camera:
        """A camera; keyword overrides change single fields of the board's settings."""

    def microphone(
        self, config: MicrophoneConfig | None = None, backend: str | None = None
    ) -> Microphone:
        """``backend``: sounddevice or pyaudio (real PortAudio), or sim where offered."""
        config = self.microphone_config(config)
        backend = backend or self.board.audio.backend
        if backend == "sounddevice" and not _sounddevice_usable():
            # PortAudio not loadable through sounddevice: PyAudio is the fallback.
            backend = "pyaudio"
        if backend == "sounddevice":
            from hardware.microphone import SoundDeviceMicrophone

            return SoundDeviceMicrophone(config)
        if backend == "pyaudio":
            from hardware.microphone import PyAudioMicrophone

            return PyAudioMicrophone(config)
        raise ValueError(f"unknown microphone backend {backend!r} for {self.name}")

    @abstractmethod
    def speaker(self) -> Speaker: ...

    @abstractmethod
    def controls(self, **options: Any) -> Controls: ...

    @abstractmethod
    def indicators(self) -> Indicators: ...

    @abstractmethod
    def battery(self) -> Battery: ...

    @abstractmethod
    def storage(self, path: str | None = None) -> Storage: ...

    @abstractmethod
    def clock(self) -> Clock: ...

    @abstractmethod
    def serial_port(self) -> SerialPort: ...

    def close(self) -> None:
        return None  # nothing to release by default

    def __enter__(self) -> HardwareFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} board={self.board.name}>"


class PiFactory(HardwareFactory):
    """The real devices of a Raspberry Pi. Each backend imports its library lazily."""

    name = "pi"

    def camera(self, config: CameraConfig | None = None, **overrides: Any) -> Camera:
        from hardware.picamera import PiCamera

        return PiCamera(self.camera_config(config, **overrides))

    def speaker(self) -> Speaker:
        from hardware.speaker import SoundDeviceSpeaker

        return SoundDeviceSpeaker.from_board(self.board.audio)

    def controls(self, **options: Any) -> Controls:
        from hardware.controls import Controls

        return Controls(self.board.pins, **options)

    def indicators(self) -> Indicators:
        from hardware.indicators import Indicators

        return Indicators(self.board.pins)

    def battery(self) -> Battery:
        from hardware import battery as b

        settings = self.board.battery
        if settings.backend == "ina219":
            if self.board.i2c.battery_gauge is None:
                return b.NoBattery(settings.low_percent)
            try:
                return b.INA219Battery.open(
                    self.board.i2c.bus, self.board.i2c.battery_gauge, settings
                )
            except (ImportError, OSError) as exc:
                # No smbus2 or no /dev/i2c-N: report unknown, don't stop the recorder.
                return b.UnreadableBattery(f"cannot open the INA219 gauge: {exc}", "ina219")
        if settings.backend == "sysfs":
            return b.SysfsBattery(
                settings.sysfs_root, settings.sysfs_name, low_percent=settings.low_percent
            )
        if settings.backend == "pisugar":
            return b.PiSugarBattery(settings.pisugar_address, low_percent=settings.low_percent)
        return b.NoBattery(settings.low_percent)

    def storage(self, path: str | None = None) -> Storage:
        from hardware.storage import Storage

        return Storage.from_board(self.board.storage, path)

    def clock(self) -> Clock:
        from hardware.clock import SystemClock

        c = self.board.clock
        return SystemClock(c.rtc_device, c.rtc_sysfs, c.state_file)

    def serial_port(self) -> SerialPort:
        from hardware.serialport import SerialPort

        return SerialPort(self.board.serial.ports, self.board.serial.baudrate)


def _sounddevice_usable() -> bool:
    try:
        import sounddevice  # noqa: F401 - loads the PortAudio library
    except (ImportError, OSError):
        return False
    return True


def factory_class(backend: str | None = None) -> type[HardwareFactory]:
    """The factory class of ``backend`` (see :func:`backend_name`), imported now."""
    module, _, cls = BACKEND_FACTORIES[backend_name(backend)].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_factory(backend: str | None = None, board: Board | str | None = None) -> HardwareFactory:
    """A new factory for ``backend`` (see :func:`backend_name`) and board name/path."""
    resolved = board if isinstance(board, Board) else load_board(board)
    return factory_class(backend)(resolved)


_default: HardwareFactory | None = None
_default_lock = threading.Lock()


def get_factory() -> HardwareFactory:
    """The process-wide factory, made from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = make_factory()
        return _default


def set_factory(factory: HardwareFactory | None) -> HardwareFactory | None:
    """Replace the process-wide factory; returns the previous one (None resets)."""
    global _default
    with _default_lock:
        previous, _default = _default, factory
        return previous
