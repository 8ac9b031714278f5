"""Offload: the device hands its new entries and sealed media to the dock, on its own.

An :class:`Offloader` runs on a thread of its own beside the recorder. When the
device is docked (the dock-detect input, or with ``dock_detect = "link"`` the
dock answering on its port) it makes *rounds* against the dock's HTTPS server
(``daemon/dock/server.py``), authenticated both ways by the unit's CA:

1. the dock's signed time statement, appended as ``time_sync`` (the clock set
   first when the dock says it is off by more than its threshold), once per docking;
2. where the dock's archive ends; a receipt the device has not yet taken is
   taken now (a dock that was killed after archiving signs it at restart);
3. the ledger lines after that, then the media files they seal, resumably:
   one chunk per request, so a dropped link costs at most the chunk in flight;
4. the commit, whose answer is the dock-signed receipt: checked, appended,
   and only then are the files it covers freed.

It reads the store and never writes it: appending and freeing are the host's
(the recorder's) job, so capture and sealing never wait for the dock. Only
files named by ledger entries are sent, and an entry is appended only after
its file is sealed and fsynced, so a file being written is never sent.

    >>> # offloader = Offloader(OffloadSettings.from_config(config), store, device,
    >>> #                       RecorderHost(recorder)).start()
    >>> # offloader.status()   # {"state": "offloading", "files_done": 3, ...}
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from protocol.entries import OffloadReceiptEntry, TimeSync
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR

log = logging.getLogger("custody.offload")

MAX_RANGE_ENTRIES = 20_000  # per round; the rest goes in the next one


@dataclass(frozen=True)
class OffloadSettings:
    dock_url: str  # https://HOST:PORT
    tls_cert_file: Path
    tls_key_file: Path
    tls_ca_file: Path
    dock_detect: str = "input"  # "input": the dock-detect pin; "link": the dock answers
    chunk_bytes: int = 8 << 20
    poll_s: float = 1.0
    timeout_s: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> OffloadSettings | None:
        """From the recorder's settings; None when no dock is configured."""
        if not config.dock_url:
            return None
        return cls(config.dock_url, config.tls_cert_file, config.tls_key_file,
                   config.tls_ca_file, config.dock_detect, config.offload_chunk_bytes)


class OffloadHost(Protocol):
    """What the offloader needs from whoever owns the ledger (the recorder)."""

    @property
    def docked(self) -> bool: ...

    def now_ns(self) -> int:
        """The device's wall clock, Unix ns."""

    def accept_receipt(self, envelope: Any) -> list[str]:
        """Check a dock receipt, append it, free what it covers; raises if refused."""

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        """Append the dock's time statement as ``time_sync``, first stepping the wall
        clock by ``step_ns`` (the statement's ``offset_ns``, exactly) unless None."""


class RecorderHost:
    """The recorder as the offloader's host."""

    def __init__(self, recorder: Any):
        self.recorder = recorder

    @property
    def docked(self) -> bool:
        return bool(self.recorder.docked)

    def now_ns(self) -> int:
        return int(self.recorder.clock.now() * 1e9)

    def accept_receipt(self, envelope: Any) -> list[str]:
        return list(self.recorder.accept_receipt(envelope))

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        self.recorder.sync_clock(statement, step_ns)


class DockError(Exception):
    """The dock refused or failed a call; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def client_tls(settings: OffloadSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return ctx


class _Region:
    """At most ``length`` bytes of a file from ``offset``, read as http.client asks."""

    def __init__(self, path: Path, offset: int, length: int, counter: list[int]):
        self.f = open(path, "rb")  # noqa: SIM115 - closed by the caller after the request
        self.f.seek(offset)
        self.left, self.counter = length, counter

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        self.counter[0] += len(data)
        return data

    def close(self) -> None:
        self.f.close()


class DockClient:
    """One HTTPS connection to the dock, reopened after any failure."""

    def __init__(self, settings: OffloadSettings, device: str):
        url = urlsplit(settings.dock_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"dock_url: {settings.dock_url!r} is not https://HOST:PORT")
        self.host, self.port = url.hostname, url.port or 443
        self.base = f"/v1/devices/{device}"
        self.settings = settings
        self.ctx = client_tls(settings)
        self.conn: http.client.HTTPSConnection | None = None

    def reachable(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def connect(self) -> None:
        """Open the link now (TCP and TLS), so a timed call that follows measures only itself."""
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                    timeout=self.settings.timeout_s,
                                                    blocksize=1 << 18)
        try:
            if self.conn.sock is None:
                self.conn.connect()
        except OSError as e:
            self.close()
            raise DockError(f"connect: {e}") from e

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One request; raises DockError (status 0) if there is no answer."""
        self.connect()
        assert self.conn is not None
        try:
            headers = headers or {}
            self.conn.request(method, self.base + path, body=body, headers=headers,
                              encode_chunked=headers.get("Transfer-Encoding") == "chunked")
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise DockError(f"{method} {path}: {e or type(e).__name__}") from e
        answer = {k.lower(): v for k, v in response.getheaders()}
        if response.getheader("connection", "").lower() == "close":
            self.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return response.status, answer, parsed

    def json(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        status, answer, parsed = self.call(method, path, body, headers)
        if status != 200:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            raise DockError(f"{method} {path}: {status} {error or ''}".strip(), status, answer)
        return parsed


@dataclass
class Progress:
    state: str = "undocked"
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_sent: int = 0  # body bytes sent, re-sent ones included
    rate_bytes_per_s: float = 0.0
    rounds: int = 0
    last_receipt_seq: int | None = None
    freed_files: int = 0
    clock_offset_ns: int | None = None
    last_error: str = ""


class Offloader:
    """Offloads the store to the dock whenever the device is docked. See the module doc."""

    def __init__(self, settings: OffloadSettings, store: Path, device: str, host: OffloadHost):
        self.settings, self.store, self.device, self.host = settings, Path(store), device, host
        self.client = DockClient(settings, device)
        self.progress = Progress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = False  # the time statement of this docking is appended
        self._sent = [0]
        self._lock = threading.Lock()

    # --- running ---------------------------------------------------------------------------

    def start(self) -> Offloader:
        self._thread = threading.Thread(target=self._run, name="offload", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_s + 5)
        self.client.close()

    def status(self) -> dict[str, Any]:
        with self._lock:
            p = self.progress
            return {**p.__dict__, "bytes_sent": self._sent[0], "dock": self.settings.dock_url}

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.progress, k, v)

    def docked(self) -> bool:
        if self.settings.dock_detect == "link":
            return self.client.reachable()
        return self.host.docked

    def _run(self) -> None:
        backoff = self.settings.poll_s
        while not self._stop.is_set():
            if not self.docked():
                if self.progress.state != "undocked":
                    self._set(state="undocked")
                self._synced = False
                self.client.close()
                self._stop.wait(self.settings.poll_s)
                continue
            try:
                worked = self.offload_round()
                backoff = self.settings.poll_s
                if not worked:
                    self._stop.wait(self.settings.poll_s)
            except DockError as e:
                wait = backoff
                if e.status == 503:
                    wait = float(e.headers.get("retry-after", backoff))
                else:
                    backoff = min(backoff * 2, 30.0)
                log.warning("offload: %s; again in %.1f s", e, wait)
                self._set(state="waiting", last_error=str(e))
                self._stop.wait(wait)
            except Exception as e:  # the offloader must never take the device down
                log.exception("offload round failed")
                self._set(state="failed", last_error=str(e))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # --- one round -------------------------------------------------------------------------

    def offload_round(self) -> bool:
        """Send what the dock lacks and take its receipt. False: nothing to send."""
        if not self._synced:
            self._sync_time()
        state = self.client.json("GET", "/state")
        data = (self.store / LEDGER_NAME).read_bytes()
        lines = split_lines(data[:data.rfind(b"\n") + 1])  # whole lines: one may be in writing
        self._take_receipt(state.get("receipt"), lines)
        next_seq = int(state["next_seq"])
        if next_seq > len(lines):
            raise DockError(f"the dock archived entries up to {next_seq - 1}; this ledger "
                            f"ends at {len(lines) - 1}")
        if next_seq and parse_line(lines[next_seq - 1]).digest != state["head"]:
            raise DockError(f"the dock's entry {next_seq - 1} is not this ledger's")
        new = lines[next_seq:next_seq + MAX_RANGE_ENTRIES]
        if all(_is_receipt(line) for line in new):
            self._set(state="done")
            return False  # only receipts are new: they go with the next real range
        # Lines go as they are, even one this device cannot read: judging is the dock's.
        data = b"".join(line + b"\n" for line in new)
        staged = self.client.json("PUT", f"/ledger/{next_seq}", data,
                                  {"Content-Type": "application/x-ndjson"})
        media = staged["media"]
        started, sent_before = time.monotonic(), self._sent[0]
        self._set(state="offloading", rounds=self.progress.rounds + 1,
                  files_total=len(media), files_done=0,
                  bytes_total=sum(m["size"] for m in media),
                  bytes_done=sum(m["offset"] for m in media), last_error="")
        for item in media:
            self._upload(item["file"], int(item["size"]), int(item["offset"]))
            with self._lock:
                self.progress.files_done += 1
                elapsed = max(time.monotonic() - started, 1e-6)
                self.progress.rate_bytes_per_s = (self._sent[0] - sent_before) / elapsed
        answer = self.client.json("POST", f"/commit/{next_seq}")
        self._accept(answer["receipt"])
        return True

    def _sync_time(self) -> None:
        self.client.connect()
        body = json.dumps({"device_time_ns": self.host.now_ns()}).encode()
        answer = self.client.json("POST", "/time", body, {"Content-Type": "application/json"})
        statement = answer["statement"]
        offset = json.loads(_payload(statement)).get("offset_ns")
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise DockError(0, "the dock's time statement has no offset_ns")
        # The step is the statement's offset exactly, so that the time_sync entry and
        # the statement it rests on agree (docs/format.md, 6a).
        step = offset if answer.get("set_clock") else None
        self.host.sync_clock(statement, step)
        self._synced = True
        self._set(clock_offset_ns=offset)
        log.info("dock time statement appended (offset %+.3f s%s)", offset / 1e9,
                 ", clock set" if step is not None else "")

    def _take_receipt(self, receipt: Any, lines: list[bytes]) -> None:
        """A receipt the dock holds that this ledger does not yet (the dock restarted)."""
        if receipt is None:
            return
        last = json.loads(_payload(receipt)).get("last_seq")
        have = set()
        for line in lines[-64:]:  # receipts are appended at the end, soon after the commit
            try:
                body = parse_line(line).entry.body
            except ProtocolError:
                continue
            if isinstance(body, OffloadReceiptEntry):
                have.add(json.loads(_payload(body.receipt)).get("last_seq"))
        if last not in have:
            self._accept(receipt)

    def _accept(self, receipt: Any) -> None:
        freed = self.host.accept_receipt(receipt)
        last = json.loads(_payload(receipt)).get("last_seq")
        with self._lock:
            self.progress.last_receipt_seq = last
            self.progress.freed_files += len(freed)
        log.info("receipt for entries up to %s: freed %d files", last, len(freed))

    def _upload(self, name: str, size: int, offset: int) -> None:
        path = self.store / MEDIA_DIR / name
        chunk = self.settings.chunk_bytes
        while offset < size:
            length = min(chunk, size - offset)
            region = _Region(path, offset, length, self._sent)
            try:
                status, headers, parsed = self.client.call(
                    "PATCH", f"/media/{name}", region,
                    {"Upload-Offset": str(offset), "Content-Length": str(length),
                     "Content-Type": "application/offset+octet-stream"})
            except DockError:
                if not self.docked() or self._stop.is_set():
                    raise
                status, headers = 204, {"upload-offset": str(self._offset_after_drop(name))}
                parsed = None
            finally:
                region.close()
            if status in (204, 409) and "upload-offset" in headers:
                new = int(headers["upload-offset"])
                with self._lock:
                    self.progress.bytes_done += max(new - offset, 0)
                offset = new
                continue
            if status == 503:  # busy: the same chunk again, when the dock says
                self._stop.wait(float(headers.get("retry-after", 1)))
                continue
            error = parsed.get("error") if isinstance(parsed, dict) else ""
            raise DockError(f"PATCH {name}: {status} {error}", status, headers)

    def _offset_after_drop(self, name: str) -> int:
        """Ask the dock how much of the file it holds (the link dropped mid-chunk)."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                status, headers, _ = self.client.call("HEAD", f"/media/{name}")
                if status == 204:
                    log.info("link back: %s resumes at %s", name, headers["upload-offset"])
                    return int(headers["upload-offset"])
                raise DockError(f"HEAD {name}: {status}", status, headers)
            except DockError as e:
                if e.status or time.monotonic() > deadline or not self.docked() or \
                        self._stop.is_set():
                    raise
                self._stop.wait(0.2)


def _is_receipt(line: bytes) -> bool:
    try:
        return isinstance(parse_line(line).entry.body, OffloadReceiptEntry)
    except ProtocolError:
        return False


def _payload(envelope: Any) -> bytes:
    return base64.b64decode(envelope["payload"])


class LedgerHost:
    """The host when no recorder runs (a store offloaded on its own): this process
    writes the ledger. It cannot set a clock; it records the dock's statement.

    >>> # host = LedgerHost(store, "DEV-1", key, trust)
    >>> # Offloader(settings, store, "DEV-1", host).offload_round()
    """

    def __init__(self, store: Path, device: str, key: Any, trust: Any, docked: bool = True):
        from device.ledger import LedgerWriter, system_clock
        from device.ledger_state import LedgerState

        self.store, self.device, self.trust, self.docked = Path(store), device, trust, docked
        self.ledger = LedgerWriter(self.store, device, key, system_clock())
        self.state = LedgerState.read(self.store)
        self._lock = threading.Lock()

    def append(self, body: Any) -> Any:
        with self._lock:
            signed = self.ledger.append(body)
            self.state.apply(signed)
            return signed

    def now_ns(self) -> int:
        return time.time_ns()

    def accept_receipt(self, envelope: Any) -> list[str]:
        from device.receipts import check_receipt
        from host.durable import fsync_dir

        with self._lock:
            check = check_receipt(envelope, self.trust, self.device, self.state, self.store)
        self.append(OffloadReceiptEntry(receipt=envelope))
        for path in check.files:
            path.unlink()
        if check.files:
            fsync_dir(check.files[0].parent)
        return [p.name for p in check.files]

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        now = self.now_ns()  # a store without a recorder has no clock to set: the entry
        self.append(TimeSync(old_utc_ns=now, new_utc_ns=now + (step_ns or 0), source="dock",
                             statement=statement))

    def close(self) -> None:
        self.ledger.close()
