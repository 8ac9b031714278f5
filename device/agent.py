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
import sys
import threading
from pathlib import Path
from typing import Any

from device.config import ConfigError, RecorderConfig
from device.console.devicelog import log_to_device_log
from device.console.maintenance import maintenance_commands
from device.control import ControlError, ControlServer, dispatch
from device.key_custody import (
    KeyCustodyError,
    load_signing_key,
    load_tls_key,
    public_key_bytes,
)
from device.ledger import LedgerWriter, entry_clock
from device.offload import Offloader, OffloadSettings, RecorderHost, client_tls
from device.receipts import ReceiptRefused
from device.recorder import Recorder, State
from device.sealer import check_store_keeps_marks
from device.status_report import StatusReporter, status_connection
from device.tls_identity import TlsIdentityError
from hardware.board import load_board
from hardware.factory import HardwareFactory, factory_class
from hardware.host.service import ServiceLife
from hardware.otp import OtpSecret
from protocol.keys import SigningKey, fingerprint
from protocol.store_reader import StoreError, read_trust

log = logging.getLogger("custody.recorder")

BUTTONS = ("record", "marker", "function")


def board_otp(config: RecorderConfig) -> OtpSecret:
    """The OTP secret of the board the recorder runs on (its backend knows where)."""
    try:
        return factory_class(config.hardware).otp_secret(config.otp_state_dir)
    except ValueError as e:
        raise ConfigError("otp_state_dir", str(e)) from None


class RecorderAgent:
    """The recorder process: settings, ledger, hardware, control socket, systemd."""

    def __init__(self, config: RecorderConfig):
        self.config = config
        check_store_keeps_marks(config.store)  # before anything is recorded there
        # Unwrapped by this board's OTP secret: a copied card starts nothing.
        self.key = load_signing_key(config.key_file, board_otp(config), config.device_id)
        # The TLS key too, unwrapped in memory only; a key of its own (ADR 0046).
        self.tls_key = load_device_tls_key(config, self.key.keyid)
        self.trust = read_trust(config.trust_file)
        self.archive_public = bytes.fromhex(
            self.trust.keys[self.trust.archive_encryption_key].public)
        self.hardware: HardwareFactory | None = None
        self.recorder: Recorder | None = None
        self.offloader: Offloader | None = None
        self.status_reporter: StatusReporter | None = None
        self.status_link = status_connection(config, self.tls_key)  # None: no broker
        self.ledger: LedgerWriter | None = None
        self.life = ServiceLife(self.healthy)
        self.stopped = self.life.stopped
        self._boot_lock = threading.Lock()
        self.server = ControlServer(config.control_socket, self._handle)

    # --- running ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            with self.life:
                self.server.start()
                if not (factory_class(self.config.hardware).waits_for_epoch
                        and self.config.sim_epoch_unix_ns is None):
                    self.boot(self.config.sim_epoch_unix_ns)
                self.life.wait()
        finally:
            self.shutdown()
        return 0

    def boot(self, epoch_unix_ns: int | None) -> None:
        """Open hardware and ledger, start capture: the recorder is then in standby."""
        with self._boot_lock:
            if self.recorder is not None:
                raise ControlError("already booted")
            c = self.config
            self.hardware = factory_class(c.hardware).for_service(
                load_board(c.board) if c.board else None, epoch_unix_ns)
            clock = self.hardware.clock()
            self.ledger = LedgerWriter(c.store, c.device_id, self.key, entry_clock(clock))
            self.recorder = Recorder(c, self.hardware, self.ledger, self.archive_public,
                                     clock=clock, trust=self.trust, prompts=load_prompts(c))
            self.recorder.on_power_down = self.stopped.set
            self.recorder.start()
            self.offloader = start_offloader(c, self.recorder, self.tls_key, self.key)
            if self.status_link is not None:  # its own threads: never holds up the recorder
                self.status_reporter = StatusReporter(self.status_link, self.trust.unit,
                                                      self._status,
                                                      c.mqtt_status_seconds).start()
        self.life.ready(f"standby; device {c.device_id}")
        log.info("ready: device %s, officer %r", c.device_id, self.recorder.officer)

    def shutdown(self) -> None:
        if self.status_reporter is not None:
            self.status_reporter.close()
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
        """The control socket's commands: the agent's own, then those only the
        hardware backend offers (a simulated world's, once booted)."""
        table: dict[str, Any] = {
            "status": self._status,
            "press": self._press,
            "marker": self._marker,
            "sim_begin": self._sim_begin,
            "receipt": self._receipt,
            "shutdown": self._shutdown,
            **maintenance_commands(self),  # the serial console's (device/console/)
        }
        if self.hardware is not None:
            backend = self.hardware.control_commands()
            if "press" in backend:  # its own buttons, pressed through their real path
                press_button = backend.pop("press")

                def press(button: str = "record", hold: float = 0.05) -> dict:
                    recorder = self._need()
                    press_button(button, hold)
                    return {"state": str(recorder.state)}

                table["press"] = press
            table.update(backend)
        return table

    def _handle(self, request: Any) -> dict:
        return dispatch(self._commands())(request)

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
        """A technician's press from the console (a backend with buttons of its own
        to press offers its own ``press``)."""
        recorder = self._need()
        if button not in BUTTONS:
            raise ControlError(f"no button {button!r}; buttons: {', '.join(BUTTONS)}")
        if button == "record":
            recorder.press_record()
        elif button == "marker":
            recorder.mark("other")
        return {"state": str(recorder.state)}

    def _marker(self, phase: str = "other") -> dict:
        return {"seq": self._need().mark(phase).entry.seq}

    def _sim_begin(self, epoch_unix_ns: int) -> dict:
        if not factory_class(self.config.hardware).waits_for_epoch:
            raise ControlError("only on simulated hardware")
        self.boot(epoch_unix_ns)
        return self._status()

    def _receipt(self, receipt: dict) -> dict:
        try:
            return {"freed": self._need().accept_receipt(receipt)}
        except ReceiptRefused as e:
            raise ControlError(f"receipt refused: {e}") from e

    def _shutdown(self) -> dict:
        self.stopped.set()
        return {}


def load_device_tls_key(config: RecorderConfig, signing_keyid: str) -> bytes | None:
    """The device's TLS key, unwrapped with the board's OTP secret (None: no dock).

    Refused if it is the ledger signing key: a thief of the one must not have both."""
    if not config.dock_url and not config.mqtt_broker:
        return None
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        if getattr(config, key) is None:
            raise ConfigError(key, "must be set with dock_url or mqtt_broker", config.source)
    assert config.tls_key_file is not None
    pem = load_tls_key(config.tls_key_file, board_otp(config), config.device_id)
    if fingerprint(public_key_bytes(pem)) == signing_keyid:
        raise KeyCustodyError(f"{config.tls_key_file}: is the ledger signing key; the TLS "
                              "key must be a key of its own (tls/devices/<id>.key)")
    settings = OffloadSettings.from_config(config, pem)
    if settings is not None:
        client_tls(settings)  # the certificate goes with the key: said now, not at docking
    return pem


def start_offloader(config: RecorderConfig, recorder: Recorder, tls_key: bytes | None,
                    device_key: SigningKey) -> Offloader | None:
    """The offloader beside the recorder, if a dock is configured (device/offload.py);
    the device key cosigns the dock's checkpoints of the device's log."""
    settings = OffloadSettings.from_config(config, tls_key)
    if settings is None:
        return None
    return Offloader(settings, config.store, config.device_id,
                     RecorderHost(recorder, device_key)).start()


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
    except (ConfigError, OSError, StoreError, ValueError, KeyCustodyError,
            TlsIdentityError) as e:  # names it
        print(f"custody recorder: {e}", file=sys.stderr)
        return 2
    return agent.run()
