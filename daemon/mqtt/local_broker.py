"""A Mosquitto of our own on a loopback port: for ``custody sim``, tests and benchmarks.

    with LocalBroker(ca, ca.find("broker"), unit="U1") as broker:   # 127.0.0.1, free port
        broker.url                                  # mqtts://127.0.0.1:PORT
        broker.stop(); broker.start()               # an outage: same port, same persistence
        broker.log()                                # what Mosquitto said

Its folder (configuration, TLS files, persistence, log) is made under the
system's temporary folder, open to user ``mosquitto``, whom Mosquitto becomes
when started as root; it is removed by :meth:`close`.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from daemon.mqtt.broker_config import BrokerFiles, write_broker_files
from daemon.pki import IssuedCert, UnitCA

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """One Mosquitto process on a free 127.0.0.1 port with the unit's config and ACL."""

    def __init__(self, ca: UnitCA, broker: IssuedCert, unit: str, use_crl: bool = False):
        self.ca, self.broker_cert, self.unit = ca, broker, unit
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="custody-mosquitto-"))
        self.folder.chmod(0o755)  # mkdtemp's 0700 would keep user mosquitto out
        self.log_path = self.folder / "mosquitto.log"
        self.files: BrokerFiles = self.configure(use_crl)
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, use_crl: bool = False) -> BrokerFiles:
        """(Re)write the configuration and ACL, e.g. after issuing a certificate."""
        self.files = write_broker_files(self.folder / "conf", self.ca, self.broker_cert,
                                        self.unit, "127.0.0.1", self.port, use_crl=use_crl,
                                        log=self.log_path)
        return self.files

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            raise RuntimeError("the broker is already running")
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
        self._reap()

    def kill(self) -> None:
        """SIGKILL: a crash, with no orderly save."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self._reap()

    def _reap(self) -> None:
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP / SIGCONT: a broker that holds connections and answers nothing."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its ACL file again."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
