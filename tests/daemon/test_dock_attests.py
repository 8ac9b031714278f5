"""`custody dock` with an `[mqtt]` table: every offload is attested over a real Mosquitto
(TLS, client certificates, the unit's ACL) and a watcher checks it against the trust file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from daemon.mqtt.local_broker import LocalBroker
from daemon.pki_cli import unit_ca
from tests.daemon.dockkit import DOCK, MIB, dock_config, make_unit
from tests.daemon.test_dock_service import start_dock


def watch(broker: LocalBroker, keys: Path, watcher, *args: str) -> subprocess.CompletedProcess:
    ca = unit_ca(keys)
    return subprocess.run(
        [sys.executable, "-m", "custody_cli", "watch", "--broker", broker.url,
         "--trust", str(keys / "trust.json"), "--ca", str(ca.cert_path),
         "--cert", str(watcher.cert), "--key", str(watcher.key), *args],
        capture_output=True, text=True, timeout=60)


def test_an_offload_is_attested_over_mqtt_and_the_watcher_verifies_it(tmp_path):
    keys, (dev,) = make_unit(tmp_path)
    ca = unit_ca(keys)
    watcher = ca.issue("WATCH-01", "watcher")
    broker = LocalBroker(ca, ca.issue("broker", "broker", hosts=["127.0.0.1"]),
                         ca.unit)
    broker.start()
    dock_cert = ca.find(DOCK)
    config = dock_config(keys, tmp_path / "archive")
    path = tmp_path / "dock.toml"
    path.write_text(config.to_toml() + (
        f'\n[mqtt]\nbroker = "{broker.url}"\nca = "{ca.cert_path}"\ncert = "{dock_cert.cert}"\n'
        f'key = "{dock_cert.key}"\noutbox = "{tmp_path / "outbox.db"}"\n'))
    proc, port = start_dock(path, tmp_path / "dock.log")
    try:
        dev.record([2 * MIB, 1000])
        dev.offloader(f"https://127.0.0.1:{port}").offload_round()
        assert dev.media_left() == []  # the receipt freed them
        r = watch(broker, keys, watcher, "--count", "1", "--json", "--timeout", "30")
        assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "dock.log").read_text()
        board = json.loads(r.stdout)
        assert board["refused"] == []
        attestation = board["devices"][dev.name]["attestation"]
        assert attestation["dock"] == DOCK and attestation["verdict"] == "intact", attestation
        ledger = (dev.store / "ledger.jsonl").read_bytes().splitlines()
        assert attestation["first_seq"] == 0 and attestation["last_seq"] >= len(ledger) - 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        broker.stop()
    assert proc.returncode == 0, (tmp_path / "dock.log").read_text()


def test_a_bad_mqtt_setting_exits_naming_the_key(tmp_path):
    keys, _ = make_unit(tmp_path)
    path = tmp_path / "dock.toml"
    path.write_text(dock_config(keys, tmp_path / "archive").to_toml()
                    + '\n[mqtt]\nbroker = "mqtt://127.0.0.1:1883"\n')
    r = subprocess.run([sys.executable, "-m", "custody_cli", "dock", "--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "mqtt.broker" in r.stderr, r.stderr
