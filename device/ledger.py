"""The device's append-only ledger file.

:class:`LedgerWriter` is the only code that writes ``ledger.jsonl``. Each
append builds the next entry (``seq`` and ``prev`` from the last entry on
disk, so numbering survives reboots and re-installs), signs it with the
device key, writes one line and fsyncs before returning: an entry the caller
has seen returned is on the medium. Then it moves the ledger's high-water
mark (``device/high_water.py``); a ledger found shorter than that mark at
start is declared in a ``ledger_gap`` entry, and numbering goes on after the
mark, so no seq is ever reused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from device.high_water import HighWaterMark
from hardware.host.durable import write_new
from protocol.chain import EntryClock, entry_after
from protocol.entries import GENESIS_PREV, Body, EntryTime, KeyRotated, LedgerGap
from protocol.envelope import SignedEntry, parse_line, sign_entry, split_lines
from protocol.errors import ProtocolError
from protocol.journal_auth import JournalKey
from protocol.keys import SigningKey
from protocol.store_reader import LEDGER_NAME

if TYPE_CHECKING:
    from hardware.clock import Clock as DeviceClock

Clock = EntryClock
log = logging.getLogger(__name__)


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
        #: The MAC key of the sealer's recovery records, derived from the same key.
        self.journal_key = JournalKey.derive(key)
        self._lock = threading.Lock()  # appends come from several threads of the recorder
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last = self._read_last()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # Where the next entry goes: after the last one, or after the high-water mark.
        self._next_seq = 0 if self.last is None else self.last.entry.seq + 1
        self._prev = self.last.digest if self.last else GENESIS_PREV
        self._marks = HighWaterMark(self.path.parent, device, self.journal_key)
        #: The ``ledger_gap`` entry this start appended, if the ledger had lost entries.
        self.declared_gap: SignedEntry | None = None
        self._declare_lost_entries()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def _declare_lost_entries(self) -> None:
        """A ledger shorter than its high-water mark (or with its mark gone) says so."""
        mark = self._marks.read()
        last_seq = self._next_seq - 1
        if mark is not None and mark.seq <= last_seq:
            return  # the ledger reaches the mark (or is one entry past it: cut before the mark)
        if mark is None:
            # No mark: a new ledger (provisioning writes the genesis with its mark), or
            # one whose mark was removed.
            if last_seq < 0 and not self._marks.exists():
                return
            if (self.last is not None and isinstance(self.last.entry.body, KeyRotated)
                    and (last_seq, self._prev) in self._marks.claims()):
                return  # the old key's last mark, on its key_rotated entry: nothing lost
            gap = LedgerGap(first_seq=last_seq + 1, last_seq=None, last_head=None)
            log.error("%s: its high-water mark is gone; declared (%s)", self.path, gap)
        else:
            gap = LedgerGap(first_seq=last_seq + 1, last_seq=mark.seq, last_head=mark.head)
            self._next_seq, self._prev = mark.seq + 1, mark.head
            log.error("%s: entries %d..%d are gone (the ledger ends before its high-water "
                      "mark); declared", self.path, gap.first_seq, mark.seq)
        self.declared_gap = self.append(gap)

    def _read_last(self) -> SignedEntry | None:
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write torn by a power cut: never acknowledged, but still kept
            # beside the ledger (nothing is deleted) before the line is ended.
            keep = data[data.rfind(b"\n") + 1:]
            torn = self.path.with_name(f"ledger.torn-{time.time_ns()}")
            write_new(torn, keep)
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
        entry = entry_after(self._next_seq - 1, self._prev, self.device, self.clock(), body)
        signed = sign_entry(entry, self._signer)
        line = signed.to_line()
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk; the reserve exists so this never happens
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self.last = signed
        self._next_seq, self._prev = entry.seq + 1, signed.digest
        try:  # after the entry is durable: a cut in between leaves the mark one behind
            self._marks.write(entry.seq, signed.digest)
        except OSError:
            log.exception("%s: high-water mark not moved to %d", self.path, entry.seq)
        return signed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
