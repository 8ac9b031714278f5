"""Benchmark: 8 devices offloading to one dock over loopback, with the real transport.

    .venv/bin/python benchmarks/offload.py [--devices 8] [--mib 128] [--segment-mib 8]
                                           [--chunk-mib 8]

The figure: a unit with ``--devices`` devices, each with one recording of
``--mib`` MiB of sealed segments, docks at once. The dock is ``custody dock``
in its own process (HTTPS with client certificates, aiohttp); each device is an
:class:`device.offload.Offloader` thread in this process. Measured from the
start of the offloads until every device holds its receipt and has freed its
files: the time statement, the ledger range, the resumable uploads, the
range check, the media re-read from the archive medium, the receipt. MiB/s of
media archived.

The limit, in the same run on the same disk: the essential work with the
standard library only — the same number of mutual-TLS 1.3 connections (the
same Ed25519 certificates) over loopback, each client sending its device's
files, the server (one thread per connection) hashing every byte with
SHA-256, writing it to a file and fsyncing each file. No HTTP, no ledger, no
verification, no re-read.

``dock_rss_mb_max`` is the dock process's peak resident memory (VmHWM).

The dock runs with an ``[mqtt]`` table against a real Mosquitto started here
(TLS, client certificates, the unit's ACL), as in the field: every offload is
attested. ``attest_latency_s`` is, per device, from the last byte archived
(the offload report's ``archived_utc_ns``: archive copy fsynced, re-read,
receipt signed) to the broker's PUBACK of that device's attestation (the
outbox's ``acked_ns``), both on this machine's clock: verifying the archive
copy's ledger, building, signing, the outbox, QoS 1. The key is the worst of
the devices (goal <= 1 s), with the median beside it; the limit for it is a
bare QoS 1 publish of the same bytes on an open connection
(``attest_bare_qos1_s``). Temporary files go under ``$BENCH_DIR`` (default:
the system's temp dir). The last line is JSON.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import pki  # noqa: E402
from daemon.dock.config import DockConfig  # noqa: E402
from daemon.mqtt.client import MqttConnection  # noqa: E402
from daemon.mqtt.local_broker import LocalBroker  # noqa: E402
from daemon.pki_cli import unit_ca  # noqa: E402
from daemon.provision import (  # noqa: E402
    create_unit,
    device_key_path,
    enrol_device,
    load_signing_key,  # noqa: E402
)
from device.ledger import system_clock  # noqa: E402
from device.offload import LedgerHost, Offloader, OffloadSettings  # noqa: E402
from protocol.entries import MediaFile, RecordStart, RecordStop, Segment  # noqa: E402
from protocol.store_reader import MEDIA_DIR, TRUST_NAME, read_trust  # noqa: E402

MIB = 1 << 20
DOCK = "DOCK-01"
ATTEST_GOAL_S = 1.0


def make_devices(root: Path, count: int, mib: int, segment_mib: int) -> tuple[Path, list]:
    keys = root / "keys"
    create_unit(keys, "bench-unit", [DOCK])
    trust = read_trust(keys / TRUST_NAME)
    block = os.urandom(segment_mib * MIB)
    devices = []
    for d in range(count):
        name = f"DEV-{d + 1:04d}"
        store = root / name
        enrol_device(keys, name, store, system_clock(), officer="PC-1")
        host = LedgerHost(store, name, load_signing_key(device_key_path(keys, name)), trust)
        rec = host.append(RecordStart(trigger="button", category="scene", officer="PC-1",
                                      pre_record_seconds=0)).entry.seq
        (store / MEDIA_DIR).mkdir(exist_ok=True)
        t0 = time.time_ns()
        for i in range(mib // segment_mib):
            data = bytes([d, i & 255]) + block[2:]  # every file different
            file = f"r{rec:06d}-{i:05d}.cseg"
            (store / MEDIA_DIR / file).write_bytes(data)
            media = MediaFile(file=file, container="mp4", codecs={"video": "h264"},
                              size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                              plaintext_size=None, plaintext_sha256=None,
                              encryption={"scheme": "custody-seg/1", "recipient": "0" * 64})
            first = t0 + i * 60_000_000_000
            host.append(Segment(recording=rec, span=0, index=i, media=media,
                                first_capture_utc_ns=first,
                                last_capture_utc_ns=first + 59_966_666_667,
                                frame_period_ns=33_333_333, frames=1800, audio_samples=0,
                                audio_rate=48000))
        host.append(RecordStop(recording=rec, trigger="button"))
        devices.append((name, store, host))
    return keys, devices


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_dock(keys: Path, archive: Path, root: Path,
             broker: LocalBroker) -> tuple[subprocess.Popen, int]:
    config = DockConfig(
        dock_id=DOCK, archive=archive, key_file=keys / "docks" / f"{DOCK}.key",
        trust_file=keys / TRUST_NAME, tls_cert_file=pki.cert_path(keys, "dock", DOCK),
        tls_key_file=pki.key_path(keys, "dock", DOCK),
        tls_ca_file=pki.tls_dir(keys) / pki.CA_CERT, crl_file=pki.tls_dir(keys) / pki.CRL,
        listen_port=0, reserve_bytes=0)
    ca, cert = unit_ca(keys), unit_ca(keys).find(DOCK)
    assert cert is not None
    path = root / "dock.toml"
    path.write_text(config.to_toml() + (
        f'\n[mqtt]\nbroker = "{broker.url}"\nca = "{ca.cert_path}"\ncert = "{cert.cert}"\n'
        f'key = "{cert.key}"\noutbox = "{root / "outbox.db"}"\n'))
    proc = subprocess.Popen([sys.executable, "-m", "custody_cli", "dock", "--config",
                             str(path), "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            start_new_session=True)
    line = proc.stdout.readline().decode()
    if not line.startswith("listening"):
        raise SystemExit("the dock did not start")
    return proc, int(line.split()[2])


def attested(outbox: Path) -> dict[str, tuple[int, int | None]]:
    """device -> (archived_utc_ns, acked_ns) of each attestation in the dock's outbox."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT payload, acked_ns FROM outbox WHERE topic LIKE "
                          "'%/attestation/%'").fetchall()
    finally:
        db.close()
    out = {}
    for payload, acked in rows:
        body = json.loads(base64.b64decode(json.loads(payload)["payload"]))
        out[body["device"]] = (body["archived_utc_ns"], acked)
    return out


def measure_dock(keys: Path, devices: list, root: Path, chunk_mib: int,
                 broker: LocalBroker) -> dict:
    proc, port = run_dock(keys, root / "archive", root, broker)
    try:
        offloaders = []
        for name, store, host in devices:
            settings = OffloadSettings(
                dock_url=f"https://127.0.0.1:{port}",
                tls_cert_file=pki.cert_path(keys, "device", name),
                tls_key_file=pki.key_path(keys, "device", name),
                tls_ca_file=pki.tls_dir(keys) / pki.CA_CERT, chunk_bytes=chunk_mib * MIB,
                poll_s=0.05)
            offloaders.append(Offloader(settings, store, name, host))
        total = sum(sum(p.stat().st_size for p in (s / MEDIA_DIR).iterdir())
                    for _, s, _ in devices)
        start = time.perf_counter()
        for o in offloaders:
            o.start()
        while any(any((s / MEDIA_DIR).iterdir()) for _, s, _ in devices):
            if time.perf_counter() - start > 120:
                raise SystemExit(f"offload did not finish: {[o.status() for o in offloaders]}")
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        for o in offloaders:
            o.close()
        names = {name for name, _, _ in devices}
        deadline = time.monotonic() + 60
        while True:  # every device's attestation acknowledged by the broker
            acks = attested(root / "outbox.db")
            if set(acks) >= names and all(a is not None for _, a in acks.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"attestations not acknowledged: {acks}")
            time.sleep(0.02)
        rss = peak_rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    latencies = [(acked - archived) / 1e9 for archived, acked in acks.values()]
    return {"mib_s": total / MIB / seconds, "seconds": seconds, "bytes": total, "rss": rss,
            "attest": latencies}


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


def measure_bare_attest(keys: Path, root: Path, broker: LocalBroker, runs: int = 20) -> float:
    """Median QoS 1 publish of the last attestation's bytes, as the dock (now stopped)."""
    ca = unit_ca(keys)
    cert = ca.find(DOCK)
    assert cert is not None
    db = sqlite3.connect(f"file:{root / 'outbox.db'}?mode=ro", uri=True)
    topic, payload = db.execute("SELECT topic, payload FROM outbox WHERE topic LIKE "
                                "'%/attestation/%' ORDER BY row DESC LIMIT 1").fetchone()
    db.close()
    conn = MqttConnection("127.0.0.1", broker.port, ca.cert_path, cert.cert, cert.key)
    return statistics.median(bare_qos1(conn, topic, bytes(payload), runs))


def measure_bare(keys: Path, devices: list, root: Path, chunk_mib: int) -> dict:
    """Mutual TLS, SHA-256, write, fsync: the standard library and nothing else."""
    tls = pki.tls_dir(keys)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.load_cert_chain(pki.cert_path(keys, "dock", DOCK), pki.key_path(keys, "dock", DOCK))
    server_ctx.load_verify_locations(tls / pki.CA_CERT)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    out = root / "bare"
    out.mkdir()
    files = {name: sorted((store / MEDIA_DIR).iterdir()) for name, store, _ in devices}

    def serve(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            name = dict(rdn[0] for rdn in s.getpeercert()["subject"])["commonName"]
            buf = bytearray(1 << 18)
            view = memoryview(buf)
            for i, src in enumerate(files[name]):
                size, h = src.stat().st_size, hashlib.sha256()
                with open(out / f"{name}-{i}", "wb", buffering=0) as f:
                    left = size
                    while left:
                        n = s.recv_into(buf, min(len(buf), left))
                        h.update(view[:n])
                        f.write(view[:n])
                        left -= n
                    os.fsync(f.fileno())
                s.sendall(bytes.fromhex(h.hexdigest()))

    def accept() -> None:
        threads = []
        for _ in devices:
            conn, _ = listener.accept()
            t = threading.Thread(target=serve, args=(conn,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()

    def send(name: str) -> None:
        ctx = ssl.create_default_context(cafile=str(tls / pki.CA_CERT))
        ctx.load_cert_chain(pki.cert_path(keys, "device", name),
                            pki.key_path(keys, "device", name))
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for src in files[name]:
                with open(src, "rb") as f:
                    s.sendfile(f)
                s.recv(32)

    server = threading.Thread(target=accept)
    server.start()
    start = time.perf_counter()
    clients = [threading.Thread(target=send, args=(name,)) for name, _, _ in devices]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    server.join()
    seconds = time.perf_counter() - start
    listener.close()
    total = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    return {"mib_s": total / MIB / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--segment-mib", type=int, default=8)
    parser.add_argument("--chunk-mib", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="custody-bench-offload-", dir=os.environ.get("BENCH_DIR")))
    try:
        keys, devices = make_devices(root, args.devices, args.mib, args.segment_mib)
        ca = unit_ca(keys)
        with LocalBroker(ca, ca.issue("broker", "broker", hosts=["127.0.0.1"]),
                         ca.unit) as broker:
            os.sync()  # both start with the disk's write-back queue empty
            bare = measure_bare(keys, devices, root, args.chunk_mib)
            os.sync()
            dock = measure_dock(keys, devices, root, args.chunk_mib, broker)
            bare_attest = measure_bare_attest(keys, root, broker)
        for _, _, host in devices:
            host.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    worst = max(dock["attest"])
    result = {
        "devices": args.devices, "mib_per_device": args.mib,
        "figure": round(dock["mib_s"], 1), "limit": round(bare["mib_s"], 1),
        "ratio": round(dock["mib_s"] / bare["mib_s"], 3), "unit": "MiB/s",
        "dock_seconds": round(dock["seconds"], 2), "bare_seconds": round(bare["seconds"], 2),
        "dock_rss_mb_max": round(dock["rss"], 1),
        "attest_latency_s": round(worst, 3),  # the worst device: last byte -> PUBACK
        "attest_latency_median_s": round(statistics.median(dock["attest"]), 3),
        "attest_bare_qos1_s": round(bare_attest, 4),
        "attest_ratio": round(worst / bare_attest, 1),
        "attest_goal_s": ATTEST_GOAL_S, "attest_within_goal": worst <= ATTEST_GOAL_S,
    }
    print(f"dock {result['figure']} MiB/s, bare {result['limit']} MiB/s, "
          f"peak dock RSS {result['dock_rss_mb_max']} MB, attestation latency worst "
          f"{worst:.3f} s (bare QoS 1 {bare_attest * 1e3:.1f} ms)", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
