"""The simulator's factory: every device of a board, simulated, plus handles to drive them.

    >>> from hardware.sim.factory import SimFactory
    >>> with SimFactory() as sim:
    ...     controls = sim.controls()
    ...     sim.press("record")              # drives the mock GPIO pin
    ...     controls.read_event(timeout=1)
    <ControlEvent.RECORD: 'record'>

Camera and microphone share the factory's epoch, so frame n and audio sample m line
up on the same capture clock and the tone's second matches the frame index's.
Stateful parts - battery, clock, storage, the console cable, the GPIO pins - are
one per factory, so a test and the code under test see the same simulated device.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from hardware.board import Board
from hardware.camera import Camera, CameraConfig, monotonic_us
from hardware.controls import Controls
from hardware.factory import HardwareFactory
from hardware.indicators import Indicators
from hardware.microphone import Microphone, MicrophoneConfig
from hardware.otp import OtpSecret
from hardware.serialport import SerialPort
from hardware.sim.battery import SimBattery
from hardware.sim.camera import SimCamera
from hardware.sim.clock import SimClock
from hardware.sim.microphone import SimMicrophone
from hardware.sim.serial import SimSerialCable
from hardware.sim.speaker import SimSpeaker
from hardware.sim.storage import SimStorage, directory_bytes

BUTTONS = {"record": "record_button", "marker": "marker_button", "function": "function_button"}


class SimFactory(HardwareFactory):
    name = "sim"
    waits_for_epoch = True

    @classmethod
    def for_service(cls, board: Board | None, epoch_unix_ns: int | None = None) -> SimFactory:
        """The recorder service's simulated world, started at ``epoch_unix_ns``.

        The simulated camera encodes in its own process, as a Pi's hardware
        encoder works outside the agent; ``CUSTODY_SIM_BATTERY`` is the level
        the battery had at the last power-off; ``CUSTODY_SIM_CHARGER`` that a
        charger is plugged in.
        """
        epoch = None
        if epoch_unix_ns:  # the wall-clock instant on this boot's monotonic clock
            epoch = (epoch_unix_ns - (time.time_ns() - time.monotonic_ns())) // 1000
        factory = cls(board, epoch_us=epoch, camera_isolation="process")
        if os.environ.get("CUSTODY_SIM_BATTERY"):
            factory.battery().set_level(float(os.environ["CUSTODY_SIM_BATTERY"]))
        if os.environ.get("CUSTODY_SIM_CHARGER"):  # plugged in after a battery shutdown
            factory.battery().charge()
        return factory

    @classmethod
    def otp_secret(cls, state_dir: Path | None = None) -> OtpSecret:
        """The simulated board's OTP secret, kept in ``state_dir`` (the board, not the card)."""
        from hardware.sim.otp import SimOtp

        if state_dir is None:
            raise ValueError("a simulated board keeps its OTP secret in otp_state_dir: set it "
                             "(a folder outside the store)")
        return SimOtp(state_dir)

    def control_commands(self) -> dict[str, Callable[..., dict]]:
        """What a scenario does to this world through the recorder's control socket."""

        def press(button: str = "record", hold: float = 0.05) -> dict:
            if button not in BUTTONS:
                raise ValueError(f"no button {button!r}; buttons: {', '.join(BUTTONS)}")
            self.press(button, hold)  # through the real gpiozero path
            return {}

        def speak(seconds: float = 2.0) -> dict:
            self.speak(seconds)
            return {}

        def clock_jump(seconds: float) -> dict:
            self.clock().jump(seconds)
            return {}

        def battery(percent: float) -> dict:
            self.battery().set_level(percent)
            return {}

        def storage_left(bytes: int) -> dict:  # noqa: A002 - the command's argument name
            for storage in self.storages:
                storage.capacity_bytes = directory_bytes(storage.path) + bytes
            return {"free_bytes": min((s.status().free_bytes for s in self.storages),
                                      default=0)}

        def dock(docked: bool = True) -> dict:
            self.set_docked(docked)
            return {}

        def camera_fault() -> dict:
            for camera in self.cameras:
                camera.stop()  # the sensor stops delivering, as a failed camera does
            return {}

        def camera_ok() -> dict:
            for camera in self.cameras:
                camera.start()
            return {}

        return {"press": press, "speak": speak, "clock_jump": clock_jump, "battery": battery,
                "storage_left": storage_left, "dock": dock, "camera_fault": camera_fault,
                "camera_ok": camera_ok}

    def __init__(
        self,
        board: Board | None = None,
        *,
        epoch_us: int | None = None,
        realtime: bool = True,
        storage_root: str | Path | None = None,
        capacity_bytes: int = 1 << 30,
        pin_factory: MockFactory | None = None,
        camera_isolation: str = "thread",
    ) -> None:
        super().__init__(board)
        self.epoch_us = monotonic_us() if epoch_us is None else epoch_us
        self.realtime = realtime
        self.camera_isolation = camera_isolation
        self.capacity_bytes = capacity_bytes
        self.pin_factory = pin_factory if pin_factory is not None else MockFactory()
        self._own_root = storage_root is None
        self.storage_root = Path(storage_root or tempfile.mkdtemp(prefix="custody-sim-"))
        self._battery: SimBattery | None = None
        self._clock: SimClock | None = None
        self._cable: SimSerialCable | None = None
        self.microphones: list[SimMicrophone] = []
        self.cameras: list[SimCamera] = []
        self.storages: list[SimStorage] = []
        self._closables: list[Any] = []

    # -- devices ----------------------------------------------------------------------

    def camera(self, config: CameraConfig | None = None, **overrides: Any) -> Camera:
        camera = SimCamera(
            self.camera_config(config, **overrides),
            epoch_us=self.epoch_us,
            realtime=self.realtime,
            isolation=self.camera_isolation,
            wall_clock=self.clock().now if self.camera_isolation == "thread" else time.time,
        )
        self.cameras.append(camera)
        return camera

    def microphone(
        self, config: MicrophoneConfig | None = None, backend: str | None = None
    ) -> Microphone:
        """The simulated microphone, or ``backend="sounddevice"``/``"pyaudio"`` for real
        PortAudio capture (on a PC: from a PulseAudio null sink, see ``pulse.py``)."""
        if backend not in (None, "sim"):
            return super().microphone(config, backend)
        mic = SimMicrophone(
            self.microphone_config(config), epoch_us=self.epoch_us, realtime=self.realtime
        )
        self.microphones.append(mic)
        return mic

    def speaker(self) -> SimSpeaker:
        return SimSpeaker(realtime=self.realtime)

    def controls(self, **options: Any) -> Controls:
        controls = Controls(self.board.pins, pin_factory=self.pin_factory, **options)
        self._closables.append(controls)
        return controls

    def indicators(self) -> Indicators:
        indicators = Indicators(self.board.pins, pin_factory=self.pin_factory)
        self._closables.append(indicators)
        return indicators

    def battery(self) -> SimBattery:
        if self._battery is None:
            b = self.board.battery
            self._battery = SimBattery(
                cells=b.cells, capacity_mah=b.capacity_mah, low_percent=b.low_percent
            )
        return self._battery

    def storage(self, path: str | None = None) -> SimStorage:
        s = self.board.storage
        storage = SimStorage(
            path or self.storage_root / "store",
            self.capacity_bytes,
            reserve_bytes=min(s.reserve_bytes, self.capacity_bytes // 10),
            low_bytes=min(s.low_bytes, self.capacity_bytes // 5),
        )
        self.storages.append(storage)
        return storage

    def clock(self) -> SimClock:
        if self._clock is None:
            self._clock = SimClock()
        return self._clock

    def serial_port(self) -> SerialPort:
        port = self.cable.open_device_end(self.board.serial.baudrate)
        self._closables.append(port)
        return port

    # -- handles for tests --------------------------------------------------------------

    @property
    def cable(self) -> SimSerialCable:
        """The console cable; ``sim.cable.technician`` is the technician's end."""
        if self._cable is None:
            self._cable = SimSerialCable()
        return self._cable

    def pin(self, name_or_number: str | int) -> Any:
        """The mock pin behind a board pin name (``"record_button"``) or GPIO number."""
        if isinstance(name_or_number, str):
            name = BUTTONS.get(name_or_number, name_or_number)
            name_or_number = getattr(self.board.pins, name)
        return self.pin_factory.pin(name_or_number)

    def press(self, button: str, hold: float = 0.05) -> None:
        """Press and release a button (``record``, ``marker``, ``function``)."""
        pin = self.pin(button)
        pin.drive_low()
        time.sleep(hold)
        pin.drive_high()

    def set_docked(self, docked: bool) -> None:
        pin = self.pin("dock_detect")
        if docked:
            pin.drive_low()
        else:
            pin.drive_high()

    def speak(self, seconds: float = 2.0, samples: Any = None) -> None:
        """The officer speaks: every running simulated microphone hears it."""
        for mic in self.microphones:
            if mic.is_active:
                mic.speak(seconds, samples)

    def close(self) -> None:
        for item in reversed(self._closables):
            item.close()
        self._closables.clear()
        for device in (*self.cameras, *self.microphones):
            device.close()
        if self._cable is not None:
            self._cable.close()
        if self._battery is not None:
            self._battery.close()
        self.pin_factory.reset()
        if self._own_root:
            shutil.rmtree(self.storage_root, ignore_errors=True)
