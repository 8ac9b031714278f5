"""``custody recorder --config FILE``: the service systemd runs on the device.

It loads the settings, opens the device's ledger and hardware, runs the
:class:`~device.recorder.Recorder`, serves the owner-only control socket,
tells systemd when it is ready and pings its watchdog while healthy, and on
SIGTERM stops any recording cleanly (sealing it) before it exits.

Under ``custody sim`` (``hardware = "sim"``) the simulated world starts at the
scenario's start: if ``sim_epoch_unix_ns`` is not set, the agent waits in
``booting`` for the ``sim_begin`` command that gives it, then starts capture.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.config import ConfigError, RecorderConfig
from device.console.devicelog import log_to_device_log
from device.console.maintenance import maintenance_commands
from device.control import ControlError, ControlServer, dispatch
from device.key_custody import KeyCustodyError, load_signing_key
from device.ledger import LedgerWriter, entry_clock
from device.offload import Offloader, OffloadSettings, RecorderHost
from device.receipts import ReceiptRefused
from device.recorder import Recorder, State
from device.sdnotify import SystemdNotifier, WatchdogPinger, watchdog_interval
from device.sealer import check_store_keeps_marks
from hardware.factory import HardwareFactory, make_factory
from hardware.otp import OtpSecret, PiOtp
from protocol.store_reader import StoreError, read_trust

log = logging.getLogger("custody.recorder")

BUTTONS = ("record", "marker", "function")


def unix_to_monotonic_us(unix_ns: int) -> int:
    """A wall-clock instant on this boot's monotonic clock (for the simulator's epoch)."""
    return (unix_ns - (time.time_ns() - time.monotonic_ns())) // 1000


def board_otp(config: RecorderConfig) -> OtpSecret:
    """The OTP secret of the board the recorder runs on."""
    if config.hardware == "sim":
        from hardware.sim.otp import SimOtp

        if config.otp_state_dir is None:
            raise ConfigError("otp_state_dir", "must be set for the simulator (a folder "
                              "outside the store)")
        return SimOtp(config.otp_state_dir)
    return PiOtp()


class RecorderAgent:
    """The recorder process: settings, ledger, hardware, control socket, systemd."""

    def __init__(self, config: RecorderConfig):
        self.config = config
        check_store_keeps_marks(config.store)  # before anything is recorded there
        # Unwrapped by this board's OTP secret: a copied card starts nothing.
        self.key = load_signing_key(config.key_file, board_otp(config), config.device_id)
        self.trust = read_trust(config.trust_file)
        self.archive_public = bytes.fromhex(
            self.trust.keys[self.trust.archive_encryption_key].public)
        self.hardware: HardwareFactory | None = None
        self.recorder: Recorder | None = None
        self.offloader: Offloader | None = None
        self.ledger: LedgerWriter | None = None
        self.stopped = threading.Event()
        self._boot_lock = threading.Lock()
        self.notifier = SystemdNotifier()
        self.server = ControlServer(config.control_socket, dispatch(self._commands()))

    # --- running ---------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopped.set())
        self.server.start()
        try:
            if not (self.config.hardware == "sim" and self.config.sim_epoch_unix_ns is None):
                self.boot(self.config.sim_epoch_unix_ns)
            interval = watchdog_interval()
            pinger = None
            if interval:
                pinger = WatchdogPinger(self.notifier, interval, self.healthy)
                pinger.start()
            self.stopped.wait()
            self.notifier.stopping()
            if pinger:
                pinger.stop()
        finally:
            self.shutdown()
        return 0

    def boot(self, epoch_unix_ns: int | None) -> None:
        """Open hardware and ledger, start capture: the recorder is then in standby."""
        with self._boot_lock:
            if self.recorder is not None:
                raise ControlError("already booted")
            c = self.config
            if c.hardware == "sim":
                from hardware.sim.factory import SimFactory

                epoch = unix_to_monotonic_us(epoch_unix_ns) if epoch_unix_ns else None
                # The simulated camera encodes in its own process, as a Pi's
                # hardware encoder works outside the agent.
                self.hardware = SimFactory(epoch_us=epoch, camera_isolation="process")
                if os.environ.get("CUSTODY_SIM_BATTERY"):  # the level it had at power-off
                    self.hardware.battery().set_level(float(os.environ["CUSTODY_SIM_BATTERY"]))
            else:
                self.hardware = make_factory("pi", c.board)
            clock = self.hardware.clock()
            self.ledger = LedgerWriter(c.store, c.device_id, self.key, entry_clock(clock))
            self.recorder = Recorder(c, self.hardware, self.ledger, self.archive_public,
                                     clock=clock, trust=self.trust, prompts=load_prompts(c))
            self.recorder.on_power_down = self.stopped.set
            self.recorder.start()
            self.offloader = start_offloader(c, self.recorder)
        self.notifier.ready(f"standby; device {c.device_id}")
        log.info("ready: device %s, officer %r", c.device_id, self.recorder.officer)

    def shutdown(self) -> None:
        if self.offloader is not None:
            self.offloader.close()
        if self.recorder is not None:
            self.recorder.close("shutdown")
        self.server.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.hardware is not None:
            self.hardware.close()

    def healthy(self) -> bool:
        return self.recorder is None or self.recorder.healthy()

    # --- the control socket's commands ---------------------------------------------------

    def _commands(self) -> dict[str, Any]:
        return {
            "status": self._status,
            "press": self._press,
            "marker": self._marker,
            "sim_begin": self._sim_begin,
            "receipt": self._receipt,
            "speak": self._speak,
            "clock_jump": self._clock_jump,
            "battery": self._set_battery,
            "storage_left": self._storage_left,
            "dock": self._dock,
            "camera_fault": self._camera_fault,
            "camera_ok": self._camera_ok,
            "shutdown": self._shutdown,
            **maintenance_commands(self),  # the serial console's (device/console/)
        }

    def _need(self) -> Recorder:
        if self.recorder is None:
            raise ControlError("the recorder is still booting")
        return self.recorder

    def _status(self) -> dict:
        if self.recorder is None:
            return {"state": str(State.BOOTING), "device": self.config.device_id}
        status = self.recorder.status()
        if self.offloader is not None:
            status["offload"] = self.offloader.status()
        return status

    def _press(self, button: str = "record", hold: float = 0.05) -> dict:
        recorder = self._need()
        if button not in BUTTONS:
            raise ControlError(f"no button {button!r}; buttons: {', '.join(BUTTONS)}")
        from hardware.sim.factory import SimFactory

        if isinstance(self.hardware, SimFactory):
            self.hardware.press(button, hold)  # through the real gpiozero path
        elif button == "record":
            recorder.press_record()  # a technician's press from the console
        elif button == "marker":
            recorder.mark("other")
        return {"state": str(recorder.state)}

    def _marker(self, phase: str = "other") -> dict:
        return {"seq": self._need().mark(phase).entry.seq}

    def _sim(self) -> Any:
        from hardware.sim.factory import SimFactory

        if not isinstance(self.hardware, SimFactory):
            raise ControlError("only on simulated hardware")
        return self.hardware

    def _sim_begin(self, epoch_unix_ns: int) -> dict:
        if self.config.hardware != "sim":
            raise ControlError("only on simulated hardware")
        self.boot(epoch_unix_ns)
        return self._status()

    def _speak(self, seconds: float = 2.0) -> dict:
        self._sim().speak(seconds)
        return {}

    def _clock_jump(self, seconds: float) -> dict:
        self._sim().clock().jump(seconds)
        return {}

    def _receipt(self, receipt: dict) -> dict:
        try:
            return {"freed": self._need().accept_receipt(receipt)}
        except ReceiptRefused as e:
            raise ControlError(f"receipt refused: {e}") from e

    def _set_battery(self, percent: float) -> dict:
        self._sim().battery().set_level(percent)
        return {}

    def _storage_left(self, bytes: int) -> dict:
        storage = self._need().storage
        from hardware.sim.storage import SimStorage, directory_bytes

        if not isinstance(storage, SimStorage):
            raise ControlError("only on simulated hardware")
        storage.capacity_bytes = directory_bytes(storage.path) + bytes
        return {"free_bytes": storage.status().free_bytes}

    def _camera_fault(self) -> dict:
        self._sim()
        camera = self._need().camera
        assert camera is not None
        camera.stop()  # the sensor stops delivering, as a failed camera does
        return {}

    def _camera_ok(self) -> dict:
        self._sim()
        camera = self._need().camera
        assert camera is not None
        camera.start()
        return {}

    def _dock(self, docked: bool = True) -> dict:
        self._sim().set_docked(docked)
        return {}

    def _shutdown(self) -> dict:
        self.stopped.set()
        return {}


def start_offloader(config: RecorderConfig, recorder: Recorder) -> Offloader | None:
    """The offloader beside the recorder, if a dock is configured (device/offload.py)."""
    settings = OffloadSettings.from_config(config)
    if settings is None:
        return None
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        if getattr(config, key) is None:
            raise ConfigError(key, "must be set with dock_url", config.source)
    return Offloader(settings, config.store, config.device_id, RecorderHost(recorder)).start()


def load_prompts(config: RecorderConfig) -> object | None:
    """The installed spoken prompts, or None (then the prompt is vibration only)."""
    try:
        from device.prompts import PromptLibrary

        return PromptLibrary(language=config.language)
    except Exception as e:  # a missing prompt must never stop the recorder
        log.warning("spoken prompts unavailable (%s); prompting by vibration only", e)
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the recorder's TOML settings")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = RecorderConfig.from_file(args.config)
        config.require_identity()
        log_to_device_log(config.log_file)  # the device's log, which the console shows
        agent = RecorderAgent(config)
    except (ConfigError, OSError, StoreError, ValueError, KeyCustodyError) as e:  # names it
        print(f"custody recorder: {e}", file=sys.stderr)
        return 2
    return agent.run()
