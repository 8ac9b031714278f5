"""A ``custody sim`` scenario of several devices: one recorder each, one dock for all.

Every device of ``[devices.NAME]`` is a :class:`device.sim.SimRunner` of its
own (own process, store, simulated board and control socket, its files in
``DIR/devices/NAME/``); they share the unit (``DIR/keys``) and, when the
scenario docks, one :class:`device.sim_unit.SimDock`: a Mosquitto, the dock
and the listener that keeps each attestation.

All recorders boot together and share one t = 0; then each device's steps run
in a thread of their own, so that one device's slow step (a boot after a
power cut, a console session) does not hold up another's: two ``dock`` steps
at the same ``t`` dock both devices at once. At ``end`` every device ends as
in a one-device run (a docked one finishes its offload first); the run then
waits until every archived range is attested, and stops everything it started.

``DIR/sim.json`` holds the epoch, each device's steps, warnings and final
status under ``devices``, and the number of attestations received per device.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.scenario import Scenario
from device.sim import ATTEST_TIMEOUT_S, SimRunner
from device.sim_unit import SimDock, SimError, SimUnit


class ShiftRunner:
    """Runs a scenario of several devices; see the module doc."""

    def __init__(self, scenario: Scenario, out: Path, broker: str | None = None,
                 keys_from: Path | None = None):
        out = out.resolve()
        if out.exists() and any(out.iterdir()):
            raise SimError(f"{out}: not empty; give a new folder")
        self.scenario, self.out, self.broker = scenario, out, broker
        self.unit = SimUnit(out, keys_from)
        self.devices = {name: SimRunner(scenario, out, self.unit, name)
                        for name in scenario.devices}
        self.dock: SimDock | None = None
        self.epoch_unix_ns = 0
        self.warnings: list[str] = []

    def run(self) -> int:
        runners = list(self.devices.values())
        try:
            if any(step.action == "dock" for step in self.scenario.steps):
                self.dock = SimDock(self.unit, self.broker)
                self.dock.start()
                for runner in runners:
                    runner.attach_dock(self.dock)
            for runner in runners:  # all boot at once; each is its own process
                runner.power_on()
            for runner in runners:
                runner.wait_for("booting")
            epoch = time.time_ns()
            for runner in runners:
                runner.begin(epoch)
            for runner in runners:
                runner.wait_for("standby")
            self.epoch_unix_ns = epoch
            code = self._run_steps(runners, time.monotonic() - (time.time_ns() - epoch) / 1e9)
            if self.dock is not None:
                for device in self.dock.wait_attested(list(self.devices), ATTEST_TIMEOUT_S):
                    self._warn(f"no attestation of {device}'s last offload within "
                               f"{ATTEST_TIMEOUT_S} s; see {self.out / 'dock.log'}")
            return code
        finally:
            for runner in runners:
                runner.stop()
            if self.dock is not None:
                self.dock.stop()
            self._write_log()

    def _run_steps(self, runners: list[SimRunner], start: float) -> int:
        codes: dict[str, int] = {}
        errors: list[BaseException] = []

        def steps_of(runner: SimRunner) -> None:
            try:
                codes[runner.device_id] = runner.run_steps(start)
            except BaseException as e:  # noqa: BLE001 — raised again in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=steps_of, args=(r,), name=f"sim-{r.device_id}")
                   for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return max(codes.values(), default=0)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"custody sim: warning: {message}", file=sys.stderr)

    def _write_log(self) -> None:
        received: dict[str, int] = {name: 0 for name in self.devices}
        if self.dock is not None:
            for attestation, _, _ in self.dock.log.received:
                received[attestation.device] = received.get(attestation.device, 0) + 1
        doc: dict[str, Any] = {
            "epoch_unix_ns": self.epoch_unix_ns,
            "devices": {name: r.summary() for name, r in self.devices.items()},
            "warnings": self.warnings + [w for r in self.devices.values() for w in r.warnings],
            "attestations": received if self.dock is not None else None,
        }
        (self.out / "sim.json").write_text(json.dumps(doc, indent=2))
