"""The device's status over a real Mosquitto: seen by a watcher, "offline" by the last
will when the device dies, never another device's, and never in the recorder's way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from daemon.mqtt import topics
from daemon.mqtt.watch import REFUSED, STATUS, UnitBoard
from device.config import ConfigError, RecorderConfig
from device.status_report import StatusReporter, status_connection, status_message
from tests.conftest import DEVICE, OTHER_DEVICE, Unit
from tests.mosquitto import Broker, UnitPKI
from tests.mqtt.helpers import connection, wait_until, watcher
from tests.mqtt.status_child import STATUS as CHILD_STATUS
from tests.mqtt.test_acl import NOT_AUTHORIZED, UNIT, presence


def test_the_status_is_seen_and_a_killed_device_goes_offline(unit: Unit, mosquitto: Broker):
    w = watcher(mosquitto, unit)
    ca, cert, key = mosquitto.pki.client(DEVICE)
    child = subprocess.Popen([sys.executable, "-m", "tests.mqtt.status_child", "127.0.0.1",
                              str(mosquitto.port), UNIT, str(ca), str(cert), str(key)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "published"
        row = lambda: w.board.devices.get(DEVICE)  # noqa: E731
        assert wait_until(w, lambda: row() is not None and row().details.get("state")
                          == "recording"), mosquitto.log()
        details = row().details
        assert row().status == "online" and details["device"] == DEVICE
        assert details["battery"]["percent"] == 81.0
        assert details["storage"] == {"free_bytes": 123456}
        assert details["offload"]["files_done"] == 2 and details["offload"]["files_total"] == 5
        assert "online recording 81% offload 2/5" in w.board.table()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
        # No goodbye from a dead device: the broker sends its last will.
        assert wait_until(w, lambda: row().status == "offline"), mosquitto.log()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        w.stop()
    assert f"{DEVICE}" in w.board.table() and "offline" in w.board.table()


def test_a_device_cannot_say_anything_for_another_device(unit: Unit, mosquitto: Broker):
    """A stolen device certificate cannot make a dead device look alive."""
    w = watcher(mosquitto, unit)
    fake = json.dumps(status_message(OTHER_DEVICE, {"state": "standby"}, 1)).encode()
    try:
        with presence(mosquitto, DEVICE) as device:
            assert device.publish(topics.status(UNIT, OTHER_DEVICE), fake,
                                  retain=True) == NOT_AUTHORIZED
            assert device.publish(topics.status(UNIT, OTHER_DEVICE), b"online",
                                  retain=True) == NOT_AUTHORIZED
        time.sleep(0.3)
        assert OTHER_DEVICE not in w.board.status
    finally:
        w.stop()


def test_a_broker_away_costs_the_recorder_nothing_and_the_newest_status_wins(
        unit: Unit, mosquitto: Broker):
    mosquitto.stop()
    n = [0]

    def source() -> dict:
        n[0] += 1
        return {"state": "standby", "free_bytes": n[0]}

    reporter = StatusReporter(connection(mosquitto, DEVICE), UNIT, source, interval_s=3600,
                              queue_size=4).start()
    try:
        started = time.monotonic()
        for i in range(100):
            reporter.offer(status_message(DEVICE, {"state": "recording", "free_bytes": i}, i))
        assert time.monotonic() - started < 0.1  # never waits for the broker
        assert reporter.dropped >= 96 and reporter.published == 0
        mosquitto.start()
        deadline = time.monotonic() + 15
        while reporter.published < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reporter.published == 4 and reporter.refused == 0
        w = watcher(mosquitto, unit)  # the retained status: the newest one offered
        try:
            assert wait_until(w, lambda: DEVICE in w.board.devices
                              and w.board.devices[DEVICE].details.get("storage")
                              == {"free_bytes": 99}), mosquitto.log()
        finally:
            w.stop()
    finally:
        reporter.close()


def test_a_clean_close_says_offline(unit: Unit, mosquitto: Broker):
    w = watcher(mosquitto, unit)
    try:
        reporter = StatusReporter(connection(mosquitto, DEVICE), UNIT,
                                  lambda: dict(CHILD_STATUS), interval_s=0.1).start()
        assert wait_until(w, lambda: w.board.status.get(DEVICE) == "online")
        reporter.close()
        assert wait_until(w, lambda: w.board.status.get(DEVICE) == "offline")
    finally:
        w.stop()


def test_the_board_reads_a_status_and_refuses_a_malformed_one(unit: Unit):
    board = UnitBoard(unit.trust)
    message = status_message(DEVICE, dict(CHILD_STATUS), 5)
    assert board.receive(topics.status(unit.trust.unit, DEVICE),
                         json.dumps(message).encode()) == STATUS
    assert board.devices[DEVICE].status_cell == "online recording 81% offload 2/5"
    for bad in (b"{not json", b'{"status": "asleep"}', b"[1]"):
        assert board.receive(topics.status(unit.trust.unit, DEVICE), bad) == REFUSED
    assert board.receive(topics.status(unit.trust.unit, DEVICE), b"offline") == STATUS
    assert board.devices[DEVICE].status_cell == "offline"


def test_recorder_settings_for_the_broker_are_checked(unit_pki: UnitPKI):
    ca, cert, key = unit_pki.client(DEVICE)
    assert status_connection(RecorderConfig(device_id=DEVICE)) is None  # no broker: no MQTT
    with pytest.raises(ConfigError, match="mqtt_broker"):
        RecorderConfig.from_toml('mqtt_broker = "mqtt://127.0.0.1:1883"')
    config = RecorderConfig.from_toml(f'device_id = "{OTHER_DEVICE}"\n'
                                      'mqtt_broker = "mqtts://127.0.0.1:8883"\n'
                                      f'tls_ca_file = "{ca}"\ntls_cert_file = "{cert}"\n'
                                      f'tls_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match="tls_cert_file.*not device"):
        status_connection(config)
    with pytest.raises(ConfigError, match="tls_key_file"):
        status_connection(RecorderConfig(device_id=DEVICE, mqtt_broker="mqtts://h:1",
                                         tls_ca_file=ca, tls_cert_file=cert))
    conn = status_connection(config.with_overrides({"device_id": DEVICE}))
    assert conn is not None and conn.identity == DEVICE


def test_the_real_recorder_status_reaches_the_watcher(unit: Unit, mosquitto: Broker):
    from tests.device.simrun import recorder_on_sim

    w = watcher(mosquitto, unit)
    try:
        with recorder_on_sim(unit, segment_seconds=1) as recorder:
            recorder.start()
            reporter = StatusReporter(connection(mosquitto, DEVICE), UNIT, recorder.status,
                                      interval_s=0.2).start()
            try:
                details = lambda: w.board.devices.get(DEVICE) and \
                    w.board.devices[DEVICE].details  # noqa: E731
                assert wait_until(w, lambda: bool(details()) and details()["state"]
                                  == "standby"), mosquitto.log()
                # The gauge's reading, once the recorder's self-check has read it.
                assert wait_until(w, lambda: details()["battery"]["percent"] is not None)
                assert details()["storage"]["free_bytes"] > 0
                recorder.press_record()
                assert wait_until(w, lambda: details()["state"] == "recording")
                recorder.press_record()
            finally:
                reporter.close()
        assert wait_until(w, lambda: w.board.status.get(DEVICE) == "offline")
    finally:
        w.stop()


@pytest.mark.slow
def test_custody_recorder_with_mqtt_broker_publishes_and_its_death_shows(tmp_path):
    """The service itself: `custody recorder` with `mqtt_broker` set (and its kill -9)."""
    from daemon import pki
    from daemon.mqtt.client import MqttConnection
    from daemon.mqtt.local_broker import LocalBroker
    from daemon.mqtt.watch import Watcher
    from daemon.pki_cli import unit_ca
    from protocol.store_reader import read_trust
    from tests.device.simrun import run_sim

    out = run_sim(tmp_path, '[device]\nvideo = "320x180@10"\npre_record_seconds = 0\n\n'
                            '[[at]]\nt = 0.5\ndo = "end"\n')
    config = RecorderConfig.from_file(out / "recorder.toml")
    keys, device = out / "keys", config.device_id
    ca = unit_ca(keys)  # custody sim gave the device its TLS certificate
    watcher_cert = ca.issue("WATCH-01", "watcher")
    broker = LocalBroker(ca, ca.issue("broker", "broker", hosts=["127.0.0.1"]), ca.unit)
    broker.start()
    config = config.with_overrides({
        "mqtt_broker": broker.url, "mqtt_status_seconds": 1, "sim_epoch_unix_ns": 1,
        "control_socket": str(tmp_path / "recorder.sock"),
        "tls_cert_file": str(pki.cert_path(keys, "device", device)),
        "tls_key_file": str(pki.key_path(keys, "device", device)),
        "tls_ca_file": str(ca.cert_path)})
    (tmp_path / "recorder.toml").write_text(config.to_toml())
    board = UnitBoard(read_trust(keys / "trust.json"))
    w = Watcher(MqttConnection("127.0.0.1", broker.port, ca.cert_path, watcher_cert.cert,
                               watcher_cert.key), board)
    w.start()
    proc = subprocess.Popen([sys.executable, "-m", "custody_cli", "recorder", "--config",
                             str(tmp_path / "recorder.toml")], stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert w.subscribed.wait(10)
        row = lambda: board.devices.get(device)  # noqa: E731
        assert wait_until(w, lambda: row() is not None and row().details.get("state")
                          == "standby", timeout=60), broker.log()
        assert row().details["storage"]["free_bytes"] > 0 and row().status == "online"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(w, lambda: row().status == "offline"), broker.log()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        w.stop()
        broker.stop()
