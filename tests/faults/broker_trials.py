"""Fault trial: the unit's broker restarted during attestation.

A real Mosquitto (TLS, client certificates, the unit's ACL), the dock's
server in this process attesting each offload through its outbox
(``daemon/mqtt/publisher.py``), and a watcher subscribed all along; judged by
``tests/faults/invariants.py`` after every trial.
"""

from __future__ import annotations

import random
import threading
import time

from daemon.mqtt.local_broker import LocalBroker
from protocol.store_reader import LEDGER_NAME, TRUST_NAME, read_trust
from tests.daemon.dockkit import DOCK, DockThread, dock_config
from tests.faults.dock_trials import CHUNK
from tests.faults.invariants import (
    CountingBoard,
    World,
    check_attested,
    check_offloaded,
    lines,
    outbox_attestations,
    wait_until,
)
from tests.faults.trials import TrialResult


def _offload_round(offloader, errors: list[BaseException]) -> None:
    try:
        offloader.offload_round()
    except Exception as e:  # noqa: BLE001 - the trial reports it
        errors.append(e)


def broker_restarts(world: World, trials: int, seed: int) -> TrialResult:
    """The unit's Mosquitto (TLS, ACLs) stopped at a random instant of an offload's
    attestation — before the dock commits it, while it is published, or as the
    PUBACK comes back — and started again after 0.2–1 s. A watcher subscribed
    all along. Predicted: once the broker is back every attestation is
    delivered; after deduplication by id each exactly once, the ranges back to
    back; the archive ``intact``."""
    from daemon.mqtt.client import MqttConnection
    from daemon.mqtt.dock_events import MqttDockEvents
    from daemon.mqtt.publisher import DockPublisher
    from daemon.mqtt.watch import Watcher
    from daemon.pki_cli import unit_ca
    from protocol.keys import SigningKey

    rng = random.Random(seed)
    result = TrialResult("broker_restart", trials)
    work = world.root / "broker"
    work.mkdir(exist_ok=True)
    ca = unit_ca(world.keys)
    trust = read_trust(world.keys / TRUST_NAME)
    watcher_cert = ca.find("WATCH-01") or ca.issue("WATCH-01", "watcher")
    broker_cert = ca.find("broker") or ca.issue("broker", "broker", hosts=["127.0.0.1"])
    dock_cert = ca.find(DOCK)
    broker = LocalBroker(ca, broker_cert, ca.unit)
    broker.start()

    def connection(cert) -> MqttConnection:
        return MqttConnection("127.0.0.1", broker.port, ca.cert_path, cert.cert, cert.key,
                              reconnect_max_s=0.5)

    key = SigningKey.from_pem((world.keys / "docks" / f"{DOCK}.key").read_bytes())
    outbox = work / "outbox.db"
    publisher = DockPublisher(connection(dock_cert), trust.unit, DOCK, key.signer(), outbox,
                              ack_timeout_s=2.0)
    publisher.start()
    events = MqttDockEvents(publisher, trust)
    board = CountingBoard(trust)
    watcher = Watcher(connection(watcher_cert), board)
    watcher.start()
    dock = DockThread(dock_config(world.keys, world.archive), events=events)
    dev = world.device
    offloader = dev.offloader(dock.url, chunk_bytes=CHUNK)
    down_s = []
    try:
        if not watcher.subscribed.wait(10):
            result.problems.append("the watcher did not subscribe")
            return result
        # How long an offload and its attestation take here, undisturbed.
        started = time.monotonic()
        dev.record([300_000, 2000])
        offloader.offload_round()
        events.wait_idle(10)
        made = outbox_attestations(outbox)
        wait_until(lambda: all(k in board.seen for k in made), 10)
        span = time.monotonic() - started
        for i in range(trials):
            dev.record([300_000, 2000])
            stop_at = time.monotonic() + rng.uniform(0, span)
            errors: list[BaseException] = []
            thread = threading.Thread(target=_offload_round, args=(offloader, errors),
                                      daemon=True)
            thread.start()  # the offload runs on; the broker goes down at the drawn instant
            time.sleep(max(0.0, stop_at - time.monotonic()))
            broker.stop()
            down_s.append(rng.uniform(0.2, 1.0))
            time.sleep(down_s[-1])
            broker.start()
            thread.join(30)
            if errors:
                result.problems.append(f"restart {i}: the offload failed: {errors[0]}")
                continue
            if not events.wait_idle(20):
                result.problems.append(f"restart {i}: the attestation was not made")
            made = outbox_attestations(outbox)
            if not wait_until(lambda made=made: all(k in board.seen for k in made), 30):
                result.problems.append(f"restart {i}: not delivered 30 s after the broker "
                                       "came back")
            last = len(lines(world.archived / LEDGER_NAME)) - 1
            check_attested(result, board, made, last, f"restart {i}")
            check_offloaded(result, world, f"restart {i}")
    finally:
        dock.stop()
        events.close()
        watcher.stop()
        publisher.close()
        broker.close()
    result.figures.update(duplicates_deduplicated=board.duplicates,
                          attestations=len(board.attested), max_down_s=round(max(down_s), 3))
    return result
