"""The unit's side of a ``custody sim`` run: its keys, and when it docks, the dock with a Mosquitto.

:class:`SimUnit` provisions the unit every simulated device belongs to (or
copies one given with ``--keys``). :class:`SimDock` is what a docking run
starts and stops again: a Mosquitto on a free loopback port (TLS, client
certificates, the ACL of ``custody provision mosquitto``; or an existing
broker), one ``custody dock`` process for every device with an ``[mqtt]``
table so that it attests each offload, and a watcher of the unit that checks
every attestation against the trust file, as ``custody watch`` does, and keeps
them for ``DIR/attestations.json``::

    unit = SimUnit(out)                       # DIR/keys: trust file, dock, CA, technician
    dock = SimDock(unit)
    dock.start()                              # broker, listener, dock; dock.url
    settings = dock.device_settings("CAM-A")  # dock_url and the device's TLS files
    ...                                       # the devices dock and offload
    dock.wait_attested(["CAM-A"], timeout=30) # each archived range attested
    dock.stop()                               # nothing left running; attestations.json
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from daemon import pki
from daemon.dock.config import DockConfig
from daemon.mqtt.broker_config import ca_names
from daemon.mqtt.client import MqttConnection, MqttSettingsError
from daemon.mqtt.local_broker import LocalBroker
from daemon.mqtt.settings import MqttSettings
from daemon.mqtt.watch import ACCEPTED, UnitBoard, Watcher
from daemon.provision import create_unit
from device.console.simsession import PASSWORD_FILE, TECHNICIANS_FILE, provision_sim_technician
from protocol.attestation import Attestation, check_attestation
from protocol.store_reader import LEDGER_NAME, TRUST_NAME, read_trust

UNIT, DOCK = "sim-unit", "DOCK-01"
WATCHER = "WATCH-SIM"  # the run's own watcher of the unit (its certificate is in keys/tls)
ATTESTATIONS = "attestations.json"


class SimError(Exception):
    """The simulation could not run; the message says why (and where to look)."""


class SimUnit:
    """The unit of a run: ``DIR/keys`` (made, or copied from an existing unit's folder)."""

    def __init__(self, out: Path, keys_from: Path | None = None):
        self.out, self.keys = out, out / "keys"
        if keys_from is None:
            create_unit(self.keys, UNIT, [DOCK])
            self.dock_id = DOCK
        else:
            # A copy: the devices are enrolled in it, never in the folder given.
            if not (Path(keys_from) / TRUST_NAME).is_file():
                raise SimError(f"--keys {keys_from}: no {TRUST_NAME} (make one with "
                               "`custody provision unit`)")
            shutil.copytree(keys_from, self.keys)
            docks = sorted(read_trust(self.keys / TRUST_NAME).docks)
            if not docks or not pki.cert_path(self.keys, "dock", docks[0]).is_file():
                raise SimError(f"--keys {keys_from}: no dock with a TLS certificate")
            self.dock_id = docks[0]
        self.unit = read_trust(self.keys / TRUST_NAME).unit
        if (self.keys / TECHNICIANS_FILE).is_file() and (self.keys / PASSWORD_FILE).is_file():
            self.technicians = self.keys / TECHNICIANS_FILE
        else:
            self.technicians = provision_sim_technician(self.keys)


class AttestationLog(UnitBoard):
    """A unit board that also keeps every attestation it accepted, in arrival order."""

    def __init__(self, *args: Any, since_ns: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.since_ns = since_ns  # older ones (retained by an existing broker) are not ours
        # (attestation, key ids that verified it, the signed envelope as received)
        self.received: list[tuple[Attestation, list[str], Any]] = []
        self.earlier = 0
        self.lock = threading.Lock()

    def receive(self, topic: str, payload: bytes) -> str:
        outcome = super().receive(topic, payload)
        if outcome == ACCEPTED and "/attestation/" in topic:
            envelope = json.loads(payload)
            check = check_attestation(envelope, self.trust)
            assert check.attestation is not None  # the board accepted it
            with self.lock:
                if check.attestation.attested_utc_ns < self.since_ns:
                    self.earlier += 1
                else:
                    self.received.append((check.attestation, check.signed_by, envelope))
        return outcome

    def last_seq(self, device: str) -> int | None:
        with self.lock:
            seqs = [a.last_seq for a, _, _ in self.received if a.device == device]
        return max(seqs, default=None)


class SimDock:
    """The dock side of a docking run; see the module doc."""

    def __init__(self, unit: SimUnit, broker_url: str | None = None):
        self.unit, self.out, self.keys = unit, unit.out, unit.keys
        self.broker_url = broker_url
        self.broker: LocalBroker | None = None
        self.watcher: Watcher | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = AttestationLog(read_trust(self.keys / TRUST_NAME), since_ns=time.time_ns())

    # --- starting ----------------------------------------------------------------------------

    def start(self) -> None:
        ca = pki.UnitCA.load(pki.tls_dir(self.keys))
        if self.broker_url is None:
            watcher = ca.find(WATCHER) or ca.issue(WATCHER, "watcher")
            broker = ca.find("broker") or ca.issue("broker", "broker",
                                                    hosts=["127.0.0.1", "localhost"])
            self.broker = LocalBroker(ca, broker, ca.unit)  # the ACL names dock and watcher
            self.broker.start()
            self.broker_url = self.broker.url
        else:  # an existing broker knows only the watchers it was configured with
            names = ca_names(ca, "watcher")
            if not names:
                raise SimError(f"{pki.tls_dir(self.keys)}: no watcher certificate for the "
                               "existing broker (`custody provision cert --role watcher`, then "
                               "`custody provision mosquitto` again)")
            watcher = ca.find(names[0])
        assert watcher is not None
        self._listen(ca, watcher)
        self._start_dock(ca)

    def _listen(self, ca: pki.UnitCA, watcher: pki.IssuedCert) -> None:
        assert self.broker_url is not None
        try:
            connection = MqttConnection.from_url(self.broker_url, ca.cert_path, watcher.cert,
                                                 watcher.key)
        except MqttSettingsError as e:
            raise SimError(f"--broker: {e}") from None
        self.watcher = Watcher(connection, self.log)
        self.watcher.start()
        if not self.watcher.subscribed.wait(15):
            why = self.watcher.refusal or "no connection"
            raise SimError(f"the broker {self.broker_url} did not take watcher "
                           f"{watcher.name}: {why}")

    def _start_dock(self, ca: pki.UnitCA) -> None:
        dock = self.unit.dock_id
        cert, key = pki.cert_path(self.keys, "dock", dock), pki.key_path(self.keys, "dock", dock)
        assert self.broker_url is not None
        config = DockConfig(
            dock_id=dock, archive=self.out / "archive", key_file=self.keys / "docks" /
            f"{dock}.key", trust_file=self.keys / TRUST_NAME, tls_cert_file=cert,
            tls_key_file=key, tls_ca_file=ca.cert_path, crl_file=ca.crl_path,
            listen_port=0, reserve_bytes=0,
            mqtt=MqttSettings(broker=self.broker_url, ca=ca.cert_path, cert=cert, key=key,
                              outbox=self.out / "dock-outbox.db"))
        (self.out / "dock.toml").write_text(config.to_toml())
        with open(self.out / "dock.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "custody_cli", "dock", "--config",
                 str(self.out / "dock.toml")], stdout=subprocess.PIPE, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "listening HOST PORT"
        if not line.startswith("listening"):
            raise SimError(f"the dock did not start; see {self.out / 'dock.log'}")
        self.url = f"https://127.0.0.1:{line.split()[2]}"

    def device_settings(self, device: str) -> dict[str, str]:
        """What a device needs to offload to this dock: its address and the device's TLS files."""
        return {"dock_url": self.url,
                "tls_cert_file": str(pki.cert_path(self.keys, "device", device)),
                "tls_key_file": str(pki.key_path(self.keys, "device", device)),
                "tls_ca_file": str(pki.tls_dir(self.keys) / pki.CA_CERT)}

    # --- the end -----------------------------------------------------------------------------

    def archived_last_seq(self, device: str) -> int | None:
        """The last entry the archive holds of ``device`` (its copy's entry n is line n)."""
        ledger = self.out / "archive" / "devices" / device / LEDGER_NAME
        if not ledger.is_file():
            return None
        return len(ledger.read_bytes().splitlines()) - 1

    def wait_attested(self, devices: list[str], timeout: float = 30.0) -> list[str]:
        """Wait until every range archived of ``devices`` is attested; those still not are
        returned."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [d for d in devices if (last := self.archived_last_seq(d)) is not None
                       and (self.log.last_seq(d) or -1) < last]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop all it started (dock, then listener, then broker); write attestations.json."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.broker is not None:
            (self.out / "mosquitto.log").write_text(self.broker.log())
            self.broker.close()
        self.write()

    def write(self) -> None:
        with self.log.lock:
            received = [{"attestation": a.to_dict(), "signed_by": keys, "envelope": envelope}
                        for a, keys, envelope in self.log.received]
        (self.out / ATTESTATIONS).write_text(json.dumps({
            "unit": self.log.unit, "broker": self.broker_url,
            "attestations": received, "alerts": [a.to_dict() for a in self.log.alerts],
            "refused": [{"topic": t, "why": w} for t, w in self.log.refused],
            "earlier_runs": self.log.earlier}, indent=2))
