"""What the MQTT tests share: connections as a named identity, an attestation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from daemon.mqtt.client import MqttConnection
from daemon.mqtt.publisher import DockPublisher
from daemon.mqtt.watch import UnitBoard, Watcher
from protocol.attestation import Attestation, build_attestation
from tests.conftest import DOCK, Unit
from tests.mosquitto import Broker


def connection(broker: Broker, name: str, **kw) -> MqttConnection:
    ca, cert, key = broker.pki.client(name)
    return MqttConnection("127.0.0.1", broker.port, ca, cert, key, **kw)


def publisher(broker: Broker, unit: Unit, outbox: Path, name: str = DOCK,
              **kw) -> DockPublisher:
    return DockPublisher(connection(broker, name), unit="test-unit", dock=DOCK,
                         signer=unit.dock_key.signer(), outbox=outbox, **kw)


def attestation(unit: Unit, first_seq: int = 0) -> Attestation:
    report = unit.verify()
    now = time.time_ns()
    return build_attestation(report, dock=DOCK, first_seq=first_seq,
                             last_seq=unit.entries()[-1].entry.seq, archived_utc_ns=now,
                             attested_utc_ns=now, clock_offset_ns=1_000)


def watcher(broker: Broker, unit: Unit, name: str = "WATCH-01") -> Watcher:
    w = Watcher(connection(broker, name), UnitBoard(unit.trust))
    w.start()
    assert w.subscribed.wait(10), "the watcher did not subscribe"
    return w


def wait_until(w: Watcher, done: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    with w.changed:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            w.changed.wait(left)
    return True
