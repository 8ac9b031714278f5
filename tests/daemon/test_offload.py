"""Docking and offload over the real transport: HTTPS with the unit's client certificates."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from pathlib import Path

import pytest

from daemon import pki
from daemon.provision import device_key_path, load_signing_key
from device.offload import DockClient, DockError, LedgerHost, client_tls
from protocol.entries import TimeSync
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, read_store
from protocol.time_statement import open_time_statement
from protocol.verify import VerificationPolicy, verify
from tests.daemon.dockkit import (
    MIB,
    DockThread,
    LinkProxy,
    dock_config,
    make_unit,
    verify_archive,
    wait_for,
)


def entries_of(store: Path):
    return [parse_line(line) for line in split_lines((store / LEDGER_NAME).read_bytes())]


def test_offload_archives_verifies_receipts_and_frees(world):
    keys, (dev, _), dock, archive = world
    names = dev.record([3 * MIB + 7, 1000, 200_000])
    offloader = dev.offloader(dock.url)
    assert offloader.offload_round() is True

    # The archive is a store `custody verify` takes as it is, and it is intact.
    report = verify_archive(archive, dev.name)
    assert report.verdict == "intact", [f.message for f in report.findings]
    assert sorted(p.name for p in (archive / "devices" / dev.name / MEDIA_DIR).iterdir()) == \
        sorted(names)
    for p in (archive / "devices" / dev.name / MEDIA_DIR).iterdir():
        assert p.stat().st_mode & 0o222 == 0  # read-only
    # The device took the receipt, appended it, and freed exactly the offloaded files.
    assert dev.media_left() == []
    kinds = [s.entry.kind for s in entries_of(dev.store)]
    assert kinds[-1] == "offload_receipt"
    # ... and its own store still verifies, the freed files covered by the receipt.
    contents = read_store(dev.store)
    own = verify(contents.ledger, contents.media, dev.host.trust, VerificationPolicy())
    assert own.verdict == "intact", [f.message for f in own.findings]
    assert {f.kind for f in own.findings} == {"offloaded"}
    # The dock's time statement is in the ledger, signed by the dock, for this device.
    syncs = [s.entry.body for s in entries_of(dev.store) if isinstance(s.entry.body, TimeSync)]
    assert len(syncs) == 1 and syncs[0].source == "dock"
    statement = open_time_statement(syncs[0].statement, dev.host.trust)
    assert statement.device == dev.name and statement.dock == "DOCK-01"
    assert abs(statement.offset_ns) < 2e9
    # Progress in the status; the offload event for the MQTT side.
    status = offloader.status()
    assert status["files_done"] == status["files_total"] == 3
    assert status["bytes_done"] == status["bytes_total"] == sum([3 * MIB + 7, 1000, 200_000])
    assert status["freed_files"] == 3 and status["rate_bytes_per_s"] > 0
    (offload,) = dock.events.offloads
    assert offload.device == dev.name and offload.first_seq == 0
    assert offload.last_seq == kinds.index("offload_receipt") - 1
    # Nothing new but the receipt: no round; the receipt goes with the next range.
    assert offloader.offload_round() is False
    dev.record([5000])
    assert offloader.offload_round() is True
    assert verify_archive(archive, dev.name).verdict == "intact"
    assert dev.media_left() == []
    assert not dock.alerts()


def test_offloads_on_its_own_when_docked_and_stops_when_undocked(world):
    _, (dev, _), dock, archive = world
    dev.host.docked = False
    dev.record([2 * MIB])
    offloader = dev.offloader(dock.url).start()
    try:
        time.sleep(0.5)
        assert offloader.status()["state"] == "undocked" and dev.media_left()
        dev.host.docked = True  # the dock-detect input
        wait_for(lambda: dev.media_left() == [], what="the offload")
        # Docked while recording: what is sealed later leaves too, without a press.
        dev.record([1000, 2000])
        wait_for(lambda: dev.media_left() == [], what="the second offload")
        assert verify_archive(archive, dev.name).verdict == "intact"
    finally:
        offloader.close()


def test_link_detect_offloads_when_the_dock_answers(world):
    _, (dev, _), dock, archive = world
    dev.host.docked = False  # no dock-detect input: the link itself is the sign
    dev.record([3000])
    offloader = dev.offloader(dock.url, dock_detect="link").start()
    try:
        wait_for(lambda: dev.media_left() == [], what="the offload")
    finally:
        offloader.close()
    unreachable = dev.offloader("https://127.0.0.1:9", dock_detect="link")
    assert unreachable.docked() is False


def test_link_dropped_mid_transfer_resends_at_most_one_chunk(world):
    _, (dev, _), dock, archive = world
    chunk = 1 * MIB
    dev.record([12 * MIB + 3])
    proxy = LinkProxy(dock.port)
    try:
        offloader = dev.offloader(proxy.url, chunk_bytes=chunk)
        proxy.drop_after(5 * MIB + MIB // 2)  # in the middle of the sixth chunk
        assert offloader.offload_round() is True
        assert proxy.drops == 1
        sent = offloader.status()["bytes_sent"]
        assert 12 * MIB + 3 < sent <= 12 * MIB + 3 + chunk
        assert verify_archive(archive, dev.name).verdict == "intact"
        assert dev.media_left() == []
    finally:
        proxy.close()


def _alerts(dock: DockThread, reason: str) -> list[dict]:
    return [d for k, d in dock.events.alerts if d.get("reason") == reason]


def _nothing_released(dev, archive: Path) -> None:
    assert dev.media_left() == sorted(dev.files)
    assert not any(s.entry.kind == "offload_receipt" for s in entries_of(dev.store))
    ledger = archive / "devices" / dev.name / LEDGER_NAME
    assert not ledger.exists()
    media = archive / "devices" / dev.name / MEDIA_DIR
    assert not media.exists() or list(media.iterdir()) == []


def test_altered_segment_on_the_device_frees_nothing_and_alerts(world):
    _, (dev, _), dock, archive = world
    names = dev.record([2 * MIB, 3000])
    path = dev.store / MEDIA_DIR / names[0]
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DockError) as e:
        dev.offloader(dock.url).offload_round()
    assert e.value.status == 422
    _nothing_released(dev, archive)
    (alert,) = _alerts(dock, "media_hash")
    quarantined = Path(alert["quarantined"])
    assert quarantined.read_bytes() == bytes(data)  # the bad copy kept, as evidence
    assert quarantined.is_relative_to(archive / "quarantine")


def test_altered_ledger_line_frees_nothing_and_alerts(world):
    _, (dev, _), dock, archive = world
    dev.record([4000])
    ledger = dev.store / LEDGER_NAME
    lines = split_lines(ledger.read_bytes())
    envelope = json.loads(lines[3])
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["body"]["frames"] = 31
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    lines[3] = json.dumps(envelope).encode()
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DockError) as e:
        dev.offloader(dock.url).offload_round()
    assert e.value.status == 422
    _nothing_released(dev, archive)
    assert _alerts(dock, "bad_signature") or _alerts(dock, "prev_mismatch")
    assert list((archive / "quarantine" / dev.name).iterdir())


def test_path_in_a_file_name_is_refused_and_nothing_lands_outside(world, tmp_path):
    keys, (dev, _), dock, archive = world
    dev.record([4000])
    before = sorted(p.name for p in tmp_path.iterdir())
    # A ledger entry naming "../evil", signed by the device's own key (a device gone
    # bad): the model refuses to build one, so the JSON is written by hand.
    from protocol.envelope import ENTRY_PAYLOAD_TYPE, encode_json, sign_payload

    ledger = dev.store / LEDGER_NAME
    lines = split_lines(ledger.read_bytes())
    key = load_signing_key(device_key_path(keys, dev.name))
    last, seg = parse_line(lines[-1]), parse_line(lines[-2]).entry
    raw = seg.to_dict()
    raw.update(seq=last.entry.seq + 1, prev=last.digest)
    raw["body"]["media"]["file"] = "../evil"
    env = sign_payload(encode_json(raw), ENTRY_PAYLOAD_TYPE, [key.signer()])
    ledger.write_bytes(ledger.read_bytes() + encode_json(env.to_dict()) + b"\n")
    with pytest.raises(DockError) as e:
        dev.offloader(dock.url).offload_round()
    assert e.value.status == 422
    assert _alerts(dock, "malformed_entry")
    # A file name with a path in the URL itself.
    client = DockClient(dev.settings(dock.url), dev.name)
    status, _, _ = client.call("HEAD", "/media/..%2Fevil")
    assert status in (400, 404)
    status, _, _ = client.call("PATCH", "/media/..%2F..%2Fevil", b"x",
                               {"Upload-Offset": "0", "Content-Length": "1"})
    assert status in (400, 404)
    client.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (archive.parent / "evil").exists() and not (archive / "evil").exists()
    assert dev.media_left() == sorted(dev.files)


def test_upload_longer_than_announced_is_refused(world):
    _, (dev, _), dock, archive = world
    (name,) = dev.record([10_000])
    client = DockClient(dev.settings(dock.url), dev.name)
    lines = (dev.store / LEDGER_NAME).read_bytes()
    status, _, staged = client.call("PUT", "/ledger/0", lines)
    assert status == 200 and staged["media"][0]["size"] == 10_000
    status, _, _ = client.call("PATCH", f"/media/{name}", b"x" * 10_001,
                               {"Upload-Offset": "0", "Content-Length": "10001"})
    assert status == 413
    assert _alerts(dock, "upload_too_long")
    # A chunked body that runs past the sealed size is cut off the same way.
    def body():
        for _ in range(11):
            yield b"y" * 1000
    status, _, _ = client.call("PATCH", f"/media/{name}", body(),
                               {"Upload-Offset": "0", "Transfer-Encoding": "chunked"})
    assert status == 413
    assert len(_alerts(dock, "upload_too_long")) == 2
    status, _, _ = client.call("POST", "/commit/0")
    assert status == 422  # the file is short: nothing is archived
    client.close()
    _nothing_released(dev, archive)


def test_archive_full_is_507_alerts_and_releases_nothing(world, tmp_path):
    keys, (dev, _), dock, archive = world
    dock.stop()
    full = DockThread(dock_config(keys, archive, reserve_bytes=1 << 50))
    try:
        dev.record([3000])
        with pytest.raises(DockError) as e:
            dev.offloader(full.url).offload_round()
        assert e.value.status == 507
        assert full.alerts("archive_full")
        _nothing_released(dev, archive)
    finally:
        full.stop()
        world[2].__init__(dock_config(keys, archive))  # for the fixture's stop()


def test_unknown_revoked_and_impersonating_devices_are_refused(world):
    keys, (dev, other), dock, archive = world
    dev.record([1000])
    # Another device's certificate used for this device's store.
    client = DockClient(other.settings(dock.url), dev.name)
    status, _, _ = client.call("GET", "/state")
    assert status == 403
    assert _alerts(dock, "impersonation")
    client.close()
    # A certificate from the unit's CA for a device that is not enrolled.
    pki.issue(keys, "device", "DEV-GHOST")
    ghost = dev.settings(dock.url, tls_cert_file=pki.cert_path(keys, "device", "DEV-GHOST"),
                         tls_key_file=pki.key_path(keys, "device", "DEV-GHOST"))
    client = DockClient(ghost, "DEV-GHOST")
    assert client.call("GET", "/state")[0] == 403
    assert _alerts(dock, "not_enrolled")
    client.close()
    # Revoked: the CRL is re-read when it changes.
    pki.revoke(keys, "device", dev.name)
    with pytest.raises(DockError) as e:
        dev.offloader(dock.url).offload_round()
    assert e.value.status == 403
    assert _alerts(dock, "revoked")
    _nothing_released(dev, archive)
    # No client certificate at all: the handshake fails.
    ctx = ssl.create_default_context(cafile=str(pki.tls_dir(keys) / pki.CA_CERT))
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", dock.port, context=ctx, timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        conn.request("GET", f"/v1/devices/{dev.name}/state")
        conn.getresponse().read()
    conn.close()


def test_busy_dock_answers_503_with_retry_after(world, tmp_path):
    keys, (dev, other), dock, archive = world
    dock.stop()
    busy = DockThread(dock_config(keys, archive, max_uploads=1, retry_after_s=1))
    try:
        (name,) = dev.record([4 * MIB])
        client = DockClient(dev.settings(busy.url), dev.name)
        client.call("PUT", "/ledger/0", (dev.store / LEDGER_NAME).read_bytes())
        gate = threading.Event()

        def slow():
            yield b"a" * 1000
            gate.wait(10)
            yield b"b" * 1000

        result = {}
        t = threading.Thread(target=lambda: result.update(r=client.call(
            "PATCH", f"/media/{name}", slow(),
            {"Upload-Offset": "0", "Transfer-Encoding": "chunked"})))
        t.start()
        wait_for(lambda: busy.server.uploads_active == 1, what="the first upload")
        other.record([1000])
        c2 = DockClient(other.settings(busy.url), other.name)
        c2.call("PUT", "/ledger/0", (other.store / LEDGER_NAME).read_bytes())
        status, headers, _ = c2.call("PATCH", f"/media/{other.files[0]}", b"z" * 1000,
                                     {"Upload-Offset": "0", "Content-Length": "1000"})
        assert status == 503 and headers["retry-after"] == "1"
        gate.set()
        t.join(10)
        assert result["r"][0] == 204
        c2.close()
        client.close()
        # The offloader itself waits as told and then gets through.
        off = other.offloader(busy.url)
        assert off.offload_round() is True
    finally:
        busy.stop()
        world[2].__init__(dock_config(keys, archive))


def test_eight_devices_at_once(tmp_path):
    keys, devices = make_unit(tmp_path, devices=8)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    try:
        for i, d in enumerate(devices):
            d.record([2 * MIB + i, 1000 * (i + 1)])
        offloaders = [d.offloader(dock.url).start() for d in devices]
        try:
            wait_for(lambda: all(not d.media_left() for d in devices), 60, "8 offloads")
            # All eight docked at once: each holds its own mutual-TLS connection.
            assert dock.server.runner is not None
            assert len(dock.server.runner.server.connections) == 8
        finally:
            for o in offloaders:
                o.close()
        for d in devices:
            assert verify_archive(tmp_path / "archive", d.name).verdict == "intact"
        assert len(dock.events.offloads) == 8 and not dock.alerts()
    finally:
        dock.stop()
        for d in devices:
            d.host.close()


def test_dock_sets_a_clock_that_is_off(world):
    _, (dev, _), dock, archive = world

    class FastClock(LedgerHost):
        set_to: int | None = None

        def now_ns(self) -> int:
            return time.time_ns() + 5_000_000_000  # five seconds ahead

        def sync_clock(self, statement, step_ns):
            self.set_to = None if step_ns is None else self.now_ns() + step_ns
            super().sync_clock(statement, step_ns)

    dev.host.close()
    host = FastClock(dev.store, dev.name, load_signing_key(device_key_path(dev.keys, dev.name)),
                     dev.host.trust)
    dev.host = host
    dev.record([1000])
    dev.offloader(dock.url).offload_round()
    assert host.set_to is not None and abs(host.set_to - time.time_ns()) < 1e9
    sync = [s.entry.body for s in entries_of(dev.store) if isinstance(s.entry.body, TimeSync)]
    statement = open_time_statement(sync[0].statement, host.trust)
    assert -5.5e9 < statement.offset_ns < -4.5e9  # the dock's clock minus the device's


def test_client_tls_refuses_a_dock_outside_the_unit(world, tmp_path):
    keys, (dev, _), dock, _ = world
    from daemon.provision import create_unit

    create_unit(tmp_path / "stranger", "stranger", ["DOCK-01"])
    settings = dev.settings(dock.url, tls_ca_file=pki.tls_dir(tmp_path / "stranger")
                            / pki.CA_CERT)
    client_tls(settings)
    client = DockClient(settings, dev.name)
    with pytest.raises(DockError):
        client.call("GET", "/state")
