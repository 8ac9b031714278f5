"""The broker's ACL, as the unit relies on it: who may say what (MQTT v5 PUBACKs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.mqtt import topics
from daemon.mqtt.outbox import Outbox
from daemon.mqtt.presence import Presence
from protocol.attestation import sign_attestation
from protocol.envelope import encode_json
from tests.conftest import DEVICE, DOCK, OTHER_DEVICE, WATCHER, Unit
from tests.mosquitto import Broker
from tests.mqtt.helpers import attestation, connection, publisher, wait_until, watcher

UNIT = "test-unit"
OK, NO_SUBSCRIBERS, NOT_AUTHORIZED = 0x00, 0x10, 0x87


def presence(broker: Broker, name: str) -> Presence:
    p = Presence(connection(broker, name), UNIT)
    p.start()
    assert p.wait_connected(10), broker.log()
    return p


def test_a_device_publishes_under_its_own_id_only(mosquitto: Broker):
    with presence(mosquitto, DEVICE) as device:
        assert device.publish(topics.device_topic(UNIT, DEVICE, "battery"), b"81") in (
            OK, NO_SUBSCRIBERS)
        assert device.publish(topics.status(UNIT, DEVICE), b"online") in (OK, NO_SUBSCRIBERS)
        assert device.publish(topics.device_topic(UNIT, OTHER_DEVICE, "battery"), b"5") == (
            NOT_AUTHORIZED)
        assert device.publish(topics.status(UNIT, OTHER_DEVICE), b"offline") == NOT_AUTHORIZED


@pytest.mark.parametrize("who", [DEVICE, WATCHER])
def test_only_the_dock_may_publish_attestations_and_alerts(unit: Unit, mosquitto: Broker,
                                                           who: str):
    envelope = encode_json(sign_attestation(attestation(unit), unit.dock_key.signer()))
    with presence(mosquitto, who) as client:
        assert client.publish(topics.attestation(UNIT, DEVICE), envelope) == NOT_AUTHORIZED
        assert client.publish(topics.alert(UNIT, "unknown_device"), b"{}") == NOT_AUTHORIZED
    with presence(mosquitto, DOCK) as dock:
        assert dock.publish(topics.attestation(UNIT, DEVICE), envelope) in (OK, NO_SUBSCRIBERS)


def test_a_watcher_reads_and_publishes_nothing(mosquitto: Broker):
    with presence(mosquitto, WATCHER) as w:
        assert w.publish(topics.status(UNIT, WATCHER), b"online") == NOT_AUTHORIZED
        assert w.publish(topics.device_topic(UNIT, WATCHER, "x"), b"1") == NOT_AUTHORIZED


def test_a_device_does_not_read_the_units_attestations(unit: Unit, mosquitto: Broker,
                                                       tmp_path: Path):
    got: list[str] = []
    with presence(mosquitto, DEVICE) as device:
        device.client.on_message = lambda c, u, m: got.append(m.topic)
        device.client.subscribe(topics.unit_filter(UNIT), qos=1)
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            att = attestation(unit)
            pub.attest(att)
            assert pub.wait_delivered(att.id, 10)
        time.sleep(0.5)
    assert [t for t in got if "/attestation/" in t] == []


def test_an_attestation_from_a_non_dock_identity_is_refused_and_kept(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    """A stolen device certificate cannot publish attestations, even dock-signed ones;
    the publisher records the refusal and keeps the message."""
    w = watcher(mosquitto, unit)
    att = attestation(unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db", name=DEVICE) as pub:
            pub.attest(att)
            assert not pub.wait_delivered(att.id, 2)
        assert not wait_until(w, lambda: w.board.accepted > 0, timeout=1)
    finally:
        w.stop()
    box = Outbox(tmp_path / "outbox.db")
    acked, code, error = box.status(att.id)
    assert acked is None and code == NOT_AUTHORIZED and "Not authorized" in error
    assert box.count_pending() == 1


def test_a_watcher_issued_later_reads_once_the_broker_reloads_its_acl(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    late = mosquitto.pki.ca.issue("WATCH-02", "watcher")
    mosquitto.pki.certs["WATCH-02"] = late
    mosquitto.configure()
    mosquitto.reload()  # SIGHUP: the new ACL file
    time.sleep(0.5)
    w = watcher(mosquitto, unit, name="WATCH-02")
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            att = attestation(unit)
            pub.attest(att)
            assert pub.wait_delivered(att.id, 10)
        assert wait_until(w, lambda: w.board.accepted == 1), mosquitto.log()
    finally:
        w.stop()
