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
    outbox_attestation_times,
    outbox_attestations,
    wait_delivered,
)
from tests.faults.trials import TrialResult


def _offload_round(offloader, errors: list[BaseException]) -> None:
    try:
        offloader.offload_round()
    except Exception as e:  # noqa: BLE001 - the trial reports it
        errors.append(e)


DELIVERY_BOUND_S = 5.0  # from the broker being back, or from the attestation, if later


def broker_restarts(world: World, trials: int, seed: int) -> TrialResult:
    """The unit's Mosquitto (TLS, ACLs) stopped at a random instant of an offload's
    attestation — before the dock commits it, while it is published, or as the
    PUBACK comes back — and started again after 0.2–1 s. A watcher subscribed
    all along; dock and watcher connect as shipped (``MqttConnection``'s
    reconnect back-off, the publisher's PUBACK timeout). Predicted: every
    attestation delivered to the watcher within ``DELIVERY_BOUND_S`` of the
    broker being back (of its commit, if that came later); after deduplication
    by id each exactly once, the ranges back to back; the archive ``intact``."""
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
        return MqttConnection("127.0.0.1", broker.port, ca.cert_path, cert.cert, cert.key)

    key = SigningKey.from_pem((world.keys / "docks" / f"{DOCK}.key").read_bytes())
    outbox = work / "outbox.db"
    publisher = DockPublisher(connection(dock_cert), trust.unit, DOCK, key.signer(), outbox)
    publisher.start()
    events = MqttDockEvents(publisher, trust)
    board = CountingBoard(trust)
    watcher = Watcher(connection(watcher_cert), board)
    watcher.start()
    dock = DockThread(dock_config(world.keys, world.archive), events=events)
    dev = world.device
    offloader = dev.offloader(dock.url, chunk_bytes=CHUNK)
    down_s, late_s = [], []
    # The outbox says when (UTC) an attestation was committed; arrivals are monotonic.
    wall_minus_monotonic = time.time() - time.monotonic()
    try:
        if not watcher.subscribed.wait(10):
            result.fail(None, "the watcher did not subscribe")
            return result
        # How long an offload and its attestation take here, undisturbed.
        started = time.monotonic()
        dev.record([300_000, 2000])
        offloader.offload_round()
        events.wait_idle(10)
        wait_delivered(board, outbox_attestations(outbox), 10)
        span = time.monotonic() - started
        for i in range(trials):
            before = set(outbox_attestations(outbox))
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
            back = time.monotonic()
            thread.join(30)
            if errors:
                result.fail(i, f"restart {i}: the offload failed: {errors[0]}")
                continue
            if not events.wait_idle(20):
                result.fail(i, f"restart {i}: the attestation was not made")
            committed = outbox_attestation_times(outbox)
            made = list(committed)
            if not wait_delivered(board, made, 30):
                result.fail(i, f"restart {i}: not delivered 30 s after the broker came back")
            _, arrived = board.delivered()
            for k in (k for k in made if k not in before and k in arrived):
                since = max(back, committed[k] / 1e9 - wall_minus_monotonic)
                late_s.append(arrived[k] - since)
                if late_s[-1] > DELIVERY_BOUND_S:
                    result.fail(i, f"restart {i}: attestation {k[:8]} delivered "
                                f"{late_s[-1]:.1f} s after the broker was back (bound "
                                f"{DELIVERY_BOUND_S:.0f} s)")
            last = len(lines(world.archived / LEDGER_NAME)) - 1
            check_attested(result, board, made, last, f"restart {i}", trial=i)
            check_offloaded(result, world, f"restart {i}", trial=i)
        made = outbox_attestations(outbox)
        wait_delivered(board, made, 30)
        result.undelivered = len(set(made) - set(board.delivered()[1]))
    finally:
        dock.stop()
        events.close()
        watcher.stop()
        publisher.close()
        broker.close()
    result.figures.update(duplicates_deduplicated=board.duplicates,
                          attestations=len(board.delivered()[0]),
                          max_down_s=round(max(down_s, default=0), 3),
                          max_delivered_after_back_s=round(max(late_s, default=0), 3),
                          delivery_bound_s=DELIVERY_BOUND_S)
    return result
