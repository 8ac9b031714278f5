"""``custody sim SCENARIO.toml --out DIR``: a shift on simulated hardware, in real time.

Each recorder runs in a process of its own (``custody recorder``), exactly as
systemd would run it, so that ``power_cut`` is a real hard kill: no chance to
seal, whatever was in memory is gone. This runner provisions a demo unit,
starts the agent, drives it through its control socket at each step's time,
and leaves::

    DIR/keys/        the unit: trust.json and, for tests only, archive-secret.key
    DIR/device/      the device store
    DIR/device-keys/ the device's signing and TLS keys, wrapped by the simulated board's OTP secret
    DIR/otp/         the simulated board's OTP secret (the board, not the card)
    DIR/recorder.toml, DIR/recorder.log   the agent's settings and log
    DIR/device.log   the device's log (recorder and console)
    DIR/console.log  what each ``console`` step's session showed
    DIR/keys/technician-password   technician ``tech``'s console password (tests, demo)
    DIR/archive/     the dock's archive, when the scenario docks (a real `custody dock`)
    DIR/dock.toml, DIR/dock.log           the dock's settings and log
    DIR/attestations.json  the attestations the dock published over MQTT, as received
    DIR/mosquitto.log      the run's Mosquitto's log
    DIR/sim.json     when each step really ran, and the scenario's epoch

A scenario of several devices (``[devices.NAME]``) runs one recorder per device
(:mod:`device.sim_shift`); each device's files are then in ``DIR/devices/NAME/``
(its store in ``store/``), beside the one ``keys/``, ``archive/`` and dock.

The simulated camera's epoch is the scenario's start, so a frame's index is
the number of frame periods since t = 0. The format: docs/scenarios.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from device.config import ConfigError, RecorderConfig
from device.console.simsession import run_console_session
from device.control import ControlClient, ControlError
from device.scenario import Scenario, ScenarioError, Step, load_scenario
from device.sim_unit import DOCK, UNIT, SimDock, SimError, SimUnit

__all__ = ["DEVICE", "DOCK", "OFFICER", "UNIT", "SimError", "SimRunner"]

DEVICE, OFFICER = "DEV-SIM-0001", "PC-SIM-01"
READY_TIMEOUT_S = 30
ATTEST_TIMEOUT_S = 30
#: Steps done to the device itself: while it is off they do nothing.
DEVICE_STEPS = {"press_record", "press_marker", "hold_function", "speak", "clock_jump",
                "camera_fault", "camera_ok", "storage_left"}


class SimRunner:
    """Runs one device of a scenario: a recorder process on simulated hardware.

    On its own (``unit`` not given) it is the whole run of a one-device scenario:
    it provisions the unit in ``out`` and, if the scenario docks, starts the dock.
    Given a ``unit`` and a device ``name``, it is that device of a scenario of
    several, its files in ``out/devices/<name>/`` (:class:`device.sim_shift.ShiftRunner`).
    """

    def __init__(self, scenario: Scenario, out: Path, unit: SimUnit | None = None,
                 name: str | None = None, broker: str | None = None,
                 keys_from: Path | None = None):
        out = out.resolve()  # the settings file names its paths absolutely
        self.scenario, self.out, self.name, self.broker = scenario, out, name, broker
        if unit is None:
            if out.exists() and any(out.iterdir()):
                raise SimError(f"{out}: not empty; give a new folder")
            unit = SimUnit(out, keys_from)
        self.unit, self.owns_unit = unit, name is None
        if name is None:  # one device: its files straight in DIR, as they always were
            self.root, self.device_id, self.officer = out, DEVICE, OFFICER
            self.store, self.steps = out / "device", scenario.steps
        else:
            spec = scenario.devices[name]
            self.root, self.device_id, self.officer = out / "devices" / name, name, spec.officer
            self.store, self.steps = self.root / "store", scenario.steps_for(name)
        self.keys = unit.keys
        self.config_path, self.log_path = self.root / "recorder.toml", self.root / "recorder.log"
        self._socket_dir = Path(tempfile.mkdtemp(prefix="custody-sim-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: ControlClient | None = None
        self.epoch_unix_ns = 0
        self.power_ons = 0
        self.battery: float | None = None  # the simulated battery's level, across power-offs
        self.charger = False  # plugged in by a power_restore after a battery shutdown
        self.warnings: list[str] = []
        self.power_cut_last = False
        self.log: list[dict[str, Any]] = []
        self.final_status: dict[str, Any] | None = None  # the recorder's, just before the end
        self.dock: SimDock | None = None
        self.config = self._provision()

    def _provision(self) -> RecorderConfig:
        from daemon.provision import device_key_path, enrol_device, load_signing_key
        from device.key_custody import wrap_signing_key, write_wrapped_key
        from device.ledger import system_clock
        from device.otp_cli import program_otp
        from hardware.sim.otp import SimOtp

        device = self.device_id
        self.root.mkdir(parents=True, exist_ok=True)
        enrol_device(self.keys, device, self.store, system_clock(), officer=self.officer,
                     by="TECH-SIM")
        # The simulated board: its OTP outside the store, the key on the "card" wrapped by it.
        otp_dir, key_file = self.root / "otp", self.root / "device-keys" / "signing.key"
        otp = SimOtp(otp_dir)
        program_otp(otp, dry_run=False, confirm=lambda _: True)
        write_wrapped_key(key_file, wrap_signing_key(
            load_signing_key(device_key_path(self.keys, device)), otp.read() or b"", device))
        base = RecorderConfig.from_toml("").with_overrides({
            "technicians_file": str(self.unit.technicians),
            "log_file": str(self.root / "device.log"),
            "reboot_command": "true", "poweroff_command": "true",
            "device_id": device, "store": str(self.store),
            "key_file": str(key_file), "otp_state_dir": str(otp_dir),
            "trust_file": str(self.keys / "trust.json"),
            "control_socket": str(self._socket_dir / "recorder.sock"), "hardware": "sim",
        }, source="custody sim")
        return self.scenario.recorder_config(base, self.name)

    # --- the agent process ----------------------------------------------------------------

    def _write_config(self) -> None:
        self.config_path.write_text(self.config.to_toml())

    def power_on(self) -> None:
        self._write_config()
        self.power_ons += 1
        env = dict(os.environ, CUSTODY_BOOT_ID=f"sim-boot-{self.power_ons}")
        if self.battery is not None:
            env["CUSTODY_SIM_BATTERY"] = str(self.battery)
        if self.charger:
            env["CUSTODY_SIM_CHARGER"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "custody_cli", "recorder", "--config",
                 str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env)  # own process group: a cut kills it all
        self.client = ControlClient(self.config.control_socket, timeout=10)

    def wait_for(self, state: str) -> dict[str, Any]:
        assert self.proc is not None and self.client is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SimError(f"the recorder exited with {self.proc.returncode}; "
                               f"see {self.log_path}")
            try:
                status = self.client.call("status")
                if status.get("state") == state:
                    return status
            except ControlError:
                pass
            time.sleep(0.05)
        raise SimError(f"the recorder was not {state} within {READY_TIMEOUT_S} s; "
                       f"see {self.log_path}")

    def power_cut(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # already off (a battery shutdown)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.client is not None:
            self.client.close()

    def power_off_cleanly(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise SimError(f"the recorder did not stop within 60 s; see {self.log_path}") from None

    # --- the scenario -------------------------------------------------------------------------

    def attach_dock(self, dock: SimDock) -> None:
        """Give the device the dock's address, its own TLS certificate with the key
        wrapped by this board's OTP (as on a real device, ADR 0046), and the broker
        for its status."""
        self.dock = dock
        settings = dock.device_settings(self.device_id)
        settings["tls_key_file"] = str(self._wrapped_tls_key(Path(settings["tls_key_file"])))
        if dock.broker_url:
            settings["mqtt_broker"] = dock.broker_url
        self.config = self.config.with_overrides(settings, source="custody sim")

    def _wrapped_tls_key(self, plain: Path) -> Path:
        """The device's TLS key on the "card", wrapped by the simulated board's OTP."""
        from device.key_custody import wrap_tls_key, write_wrapped_key
        from hardware.sim.otp import SimOtp

        path = self.root / "device-keys" / "tls.key"
        if not path.exists():
            secret = SimOtp(self.root / "otp").read() or b""
            write_wrapped_key(path, wrap_tls_key(plain.read_bytes(), secret, self.device_id))
        return path

    def wait_offloaded(self, timeout: float = 60.0) -> None:
        """Before the end while docked: let the offload in progress finish."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.call("status")
            offload = status.get("offload") or {}
            if not status.get("docked") or offload.get("state") in ("done", "failed"):
                return
            time.sleep(0.1)

    # --- the run in its phases (a run of several devices does each for all) -----------------

    def boot(self) -> None:
        self.power_on()
        self.wait_for("booting")

    def begin(self, epoch_unix_ns: int) -> None:
        """The scenario's t = 0 for the simulated world; then wait until it is ready."""
        assert self.client is not None
        self.epoch_unix_ns = epoch_unix_ns
        self.client.call("sim_begin", epoch_unix_ns=epoch_unix_ns)
        # later starts (after a power cut) keep the scenario's epoch
        self.config = replace(self.config, sim_epoch_unix_ns=epoch_unix_ns)

    def run_steps(self, start: float) -> int:
        """Each step at its time (``start``: t = 0 on the monotonic clock)."""
        exit_code = 0
        for step in self.steps:
            delay = start + step.t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ran_at = time.monotonic() - start
            entry = {"step": step.number, "t": step.t, "do": step.action,
                     "ran_at": round(ran_at, 3), **dict(step.params)}
            if step.device is not None:
                entry["device"] = step.device
            exit_code = self.do(step, entry)
            self.log.append(entry)
        return exit_code

    def stop(self) -> None:
        """Whatever is still running of this device is cut (a run that failed half-way)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def run(self) -> int:
        """The whole run of a one-device scenario."""
        dock = None
        try:
            if any(step.action == "dock" for step in self.scenario.steps):
                dock = SimDock(self.unit, self.broker)
                dock.start()
                self.attach_dock(dock)
            self.boot()
            epoch = time.time_ns()
            self.begin(epoch)
            self.wait_for("standby")
            code = self.run_steps(time.monotonic() - (time.time_ns() - epoch) / 1e9)
            if dock is not None:
                for device in dock.wait_attested([self.device_id], ATTEST_TIMEOUT_S):
                    self.warnings.append(f"no attestation of {device}'s last offload "
                                         f"within {ATTEST_TIMEOUT_S} s; see {self.out}/dock.log")
                    print(f"custody sim: warning: {self.warnings[-1]}", file=sys.stderr)
            return code
        finally:
            self.stop()
            if dock is not None:
                dock.stop()
            self._write_log()

    @property
    def is_on(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _warn(self, step: Step, entry: dict[str, Any], message: str) -> None:
        text = f"step {step.number} ({step.action} at t = {step.t}): {message}"
        self.warnings.append(text)
        entry["warning"] = message
        print(f"custody sim: warning: {text}", file=sys.stderr)

    def _device_off(self) -> bool:
        """Off, or on its way off (a battery shutdown): then it ignores what is done to it."""
        if self.proc is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)  # a shutdown in progress ends
        return self.proc.poll() is not None

    def do(self, step: Step, entry: dict[str, Any] | None = None) -> int:
        """Run one step. A press (or anything done to the device) while it is off does
        nothing, as on a real device: the step is logged as ignored and the run goes on."""
        entry = {} if entry is None else entry
        if step.action in DEVICE_STEPS and not self.is_on:
            entry["ignored"] = "the device is off"
            return 0
        try:
            return self._do(step, entry)
        except ControlError:
            if step.action in DEVICE_STEPS and self._device_off():
                entry["ignored"] = "the device switched off"
                return 0
            raise

    def _do(self, step: Step, entry: dict[str, Any]) -> int:
        client, p = self.client, step.params
        assert client is not None
        match step.action:
            case "press_record":
                client.call("press", button="record")
            case "press_marker":
                client.call("press", button="marker")
            case "hold_function":
                client.call("press", button="function", hold=p["seconds"])
            case "speak":
                status = client.call("status")
                if status.get("voice_note") and not status.get("voice_note_listening"):
                    self._warn(step, entry, "falls inside the spoken prompt: the device does "
                               "not listen while it speaks, so this is not the answer")
                client.call("speak", seconds=p["seconds"])
            case "clock_jump":
                client.call("clock_jump", seconds=p["seconds"])
            case "battery":
                self.battery = p["percent"]
                if self.proc is not None and self.proc.poll() is None:
                    client.call("battery", percent=p["percent"])
            case "camera_fault" | "camera_ok":
                client.call(step.action)
            case "storage_left":
                client.call("storage_left", bytes=p["bytes"])
            case "dock" | "undock":
                if self.proc is not None and self.proc.poll() is None:
                    client.call("dock", docked=step.action == "dock")
            case "power_cut":
                self.power_cut()
                self.power_cut_last = True
            case "power_restore":
                if self.is_on and not self._device_off():
                    entry["ignored"] = "the device is on"
                    return 0
                if self.proc is not None and self.proc.returncode == 0 and \
                        not self.power_cut_last:
                    self.charger = True  # it switched itself off: the charger goes in
                if self.client is not None:
                    self.client.close()
                self.power_cut_last = False
                self.power_on()
                self.wait_for("standby")
            case "console":
                transcript = run_console_session(
                    self.config_path, self.keys, p["commands"],
                    press=lambda button: client.call("press", button=button))
                with open(self.out / "console.log", "a", encoding="utf-8") as f:
                    f.write(transcript)
            case "end":
                if self.proc is not None and self.proc.poll() is None:
                    if self.dock is not None:
                        self.wait_offloaded()
                    self.final_status = client.call("status")
                    return self.power_off_cleanly()
        return 0

    def summary(self) -> dict[str, Any]:
        """What ``sim.json`` says of this device."""
        return {"device": self.device_id, "officer": self.officer, "fps": self.config.fps,
                "steps": self.log, "warnings": self.warnings,
                "final_status": self.final_status}

    def _write_log(self) -> None:
        (self.out / "sim.json").write_text(json.dumps(
            {"epoch_unix_ns": self.epoch_unix_ns, **self.summary()}, indent=2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="the scenario (docs/scenarios.md)")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the results")
    parser.add_argument("--broker", help="mqtts://HOST:PORT: attest over this existing broker "
                        "instead of starting one (needs --keys: a unit it knows)")
    parser.add_argument("--keys", type=Path, help="an existing unit's key folder "
                        "(`custody provision unit`) to copy into DIR/keys instead of a new unit")


def stop_on_sigterm() -> None:
    """SIGTERM (or a closed terminal) ends the run as Ctrl-C does: through its ``finally``,
    which stops every process it started."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def run(args: argparse.Namespace) -> int:
    from device.sim_shift import ShiftRunner

    if args.broker is not None and args.keys is None:
        print("custody sim: --broker needs --keys: the unit whose CA and ACL the broker has "
              "(`custody provision unit`, `custody provision mosquitto`)", file=sys.stderr)
        return 2
    runner: SimRunner | ShiftRunner
    try:
        scenario = load_scenario(args.scenario)
        if scenario.devices:
            runner = ShiftRunner(scenario, args.out, args.broker, args.keys)
        else:
            runner = SimRunner(scenario, args.out, broker=args.broker, keys_from=args.keys)
    except (ScenarioError, ConfigError, SimError) as e:
        print(f"custody sim: {e}", file=sys.stderr)
        return 2
    stop_on_sigterm()
    try:
        code = runner.run()
    except (SimError, ControlError) as e:
        print(f"custody sim: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("custody sim: stopped; everything it started is stopped", file=sys.stderr)
        return 130
    print(f"custody sim: done; results in {runner.out}, keys {runner.unit.keys}")
    return code
