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
   and only then are the files it covers freed;
5. the dock's new checkpoint of the device's log, with a consistency proof
   from the one the device holds: checked against that and against the
   device's own ledger, cosigned, kept (``checkpoint.note``,
   device/checkpoint_keeper.py) and sent back; a checkpoint the device will
   not cosign is reported instead (the dock raises an alert). Done again in a
   later round if the dock's newest checkpoint is not yet cosigned.

It writes nothing of the store but ``checkpoint.note``: appending and freeing
are the host's (the recorder's) job, so capture and sealing never wait for the
dock. Only
files named by ledger entries are sent, and an entry is appended only after
its file is sealed and fsynced, so a file being written is never sent.

    >>> # offloader = Offloader(OffloadSettings.from_config(config), store, device,
    >>> #                       RecorderHost(recorder)).start()
    >>> # offloader.status()   # {"state": "offloading", "files_done": 3, ...}
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from device.checkpoint_keeper import CheckpointKeeper
from device.tls_identity import load_client_identity
from protocol.archive_log import CheckpointRefused
from protocol.entries import LedgerGap, OffloadReceiptEntry, TimeSync
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR
from protocol.time_statement import check_answer, dock_may_step

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
    #: The TLS key unwrapped in memory (device/key_custody.py): the recorder's way.
    #: None: ``tls_key_file`` is a plain PEM (a store offloaded off the device).
    tls_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Any, tls_key: bytes | None = None) -> OffloadSettings | None:
        """From the recorder's settings; None when no dock is configured."""
        if not config.dock_url:
            return None
        return cls(config.dock_url, config.tls_cert_file, config.tls_key_file,
                   config.tls_ca_file, config.dock_detect, config.offload_chunk_bytes,
                   tls_key=tls_key)


class OffloadHost(Protocol):
    """What the offloader needs from whoever owns the ledger (the recorder)."""

    @property
    def docked(self) -> bool: ...

    @property
    def checkpoints(self) -> CheckpointKeeper:
        """The device's cosigned checkpoint of its log (it holds the device key)."""

    def now_ns(self) -> int:
        """The device's wall clock, Unix ns."""

    def accept_receipt(self, envelope: Any) -> list[str]:
        """Check a dock receipt, append it, free what it covers; raises if refused."""

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        """Append the dock's time statement as ``time_sync``, first stepping the wall
        clock by ``step_ns`` (the statement's ``offset_ns``, exactly) unless None."""

    @property
    def trust(self) -> Any:
        """The unit's trust file: which docks may sign a time statement."""

    @property
    def clock_has_reference(self) -> bool:
        """Whether the wall clock was set from a reference (RTC, NTP, GNSS, a dock), so
        that a dock may step it only so far (protocol/time_statement.py)."""


class RecorderHost:
    """The recorder as the offloader's host; ``key`` is the device key that signs its
    ledger (it also cosigns the checkpoints of the device's log)."""

    def __init__(self, recorder: Any, key: Any):
        self.recorder = recorder
        self.checkpoints = CheckpointKeeper(recorder.store, recorder.config.device_id, key,
                                            recorder.trust)

    @property
    def docked(self) -> bool:
        return bool(self.recorder.docked)

    def now_ns(self) -> int:
        return int(self.recorder.clock.now() * 1e9)

    def accept_receipt(self, envelope: Any) -> list[str]:
        return list(self.recorder.accept_receipt(envelope))

    def sync_clock(self, statement: dict[str, Any], step_ns: int | None) -> None:
        self.recorder.sync_clock(statement, step_ns)

    @property
    def trust(self) -> Any:
        return self.recorder.trust

    @property
    def clock_has_reference(self) -> bool:
        return clock_has_reference(self.recorder.clock.sync.source)


def clock_has_reference(source: Any) -> bool:
    """Never set, or typed in at the console: not a reference a dock must respect."""
    return str(source) not in ("never_set", "technician")


class DockError(Exception):
    """The dock refused or failed a call; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def client_tls(settings: OffloadSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if settings.tls_key is not None:  # never on a file system (device/tls_identity.py)
        load_client_identity(ctx, settings.tls_cert_file, settings.tls_key)
    else:
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
    time_statement_refused: str = ""  # why this docking's time statement was not taken
    checkpoint_size: int | None = None  # entries of the newest checkpoint it cosigned
    checkpoint_refused: str = ""  # why it last refused one (reported to the dock)
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
        self._refused: set[str] = set()  # proposals refused and reported: not again
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
        next_seq = int(state["next_seq"])
        first = _index_of_seq(lines, next_seq)  # a ledger_gap makes seq and line apart
        if not _extends(lines, first, next_seq, state["head"]):
            self._show_divergence(next_seq, lines, first)
        self._take_receipt(state.get("receipt"), lines)
        new = lines[first:first + MAX_RANGE_ENTRIES]
        if all(_is_receipt(line) for line in new):
            self._cosign(lines, state.get("checkpoint_size"), state.get("checkpoint_cosigned"))
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
        self._cosign(lines, answer.get("checkpoint_size"), False)
        return True

    def _show_divergence(self, next_seq: int, lines: list[bytes], first: int) -> None:
        """This ledger does not extend what the dock archived (a card restored from an
        older image, a ledger cut back): send it from the last entry both should hold,
        so the dock sees where they part, alerts and keeps its copy. Nothing is freed."""
        start = max(first - 1, 0)
        entry = _entry(lines[start]) if lines else None
        seq = entry.seq if entry is not None else start
        data = b"".join(line + b"\n" for line in lines[start:start + MAX_RANGE_ENTRIES])
        self.client.json("PUT", f"/ledger/{seq}", data,
                         {"Content-Type": "application/x-ndjson"})  # refused: DockError
        raise DockError(f"the dock archived entries up to {next_seq - 1}, and this ledger "
                        "does not extend them; the dock took an overlapping range")

    def _cosign(self, lines: list[bytes], dock_size: Any, dock_cosigned: Any) -> None:
        """Step 5: cosign the dock's newest checkpoint if it is sound, else report it.
        A refusal frees nothing and keeps nothing back: receipts are separate."""
        keeper = self.host.checkpoints
        held = keeper.held_size()
        if not isinstance(dock_size, int) or (dock_cosigned and dock_size == held):
            return
        note = b""
        try:
            proposal = self.client.json("GET", f"/checkpoint?from={held or 0}")
            note = str(proposal["checkpoint"]).encode()
            proof = [base64.b64decode(h, validate=True) for h in proposal["proof"]]
        except DockError as e:
            if e.status != 409:
                raise
            reason = f"the dock has no checkpoint extending the one this device holds: {e}"
            return self._refuse(note, reason)
        except (KeyError, TypeError, ValueError) as e:
            return self._refuse(note, f"the dock's proposal is malformed: {e}")
        if note.decode(errors="replace") in self._refused:
            return
        try:
            cosigned = keeper.cosign(note, proof, lines, self.host.now_ns() // 10**9)
        except CheckpointRefused as e:
            return self._refuse(note, str(e))
        size = int(cosigned.split(b"\n")[1])
        status, _, parsed = self.client.call("PUT", f"/checkpoint/{size}", cosigned,
                                             {"Content-Type": "text/plain"})
        if status != 204:
            error = parsed.get("error") if isinstance(parsed, dict) else ""
            raise DockError(f"PUT checkpoint/{size}: {status} {error}", status)
        self._set(checkpoint_size=size)
        log.info("checkpoint of %d entries cosigned and kept", size)

    def _refuse(self, note: bytes, reason: str) -> None:
        key = note.decode(errors="replace") or reason
        if key in self._refused:
            return
        log.error("checkpoint refused, not cosigned: %s", reason)
        self._set(checkpoint_refused=reason)
        size = self.host.checkpoints.held_size() or 0
        if note:
            with contextlib.suppress(IndexError, ValueError):
                size = int(note.split(b"\n")[1])
        body = json.dumps({"reason": reason, "checkpoint": note.decode(errors="replace")
                           or None}).encode()
        status, _, _ = self.client.call("POST", f"/checkpoint/{size}/refusal", body,
                                        {"Content-Type": "application/json"})
        if status != 204:
            raise DockError(f"POST checkpoint/{size}/refusal: {status}", status)
        self._refused.add(key)

    def _sync_time(self) -> None:
        self.client.connect()
        reading = self.host.now_ns()
        body = json.dumps({"device_time_ns": reading}).encode()
        answer = self.client.json("POST", "/time", body, {"Content-Type": "application/json"})
        self._synced = True  # one statement per docking, taken or refused
        try:
            # Signed by a dock of the unit, for this device, for this very reading.
            statement = check_answer(answer.get("statement"), self.host.trust, self.device,
                                     reading)
        except (ProtocolError, AttributeError) as e:
            log.warning("dock time statement refused, clock left as it is: %s", e)
            self._set(time_statement_refused=str(e))
            return  # the offload goes on: the evidence must still leave the device
        offset = statement.offset_ns
        # The step is the statement's offset exactly, so that the time_sync entry and
        # the statement it rests on agree (docs/format.md, 6a).
        step = offset if answer.get("set_clock") else None
        if step is not None and not dock_may_step(step, self.host.clock_has_reference):
            log.warning("dock %s says the clock is off by %+.3f s: more than a dock may step "
                        "a set clock; recorded, not applied", statement.dock, offset / 1e9)
            step = None
        self.host.sync_clock(answer["statement"], step)
        self._set(clock_offset_ns=offset)
        log.info("dock time statement appended (offset %+.3f s%s)", offset / 1e9,
                 ", clock set" if step is not None else "")

    def _take_receipt(self, receipt: Any, lines: list[bytes]) -> None:
        """A receipt the dock holds that this ledger does not yet (the dock restarted)."""
        if receipt is None:
            return
        last = json.loads(_payload(receipt)).get("last_seq")
        if not isinstance(last, int) or not _has_seq(lines, last):
            log.warning("the dock's receipt up to entry %s covers entries this ledger no "
                        "longer has (declared gone): not taken", last)
            return
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


def _entry(line: bytes) -> Any:
    """The entry of a line, or None if this device cannot read it (the dock judges)."""
    try:
        return parse_line(line).entry
    except ProtocolError:
        return None


def _index_of_seq(lines: list[bytes], seq: int) -> int:
    """The index of the first line whose entry's seq is ``seq`` or more (len: none).

    Line and seq are one and the same unless a ``ledger_gap`` skipped seqs; a line
    this device cannot read is taken to be where its number says."""
    if seq <= 0:
        return 0
    if seq <= len(lines):
        before = _entry(lines[seq - 1])
        if before is None or before.seq == seq - 1:
            return seq
    try:
        return bisect.bisect_left(lines, seq, key=lambda line: parse_line(line).entry.seq)
    except ProtocolError:
        return min(seq, len(lines))


def _has_seq(lines: list[bytes], seq: int) -> bool:
    i = _index_of_seq(lines, seq)
    entry = _entry(lines[i]) if i < len(lines) else None
    return entry is not None and entry.seq == seq


def _extends(lines: list[bytes], first: int, next_seq: int, head: str) -> bool:
    """Whether this ledger goes on from the dock's archived head (``next_seq - 1``).

    Its first newer entry links to that head, or is a ``ledger_gap`` declaring the
    archive's end among the entries it says are gone (the dock checks the rest).
    What this device cannot read it sends as it is: judging that is the dock's."""
    if next_seq == 0:
        return True  # the dock holds nothing of this device yet
    if first < len(lines):
        entry = _entry(lines[first])
        if entry is None:
            return True
        if entry.seq == next_seq:
            return entry.prev == head
        return isinstance(entry.body, LedgerGap) and entry.body.first_seq <= next_seq
    if first == 0:
        return False  # nothing at all: shorter than the archive
    try:
        last = parse_line(lines[first - 1])
    except ProtocolError:
        return True
    return last.entry.seq == next_seq - 1 and last.digest == head


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

    clock_has_reference = True  # this machine's own clock, which it does not set

    def __init__(self, store: Path, device: str, key: Any, trust: Any, docked: bool = True):
        from device.ledger import LedgerWriter, system_clock
        from device.ledger_state import LedgerState

        self.store, self.device, self.trust, self.docked = Path(store), device, trust, docked
        self.checkpoints = CheckpointKeeper(self.store, device, key, trust)
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
        from hardware.host.durable import fsync_dir

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
