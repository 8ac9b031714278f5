"""Nothing the dock attests is lost: broker outages, a frozen broker, a killed dock."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from daemon.mqtt.outbox import Outbox
from tests.conftest import DEVICE, DOCK, Unit
from tests.mosquitto import Broker
from tests.mqtt.helpers import attestation, publisher, wait_until, watcher

ROOT = Path(__file__).resolve().parents[2]


def test_the_outbox_keeps_a_message_once_and_across_reopening(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    assert box.put("t", b"1", key="a", retain=True)
    assert not box.put("t", b"2", key="a")
    box.close()
    box = Outbox(tmp_path / "o.db")
    [msg] = box.pending()
    assert (msg.key, msg.payload, msg.retain) == ("a", b"1", True)
    box.failed(msg.row, "no PUBACK")
    assert box.count_pending() == 1
    box.delivered(msg.row, 0)
    assert box.pending() == [] and box.status("a")[:2][1] == 0


def test_broker_down_during_attestation_is_delivered_when_it_returns(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    mosquitto.stop()
    att = attestation(unit)
    with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
        pub.attest(att)
        assert not pub.wait_delivered(att.id, 1.5)
        assert pub.outbox.count_pending() == 1
        mosquitto.start()
        assert pub.wait_delivered(att.id, 15), mosquitto.log()
    w = watcher(mosquitto, unit)
    try:
        assert wait_until(w, lambda: w.board.accepted == 1)
        assert w.board.devices[DEVICE].attestation.id == att.id
    finally:
        w.stop()


def _child(mosquitto: Broker, unit: Unit, tmp_path: Path, att=None) -> subprocess.Popen:
    ca, cert, key = mosquitto.pki.client(DOCK)
    config = tmp_path / "child.json"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "port": mosquitto.port, "ca": str(ca), "cert": str(cert),
        "key": str(key), "dock_key": str(unit.keys / "docks" / f"{DOCK}.key"),
        "outbox": str(tmp_path / "outbox.db"), "unit": "test-unit", "dock": DOCK,
        "attestation": att.to_dict() if att else None}))
    return subprocess.Popen([sys.executable, "-m", "tests.mqtt.dock_child", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_an_attestation_queued_by_a_killed_dock_is_delivered_after_its_restart(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    mosquitto.stop()
    att = attestation(unit)
    child = _child(mosquitto, unit, tmp_path, att)
    try:
        assert child.stdout.readline().split() == ["queued", att.id]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    mosquitto.start()
    w = watcher(mosquitto, unit)
    try:
        assert not wait_until(w, lambda: w.board.accepted > 0, timeout=0.5)
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:  # the dock restarted
            assert pub.wait_delivered(att.id, 15), mosquitto.log()
        assert wait_until(w, lambda: w.board.accepted == 1)
        assert w.board.devices[DEVICE].attestation == att
    finally:
        w.stop()


def test_a_killed_dock_leaves_its_last_will_offline(unit: Unit, mosquitto: Broker,
                                                   tmp_path: Path):
    w = watcher(mosquitto, unit)
    try:
        child = _child(mosquitto, unit, tmp_path)
        try:
            assert child.stdout.readline().strip() == "online"
            assert wait_until(w, lambda: w.board.status.get(DOCK) == "online")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert wait_until(w, lambda: w.board.status.get(DOCK) == "offline")
    finally:
        w.stop()


def test_a_frozen_broker_is_a_timeout_not_a_hang_and_the_message_goes_later(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    att = attestation(unit)
    with publisher(mosquitto, unit, tmp_path / "outbox.db", ack_timeout_s=1.0) as pub:
        assert wait_connected(pub)
        mosquitto.freeze()  # holds the connection, acknowledges nothing
        try:
            pub.attest(att)
            assert not pub.wait_delivered(att.id, 2.5)
            assert "no PUBACK" in (pub.outbox.status(att.id)[2] or "")
        finally:
            mosquitto.freeze(False)
        assert pub.wait_delivered(att.id, 15), mosquitto.log()
        assert pub.network.alive


def wait_connected(pub, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pub.connected:
            return True
        time.sleep(0.02)
    return False


def test_a_retained_attestation_survives_a_broker_restart(unit: Unit, mosquitto: Broker,
                                                          tmp_path: Path):
    att = attestation(unit)
    with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
        pub.attest(att)
        assert pub.wait_delivered(att.id, 10)
    mosquitto.kill()  # no orderly save at exit
    mosquitto.start()
    w = watcher(mosquitto, unit)
    try:
        assert wait_until(w, lambda: w.board.accepted == 1), mosquitto.log()
    finally:
        w.stop()


def test_a_message_delivered_twice_is_counted_once(unit: Unit, mosquitto: Broker,
                                                   tmp_path: Path):
    att = attestation(unit)
    outcomes: list[str] = []
    w = watcher(mosquitto, unit)
    w.on_change = lambda outcome, topic: outcomes.append(outcome)
    try:
        for run in range(2):  # two outboxes: as if the dock re-sent after losing a PUBACK
            with publisher(mosquitto, unit, tmp_path / f"outbox{run}.db") as pub:
                pub.attest(att)
                assert pub.wait_delivered(att.id, 10)
        assert wait_until(w, lambda: w.board.duplicates == 1)
        assert w.board.accepted == 1
    finally:
        w.stop()
    assert [o for o in outcomes if o != "status"] == ["accepted"]  # a duplicate changes nothing


def test_a_network_loop_that_dies_is_started_again_and_messages_go_on(
        unit: Unit, mosquitto: Broker, tmp_path: Path, monkeypatch):
    """paho issue 894: an exception inside paho's loop ends it while publish() goes on
    returning. Ours is started again, and what is put in the outbox is delivered."""
    pub = publisher(mosquitto, unit, tmp_path / "outbox.db")
    real_loop = pub.client._loop
    dying = threading.Event()

    def dying_loop(timeout: float = 1.0):
        if dying.is_set():
            dying.clear()
            raise RuntimeError("the loop dies, as in paho issue 894")
        return real_loop(timeout)

    monkeypatch.setattr(pub.client, "_loop", dying_loop)
    with pub:
        assert wait_connected(pub)
        dying.set()
        deadline = time.monotonic() + 10
        while pub.network.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pub.network.restarts == 1 and not dying.is_set()
        att = attestation(unit)
        pub.attest(att)
        assert pub.wait_delivered(att.id, 15), mosquitto.log()


def test_an_exception_in_a_callback_does_not_lose_the_message(
        unit: Unit, mosquitto: Broker, tmp_path: Path, caplog):
    """A guarded callback logs what it raised; the row, not marked delivered, goes again."""
    pub = publisher(mosquitto, unit, tmp_path / "outbox.db")
    real_delivered = pub.outbox.delivered
    failures = []

    def failing_once(row: int, reason_code: int) -> None:
        if not failures:
            failures.append(row)
            raise sqlite3.OperationalError("disk I/O error")
        real_delivered(row, reason_code)

    pub.outbox.delivered = failing_once
    with pub:
        att = attestation(unit)
        pub.attest(att)
        assert pub.wait_delivered(att.id, 15), mosquitto.log()
        assert pub.network.alive and pub.network.restarts == 0
    # logged by the guarded callback, or by the sender when the PUBACK beat publish()
    assert failures and "disk I/O error" in caplog.text
