"""A unit with a real dock (HTTPS, client certificates) and devices that offload to it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon import pki
from daemon.dock.config import DockConfig
from daemon.dock.server import DockServer
from daemon.events import RecordingEvents
from daemon.provision import create_unit, device_key_path, enrol_device, load_signing_key
from device.ledger import system_clock
from device.offload import LedgerHost, Offloader, OffloadSettings
from protocol.entries import MediaFile, RecordStart, RecordStop, Segment
from protocol.store_reader import MEDIA_DIR, TRUST_NAME, read_store, read_trust
from protocol.verify import VerificationPolicy, verify

UNIT, DOCK = "test-unit", "DOCK-01"
MIB = 1 << 20


def dock_config(keys: Path, archive: Path, **overrides: object) -> DockConfig:
    values = dict(
        dock_id=DOCK, archive=archive, key_file=keys / "docks" / f"{DOCK}.key",
        trust_file=keys / TRUST_NAME, tls_cert_file=pki.cert_path(keys, "dock", DOCK),
        tls_key_file=pki.key_path(keys, "dock", DOCK), tls_ca_file=pki.tls_dir(keys) / pki.CA_CERT,
        crl_file=pki.tls_dir(keys) / pki.CRL, listen_port=0, reserve_bytes=0)
    values.update(overrides)
    return DockConfig(**values)  # type: ignore[arg-type]


class DockThread:
    """The dock's server on an event loop of its own thread, on a free loopback port."""

    def __init__(self, config: DockConfig, events: RecordingEvents | None = None):
        self.events = events or RecordingEvents()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = DockServer(config, self.events)
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def alerts(self, kind: str | None = None) -> list[tuple[str, dict]]:
        return [a for a in self.events.alerts if kind is None or a[0] == kind]


@dataclass
class Device:
    """A device store whose ledger this test writes (no recorder: a LedgerHost)."""

    name: str
    store: Path
    host: LedgerHost
    keys: Path
    recordings: int = 0
    files: list[str] = field(default_factory=list)

    def settings(self, url: str, **overrides: object) -> OffloadSettings:
        values = dict(dock_url=url, tls_cert_file=pki.cert_path(self.keys, "device", self.name),
                      tls_key_file=pki.key_path(self.keys, "device", self.name),
                      tls_ca_file=pki.tls_dir(self.keys) / pki.CA_CERT, chunk_bytes=1 * MIB,
                      poll_s=0.1, timeout_s=10.0)
        values.update(overrides)
        return OffloadSettings(**values)  # type: ignore[arg-type]

    def offloader(self, url: str, **overrides: object) -> Offloader:
        return Offloader(self.settings(url, **overrides), self.store, self.name, self.host)

    def record(self, sizes: list[int], seed: int = 0) -> list[str]:
        """A recording with one segment per size (random bytes: the dock checks hashes).

        Made faster than real time, its captures lie before their entries, as a
        pre-record buffer's would (a capture after its own entry is a finding)."""
        lead = len(sizes) + 1
        start = self.host.append(RecordStart(trigger="button", category="scene",
                                             officer="PC-1", pre_record_seconds=lead))
        rec, names = start.entry.seq, []
        t0 = time.time_ns() - lead * 1_000_000_000
        for i, size in enumerate(sizes):
            name = f"r{rec:06d}-{i:05d}.cseg"
            data = os.urandom(size)
            path = self.store / MEDIA_DIR / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            media = MediaFile(file=name, container="mp4", codecs={"video": "h264"}, size=size,
                              sha256=hashlib.sha256(data).hexdigest(), plaintext_size=None,
                              plaintext_sha256=None,
                              encryption={"scheme": "custody-seg/1", "recipient": "0" * 64})
            first = t0 + i * 1_000_000_000
            self.host.append(Segment(recording=rec, span=0, index=i, media=media,
                                     first_capture_utc_ns=first,
                                     last_capture_utc_ns=first + 966_666_667,
                                     frame_period_ns=33_333_333, frames=30, audio_samples=0,
                                     audio_rate=48000))
            names.append(name)
        self.host.append(RecordStop(recording=rec, trigger="button"))
        self.files += names
        return names

    def media_left(self) -> list[str]:
        return sorted(p.name for p in (self.store / MEDIA_DIR).iterdir())


def make_unit(root: Path, devices: int = 1) -> tuple[Path, list[Device]]:
    keys = root / "keys"
    create_unit(keys, UNIT, [DOCK])
    out = []
    for i in range(devices):
        name = f"DEV-{i + 1:04d}"
        store = root / name
        enrol_device(keys, name, store, system_clock(), officer="PC-1")
        host = LedgerHost(store, name, load_signing_key(device_key_path(keys, name)),
                          read_trust(keys / TRUST_NAME))
        out.append(Device(name, store, host, keys))
    return keys, out


def verify_archive(archive: Path, device: str):
    """`custody verify`'s check of one device's archived store."""
    contents = read_store(archive / "devices" / device)
    trust = read_trust(archive / TRUST_NAME)
    return verify(contents.ledger, contents.media, trust,
                  VerificationPolicy(receipts=contents.receipts))


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class LinkProxy:
    """A TCP relay on loopback standing for the dock link; it can drop the link.

    ``drop_after(n)`` cuts every connection once ``n`` more bytes went device -> dock.
    """

    def __init__(self, target_port: int):
        import socket

        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list = []
        self.upstream_bytes = 0
        self.drop_at: int | None = None
        self.drops = 0
        self.flowing = threading.Event()  # cleared: the link stalls (holds every byte)
        self.flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def drop_after(self, n: int) -> None:
        with self.lock:
            self.drop_at = self.upstream_bytes + n

    def cut(self) -> None:
        import socket

        with self.lock:
            conns, self.conns = self.conns, []
            self.drops += 1
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False),
                             daemon=True).start()

    def _pipe(self, src, dst, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                self.flowing.wait()
                dst.sendall(data)
                if upstream:
                    with self.lock:
                        self.upstream_bytes += len(data)
                        due = self.drop_at is not None and self.upstream_bytes >= self.drop_at
                        if due:
                            self.drop_at = None
                    if due:
                        self.cut()
                        return
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        self.cut()
