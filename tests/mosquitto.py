"""A real Mosquitto for tests: the unit's generated config, TLS, ACLs, a free port.

    pki = UnitPKI.create(tmp_path, unit="U1", docks=["DOCK-01"], devices=["CAM-1"],
                         watchers=["WATCH-1"])
    with Broker(pki) as broker:        # listening on 127.0.0.1:broker.port
        broker.stop(); broker.start()  # an outage, same port, same persistence
    broker.log()                       # what Mosquitto said (for assertions)

The broker's folder is made under /tmp (not pytest's 0700 tmp_path) so that
Mosquitto, which drops to user ``mosquitto`` when started as root, can read it.
``mosquitto_fixture`` in tests/conftest.py wraps this for pytest.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.mqtt.broker_config import BrokerFiles, write_broker_files
from daemon.pki import IssuedCert, UnitCA

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class UnitPKI:
    """A unit's CA with certificates for a broker and the named identities."""

    ca: UnitCA
    unit: str
    certs: dict[str, IssuedCert] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path, unit: str, docks: list[str], devices: list[str],
               watchers: list[str]) -> UnitPKI:
        ca = UnitCA.create(Path(folder) / "tls", unit)
        pki = cls(ca, unit)
        pki.certs["broker"] = ca.issue("broker", "broker", hosts=["127.0.0.1", "localhost"])
        for role, names in (("dock", docks), ("device", devices), ("watcher", watchers)):
            for name in names:
                pki.certs[name] = ca.issue(name, role)
        return pki

    def client(self, name: str) -> tuple[Path, Path, Path]:
        """(ca, cert, key) for an identity's client connection."""
        cert = self.certs[name]
        return self.ca.cert_path, cert.cert, cert.key


class Broker:
    """One Mosquitto process on a free loopback port with the unit's config."""

    def __init__(self, pki: UnitPKI, use_crl: bool = False):
        self.pki = pki
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="custody-mosquitto-"))
        self.folder.chmod(0o755)  # mkdtemp's 0700 would keep user mosquitto out
        self.log_path = self.folder / "mosquitto.log"
        self.files: BrokerFiles = self.configure(use_crl)
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, use_crl: bool = False) -> BrokerFiles:
        self.files = write_broker_files(self.folder / "conf", self.pki.ca,
                                        self.pki.certs["broker"], self.pki.unit, "127.0.0.1",
                                        self.port, use_crl=use_crl, log=self.log_path)
        return self.files

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.files.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM: it saves its persistence file)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def reload(self) -> None:
        """SIGHUP: re-read the ACL file and CRL (after issuing or revoking)."""
        assert self.process is not None
        self.process.send_signal(1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
