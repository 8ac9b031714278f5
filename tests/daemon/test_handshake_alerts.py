"""A client the unit's CA does not vouch for is refused at the TLS handshake, and seen:
an ``unknown_device`` alert with its address and the certificate it presented."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from daemon import pki
from daemon.dock.handshake import RefusalLimiter
from daemon.events import UNKNOWN_DEVICE
from daemon.mqtt.client import MqttConnection
from daemon.mqtt.dock_events import MqttDockEvents
from daemon.mqtt.local_broker import LocalBroker
from daemon.mqtt.publisher import DockPublisher
from daemon.mqtt.watch import UnitBoard, Watcher
from daemon.pki_cli import unit_ca
from daemon.provision import create_unit, load_signing_key
from device.offload import DockClient, DockError
from protocol.store_reader import TRUST_NAME, read_trust
from tests.daemon.dockkit import DOCK, DockThread, dock_config, make_unit, wait_for


@pytest.fixture
def world(tmp_path: Path):
    keys, devices = make_unit(tmp_path, devices=1)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    yield keys, devices[0], dock
    dock.stop()
    devices[0].host.close()


def stranger_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A device certificate, with the enrolled device's own name, from another unit's CA."""
    keys = tmp_path / "stranger"
    create_unit(keys, "stranger", ["DOCK-X"])
    pki.issue(keys, "device", name)
    return pki.cert_path(keys, "device", name), pki.key_path(keys, "device", name)


def knock(dev, url: str, cert: Path, key: Path) -> None:
    client = DockClient(dev.settings(url, tls_cert_file=cert, tls_key_file=key), dev.name)
    with pytest.raises(DockError):
        client.call("GET", "/state")
    client.close()


def unknown(dock: DockThread) -> list[dict]:
    return [d for kind, d in dock.alerts() if kind == UNKNOWN_DEVICE]


def test_a_certificate_from_a_foreign_ca_is_refused_and_alerted(world, tmp_path):
    keys, dev, dock = world
    cert, key = stranger_cert(tmp_path, dev.name)
    knock(dev, dock.url, cert, key)
    wait_for(lambda: unknown(dock), 5, "the unknown_device alert")
    (alert,) = unknown(dock)
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    assert alert["reason"] == "foreign_ca", alert
    assert alert["name"] == dev.name and "stranger" in alert["issuer"]
    assert alert["sha256"] == hashlib.sha256(der).hexdigest()
    assert alert["peer"].startswith("127.0.0.1:") and "issuer" in alert["error"]
    assert alert["device"] is None  # a name claimed by a certificate we do not trust
    assert dock.server.devices == {}  # no archive opened for it
    # The same knock again and again: logged, one alert per minute, the rest counted.
    for _ in range(3):
        knock(dev, dock.url, cert, key)
    wait_for(lambda: dock.server.stats["refused"] == 4, 5, "four refusals")
    assert len(unknown(dock)) == 1


def test_no_client_certificate_is_refused_and_alerted(world):
    keys, dev, dock = world
    ctx = ssl.create_default_context(cafile=str(pki.tls_dir(keys) / pki.CA_CERT))
    answer = b""
    with socket.create_connection(("127.0.0.1", dock.port)) as raw:
        try:  # TLS 1.3: the client may finish its side before the dock refuses
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /v1/devices/x/state HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = s.recv(100)
        except (ssl.SSLError, OSError):
            pass
    assert answer == b""  # no HTTP answer at all
    wait_for(lambda: unknown(dock), 5, "the unknown_device alert")
    (alert,) = unknown(dock)
    assert alert["reason"] == "no_certificate" and "sha256" not in alert


def test_what_is_not_tls_is_no_alert_and_a_good_device_still_gets_in(world):
    keys, dev, dock = world
    with socket.create_connection(("127.0.0.1", dock.port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.recv(100)
    dev.record([1000])
    assert dev.offloader(dock.url).offload_round() is True
    assert dev.media_left() == [] and unknown(dock) == []


def test_a_revoked_device_is_refused_and_the_alert_reaches_the_broker(tmp_path):
    """Over a real Mosquitto: a revoked device and a foreign certificate, each an alert
    the watcher checks against the trust file."""
    keys, (dev,) = make_unit(tmp_path)
    ca = unit_ca(keys)
    watcher_cert, dock_cert = ca.issue("WATCH-01", "watcher"), ca.find(DOCK)
    broker = LocalBroker(ca, ca.issue("broker", "broker", hosts=["127.0.0.1"]), ca.unit)
    broker.start()
    trust = read_trust(keys / TRUST_NAME)
    publisher = DockPublisher(
        MqttConnection("127.0.0.1", broker.port, ca.cert_path, dock_cert.cert, dock_cert.key),
        trust.unit, DOCK, load_signing_key(keys / "docks" / f"{DOCK}.key").signer(),
        tmp_path / "outbox.db")
    publisher.start()
    events = MqttDockEvents(publisher, trust)
    board = UnitBoard(trust)
    watcher = Watcher(MqttConnection("127.0.0.1", broker.port, ca.cert_path,
                                     watcher_cert.cert, watcher_cert.key), board)
    watcher.start()
    dock = DockThread(dock_config(keys, tmp_path / "archive"), events=events)  # type: ignore
    try:
        assert watcher.subscribed.wait(10), broker.log()
        pki.revoke(keys, "device", dev.name)
        dev.record([1000])
        with pytest.raises(DockError) as e:
            dev.offloader(dock.url).offload_round()
        assert e.value.status == 403
        cert, key = stranger_cert(tmp_path, "DEV-9999")
        knock(dev, dock.url, cert, key)
        wait_for(lambda: len(board.alerts) == 2, 15, "two alerts at the watcher")
        reasons = sorted(a.detail["reason"] for a in board.alerts)
        assert reasons == ["foreign_ca", "revoked"], board.alerts
        assert {a.alert for a in board.alerts} == {UNKNOWN_DEVICE} and board.refused == []
        foreign = next(a for a in board.alerts if a.detail["reason"] == "foreign_ca")
        assert foreign.detail["name"] == "DEV-9999" and foreign.dock == DOCK
    finally:
        dock.stop()
        watcher.stop()
        events.close()
        publisher.close()
        broker.stop()
        dev.host.close()


def test_the_limiter_holds_back_repeats_and_counts_them():
    limiter = RefusalLimiter(window_s=60)
    assert limiter.admit("10.0.0.5", "aa") == 0
    assert limiter.admit("10.0.0.5", "aa") is None
    assert limiter.admit("10.0.0.6", "aa") == 0
    assert limiter.admit("10.0.0.5", "no_certificate") == 0
    limiter.window_s = 0
    assert limiter.admit("10.0.0.5", "aa") == 1  # one held back since the last alert


def test_a_revoked_device_retrying_is_alerted_once_a_minute(world):
    keys, dev, dock = world
    pki.revoke(keys, "device", dev.name)
    client = DockClient(dev.settings(dock.url), dev.name)
    for _ in range(4):
        assert client.call("GET", "/state")[0] == 403
    client.close()
    assert [d["reason"] for d in unknown(dock)] == ["revoked"]
    assert dock.server.stats["refused"] == 4
