"""Attestations and alerts through a real Mosquitto (TLS, client certificates, ACL)."""

from __future__ import annotations

from pathlib import Path

from daemon.mqtt import topics
from daemon.mqtt.outbox import Outbox
from daemon.mqtt.watch import ACCEPTED
from tests.conftest import DEVICE, DOCK, Unit
from tests.mosquitto import Broker
from tests.mqtt.helpers import attestation, publisher, wait_until, watcher


def test_an_attestation_is_delivered_retained_and_verified_by_a_watcher(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    att = attestation(unit)
    with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
        pub.attest(att)
        assert pub.wait_delivered(att.id, 10), mosquitto.log()
        # retained: a watcher that subscribes afterwards still gets it
        w = watcher(mosquitto, unit)
        try:
            assert wait_until(w, lambda: DEVICE in w.board.devices
                              and w.board.devices[DEVICE].attestation is not None)
            row = w.board.devices[DEVICE]
            assert row.attestation == att
            assert "intact" in w.board.table() and DEVICE in w.board.table()
        finally:
            w.stop()
    box = Outbox(tmp_path / "outbox.db")
    acked, code, error = box.status(att.id)
    assert acked is not None and code < 0x80 and error is None
    assert box.count_pending() == 0


def test_alerts_reach_the_watcher_on_their_kind_topic(unit: Unit, mosquitto: Broker,
                                                      tmp_path: Path):
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            key = pub.alert("unknown_device", "CAM-9", {"certificate": "CAM-9"})
            assert pub.wait_delivered(key, 10)
        assert wait_until(w, lambda: len(w.board.alerts) == 1)
        [alert] = w.board.alerts
        assert (alert.alert, alert.device, alert.detail) == (
            "unknown_device", "CAM-9", {"certificate": "CAM-9"})
        assert w.board.devices["CAM-9"].alerts["unknown_device"] == 1
    finally:
        w.stop()


def test_the_dock_status_says_online_and_offline(unit: Unit, mosquitto: Broker,
                                                 tmp_path: Path):
    seen: list[tuple[str, str]] = []
    w = watcher(mosquitto, unit)
    w.on_change = lambda outcome, topic: seen.append((outcome, topic))
    try:
        pub = publisher(mosquitto, unit, tmp_path / "outbox.db")
        pub.start()
        assert wait_until(w, lambda: w.board.status.get(DOCK) == "online")
        pub.close()
        assert wait_until(w, lambda: w.board.status.get(DOCK) == "offline")
        assert w.board.table().splitlines()[-1] == f"docks: {DOCK} offline"
    finally:
        w.stop()
    assert seen and all(t == topics.status("test-unit", DOCK) for _, t in seen)
    assert ACCEPTED not in {o for o, _ in seen}


def test_an_alert_detail_that_is_not_json_is_sent_as_text(unit: Unit, mosquitto: Broker,
                                                           tmp_path: Path):
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            key = pub.alert("archive_full", None, {"archive": tmp_path, "free_bytes": 4096})
            assert pub.wait_delivered(key, 10)
        assert wait_until(w, lambda: len(w.board.alerts) == 1)
        assert w.board.alerts[0].detail == {"archive": str(tmp_path), "free_bytes": 4096}
    finally:
        w.stop()
