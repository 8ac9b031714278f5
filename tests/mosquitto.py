"""A real Mosquitto for tests: the unit's generated config, TLS, ACLs, a free port.

    pki = UnitPKI.create(tmp_path, unit="U1", docks=["DOCK-01"], devices=["CAM-1"],
                         watchers=["WATCH-1"])
    with Broker(pki) as broker:        # listening on 127.0.0.1:broker.port
        broker.stop(); broker.start()  # an outage, same port, same persistence
    broker.log()                       # what Mosquitto said (for assertions)

The ``mosquitto`` and ``unit_pki`` fixtures in tests/conftest.py wrap these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from daemon.mqtt.local_broker import MOSQUITTO, LocalBroker, free_port
from daemon.pki import IssuedCert, UnitCA

__all__ = ["MOSQUITTO", "Broker", "UnitPKI", "free_port"]


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


class Broker(LocalBroker):
    """The unit's broker for a test, from its :class:`UnitPKI`."""

    def __init__(self, pki: UnitPKI, use_crl: bool = False):
        self.pki = pki
        super().__init__(pki.ca, pki.certs["broker"], pki.unit, use_crl=use_crl)
