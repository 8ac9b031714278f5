"""``custody watch`` against a real broker, and the board it keeps."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.mqtt import topics
from daemon.mqtt.watch import ACCEPTED, REFUSED, UnitBoard
from daemon.pki import UnitCA
from protocol.alert import make_alert, sign_alert
from protocol.attestation import sign_attestation
from protocol.envelope import encode_json
from protocol.store_reader import TRUST_NAME
from tests.conftest import DEVICE, DOCK, OTHER_DEVICE, WATCHER, Unit
from tests.mosquitto import Broker
from tests.mqtt.helpers import attestation
from tests.mqtt.test_acl import presence

UNIT = "test-unit"


def altered(envelope: dict, **changes) -> dict:
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload.update(changes)
    return {**envelope, "payload": base64.b64encode(encode_json(payload)).decode()}


def watch(unit: Unit, broker: Broker, *args: str, timeout: float = 30):
    ca, cert, key = broker.pki.client(WATCHER)
    return subprocess.run(
        [sys.executable, "-m", "custody_cli", "watch", "--broker", broker.url,
         "--trust", str(unit.keys / TRUST_NAME), "--ca", str(ca), "--cert", str(cert),
         "--key", str(key), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def published(unit: Unit, mosquitto: Broker) -> dict:
    """Retained on the broker: one good attestation, and what an attacker or a bug sends."""
    att = attestation(unit)
    good = sign_attestation(att, unit.dock_key.signer())
    forged = sign_attestation(att, unit.device_key.signer())  # a stolen device key
    alert = make_alert(UNIT, DOCK, "archive_nearly_full", None, {"free_bytes": 10}, 1)
    with presence(mosquitto, DOCK) as dock:  # the dock's certificate: the ACL lets it through
        for topic, payload in [
            (topics.attestation(UNIT, DEVICE), encode_json(good)),
            (topics.attestation(UNIT, OTHER_DEVICE), encode_json(forged)),
            (topics.attestation(UNIT, "DEV-0003"), encode_json(altered(good, verdict="broken"))),
            (topics.attestation(UNIT, "DEV-0004"), encode_json(good)),  # not its topic
            (topics.alert(UNIT, "integrity_failure"), b"\xff not json"),
            (topics.alert(UNIT, "archive_nearly_full"), encode_json(sign_alert(
                alert, unit.dock_key.signer()))),
        ]:
            assert dock.publish(topic, payload, retain=True) in (0, 0x10)
    return {"attestation": att}


def test_watch_shows_what_verifies_and_refuses_the_rest(unit: Unit, mosquitto: Broker,
                                                        published: dict):
    done = watch(unit, mosquitto, "--once", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert table[0].split()[0] == "DEVICE"
    [row] = [line for line in table if line.startswith(DEVICE)]
    assert "intact" in row and DOCK in row
    assert any(line.startswith("(unit)") and "archive_nearly_full" in line for line in table)
    for other in (OTHER_DEVICE, "DEV-0003", "DEV-0004"):
        assert not any(line.startswith(other) for line in table), done.stdout
    err = done.stderr
    assert f"attestation/{OTHER_DEVICE}: attestation: no valid signature by dock" in err
    assert "attestation/DEV-0003: attestation: no valid signature by dock" in err
    assert f"attestation/DEV-0004: attestation of '{DEVICE}' on the topic of 'DEV-0004'" in err
    assert "alert/integrity_failure: not JSON" in err


def test_watch_count_and_json(unit: Unit, mosquitto: Broker, published: dict):
    done = watch(unit, mosquitto, "--count", "2", "--timeout", "20", "--json")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["devices"][DEVICE]["attestation"]["id"] == published["attestation"].id
    assert len(state["refused"]) == 4
    short = watch(unit, mosquitto, "--count", "3", "--timeout", "3")
    assert short.returncode == 1


def test_watch_refuses_a_plain_broker_url_and_names_it(unit: Unit, mosquitto: Broker):
    done = watch(unit, mosquitto, "--once", "--broker", "mqtt://127.0.0.1:1883")
    assert done.returncode == 2 and "mqtts://" in done.stderr


def test_a_watcher_the_ca_did_not_certify_is_refused_by_the_broker(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    stranger = UnitCA.create(tmp_path / "other-ca", "test-unit").issue(WATCHER, "watcher")
    ca = mosquitto.pki.ca.cert_path
    done = subprocess.run(
        [sys.executable, "-m", "custody_cli", "watch", "--broker", mosquitto.url,
         "--trust", str(unit.keys / TRUST_NAME), "--ca", str(ca), "--cert", str(stranger.cert),
         "--key", str(stranger.key), "--once", "--timeout", "3"],
        capture_output=True, text=True, timeout=30)
    assert "DEVICE" in done.stdout and DEVICE not in done.stdout  # saw nothing


# --- the board alone -------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"[" * 100_000, b"{}", b"null",
                                     b'{"payload": 1, "payloadType": "x", "signatures": []}',
                                     b'"a string"'])
def test_malformed_payloads_are_logged_and_ignored(unit: Unit, payload: bytes, caplog):
    board = UnitBoard(unit.trust)
    with caplog.at_level(logging.WARNING, "custody.mqtt.watch"):
        assert board.receive(topics.attestation(UNIT, DEVICE), payload) == REFUSED
        assert board.receive(topics.alert(UNIT, "unexplained_gap"), payload) == REFUSED
    assert board.devices == {} and board.accepted == 0
    assert "ignored the message on custody/test-unit/attestation/DEV-0001" in caplog.text
    good = sign_attestation(attestation(unit), unit.dock_key.signer())
    assert board.receive(topics.attestation(UNIT, DEVICE), encode_json(good)) == ACCEPTED


def test_the_board_keeps_the_latest_range_whatever_the_order(unit: Unit):
    board = UnitBoard(unit.trust)
    first = attestation(unit)
    unit.record(segments=1)
    later = attestation(unit, first_seq=first.last_seq + 1)
    for att in (later, first):
        board.receive(topics.attestation(UNIT, DEVICE),
                      encode_json(sign_attestation(att, unit.dock_key.signer())))
    assert board.devices[DEVICE].attestation == later and board.accepted == 2


def test_other_units_and_topics_are_not_ours(unit: Unit):
    board = UnitBoard(unit.trust)
    good = encode_json(sign_attestation(attestation(unit), unit.dock_key.signer()))
    assert board.receive(topics.attestation("other-unit", DEVICE), good) == "ignored"
    assert board.receive("elsewhere/x", good) == "ignored"
    assert board.receive(topics.status(UNIT, DEVICE), b"sleeping") == REFUSED
