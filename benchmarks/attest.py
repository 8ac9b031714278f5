"""Benchmark: attestation latency, verified range -> broker's PUBACK.

    .venv/bin/python benchmarks/attest.py [--runs 30]

Starts a real Mosquitto (TLS, client certificates, the unit's ACL) on a free
loopback port, provisions a unit with one device and a sample recording, and
measures, per offload, the dock's whole attestation path from its
``on_offloaded`` event: verify the archive copy's ledger, build the
attestation, sign it (DSSE, Ed25519), commit it to the SQLite outbox (fsync),
publish it at QoS 1 and wait for the broker's PUBACK (``attest_latency``,
which ``benchmarks/offload.py`` can call after its last byte is archived).
The limit measured in the same run is a bare QoS 1 publish of the same bytes
on an already open paho connection, waiting for its PUBACK: what MQTT itself
costs here. Last line JSON: ``attest_latency_s``
(median; goal <= 1 s), its p95 and max, the bare baseline, their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.mqtt.client import MqttConnection
from daemon.mqtt.dock_events import MqttDockEvents
from daemon.mqtt.local_broker import LocalBroker
from daemon.mqtt.publisher import DockPublisher
from daemon.pki import UnitCA
from daemon.provision import create_unit, device_key_path, enrol_device, load_signing_key
from device.ledger import LedgerWriter, system_clock
from device.sample import record_sample
from protocol.keys import ArchiveSecretKey
from protocol.store_reader import read_trust

GOAL_S = 1.0
UNIT, DOCK, DEVICE = "bench-unit", "DOCK-01", "CAM-0001"


def attest_latency(events: MqttDockEvents, device: str, store: Path, report: Any,
                   timeout: float = 30.0) -> float:
    """Seconds from the dock's ``on_offloaded`` (its last byte archived, its receipt
    signed) to the broker's PUBACK of the attestation: verifying the archive copy's
    ledger, building, signing, the outbox, QoS 1."""
    t0 = time.perf_counter()
    events.on_offloaded(device, store, report)
    if not events.wait_idle(timeout) or not events.publisher.flush(timeout):
        raise RuntimeError(f"{device}: the attestation was not acknowledged within {timeout} s")
    return time.perf_counter() - t0


@dataclass
class _Offload:
    """The fields of the dock's offload report (daemon.events.OffloadReport) used here."""

    first_seq: int
    last_seq: int
    archived_utc_ns: int
    clock_offset_ns: int | None = None


def bare_qos1(connection: MqttConnection, topic: str, payload: bytes, runs: int) -> list[float]:
    """QoS 1 round trips of ``payload`` on one open connection (no signing, no outbox)."""
    client = connection.make_client()
    client.connect(connection.host, connection.port)
    client.loop_start()
    try:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise RuntimeError("bare publish: no PUBACK within 10 s")
            times.append(time.perf_counter() - t0)
        return times
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys, store = root / "keys", root / "device"
        create_unit(keys, UNIT, [DOCK])
        enrol_device(keys, DEVICE, store, system_clock(), officer="PC-0001")
        archive = ArchiveSecretKey.from_pem((keys / "archive-secret.key").read_bytes())
        device_key = load_signing_key(device_key_path(keys, DEVICE))
        trust = read_trust(keys / "trust.json")
        ca = UnitCA.create(keys / "tls", UNIT)
        dock_cert = ca.issue(DOCK, "dock")
        with LedgerWriter(store, DEVICE, device_key, system_clock()) as ledger:
            record_sample(ledger, store, archive.public_raw, "PC-0001", segments=1)
        broker_cert = ca.issue("broker", "broker", hosts=["127.0.0.1"])
        with LocalBroker(ca, broker_cert, UNIT) as broker:
            conn = MqttConnection("127.0.0.1", broker.port, ca.cert_path, dock_cert.cert,
                                  dock_cert.key)
            signer = load_signing_key(keys / "docks" / f"{DOCK}.key").signer()
            latencies: list[float] = []
            payload = b""
            with DockPublisher(conn, UNIT, DOCK, signer, root / "outbox.db") as publisher:
                events = MqttDockEvents(publisher, trust)
                first = 0
                for _ in range(args.runs):
                    # Each offload brings one more recording: a new range to attest.
                    with LedgerWriter(store, DEVICE, device_key, system_clock()) as ledger:
                        last = record_sample(ledger, store, archive.public_raw, "PC-0001",
                                             segments=1)[-1].entry.seq
                    offload = _Offload(first, last, time.time_ns(), 0)
                    latencies.append(attest_latency(events, DEVICE, store, offload))
                    first = last + 1
                events.close()
                payload = publisher.outbox.latest().payload
            bare = bare_qos1(conn, f"custody/{UNIT}/attestation/{DEVICE}", payload, args.runs)
    median, bare_median = statistics.median(latencies), statistics.median(bare)
    p95 = (statistics.quantiles(latencies, n=20, method="inclusive")[-1]
           if len(latencies) >= 2 else latencies[0])
    print(f"{args.runs} attestations of {len(payload)} bytes: median {median * 1e3:.1f} ms, "
          f"p95 {p95 * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms; bare QoS 1 "
          f"{bare_median * 1e3:.1f} ms", file=sys.stderr)
    print(json.dumps({
        "figure": round(median, 4), "limit": round(bare_median, 4),
        "ratio": round(median / bare_median, 2), "unit": "s",
        "attest_latency_s": round(median, 4), "attest_latency_p95_s": round(p95, 4),
        "attest_latency_max_s": round(max(latencies), 4), "goal_s": GOAL_S,
        "within_goal": max(latencies) <= GOAL_S, "runs": args.runs,
        "payload_bytes": len(payload)}))


if __name__ == "__main__":
    main()
