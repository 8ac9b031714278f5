"""The device's append-only ledger file.

:class:`LedgerWriter` is the only code that writes ``ledger.jsonl``. Each
append builds the next entry (``seq`` and ``prev`` from the last entry on
disk, so numbering survives reboots and re-installs), signs it with the
device key, writes one line and fsyncs before returning: an entry the caller
has seen returned is on the medium.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from protocol.chain import EntryClock, next_entry
from protocol.entries import Body, EntryTime
from protocol.envelope import SignedEntry, parse_line, sign_entry, split_lines
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.store_reader import LEDGER_NAME

if TYPE_CHECKING:
    from hardware.clock import Clock as DeviceClock

Clock = EntryClock


def boot_id() -> str:
    """The kernel's id of this boot; ``CUSTODY_BOOT_ID`` overrides it (the simulator
    gives every simulated power-on its own, as a real power cut reboots the kernel)."""
    if os.environ.get("CUSTODY_BOOT_ID"):
        return os.environ["CUSTODY_BOOT_ID"]
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: one id per process is the best we can say
        return f"pid-{os.getpid()}-{time.monotonic_ns()}"


def system_clock(source: str = "ntp", synced: bool = True) -> Clock:
    """Entry times from this machine's clocks (the device swaps in its own)."""
    boot = boot_id()

    def now() -> EntryTime:
        return EntryTime(utc_ns=time.time_ns(), clock_source=source, clock_synced=synced,
                         monotonic_ns=time.monotonic_ns(), boot_id=boot)

    return now


def entry_clock(clock: DeviceClock) -> Clock:
    """Entry times from the device's clock: wall time with its sync state."""
    boot = boot_id()

    def now() -> EntryTime:
        sync = clock.sync
        return EntryTime(utc_ns=int(clock.now() * 1e9), clock_source=str(sync.source),
                         clock_synced=sync.is_reference, monotonic_ns=time.monotonic_ns(),
                         boot_id=boot)

    return now


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LedgerWriter:
    """Appends signed entries to a store's ledger.

    >>> import tempfile
    >>> from protocol.entries import Assigned
    >>> store = Path(tempfile.mkdtemp())
    >>> ledger = LedgerWriter(store, "DEV-1", SigningKey.generate(), system_clock())
    >>> ledger.append(Assigned(officer="PC-7")).entry.seq
    0
    """

    def __init__(self, store: Path, device: str, key: SigningKey, clock: Clock):
        self.path = Path(store) / LEDGER_NAME
        self.device, self.clock = device, clock
        self._signer = key.signer()
        self._lock = threading.Lock()  # appends come from several threads of the recorder
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last = self._read_last()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @property
    def next_seq(self) -> int:
        return 0 if self.last is None else self.last.entry.seq + 1

    def _read_last(self) -> SignedEntry | None:
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write torn by a power cut: never acknowledged, but still kept
            # beside the ledger (nothing is deleted) before the line is ended.
            keep = data[data.rfind(b"\n") + 1:]
            torn = self.path.with_name(f"ledger.torn-{time.time_ns()}")
            torn.write_bytes(keep)
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(keep))
                os.fsync(f.fileno())
            data = data[: len(data) - len(keep)]
        lines = split_lines(data)
        if not lines:
            return None
        try:
            last = parse_line(lines[-1])
        except ProtocolError as e:
            raise ProtocolError(f"{self.path}: last entry unreadable: {e}") from e
        if last.entry.device != self.device:
            raise ProtocolError(f"{self.path}: ledger of device {last.entry.device!r}, "
                                f"not {self.device!r}")
        return last

    def append(self, body: Body) -> SignedEntry:
        """Sign ``body`` as the next entry and make it durable."""
        with self._lock:
            return self._append(body)

    def _append(self, body: Body) -> SignedEntry:
        entry = next_entry(self.last, self.device, self.clock(), body)
        signed = sign_entry(entry, self._signer)
        line = signed.to_line()
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk; the reserve exists so this never happens
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self.last = signed
        return signed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
