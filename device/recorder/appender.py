"""The one place the recorder appends to its ledger.

:class:`EntryAppender` owns the :class:`~device.ledger.LedgerWriter`, what
the device knows from its ledger (:class:`~device.ledger_state.LedgerState`)
and the clock-step rule. Every entry the recorder writes goes through
:meth:`EntryAppender.append`, from whichever thread: the entry is appended
and the state updated under one lock, so the state never lags the ledger
and two threads never interleave a ``time_sync`` with another entry.

Hook here what must see every entry (an offload client, a console's audit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from device.ledger import LedgerWriter
from device.ledger_state import LedgerState
from hardware.clock import Clock, SyncSource
from protocol.entries import Body, TimeSync
from protocol.envelope import SignedEntry

log = logging.getLogger(__name__)

CLOCK_JUMP_NS = 1_000_000_000  # a wall-clock step larger than this is a signed time_sync


class EntryAppender:
    """Appends the recorder's entries, in order, and keeps what they say.

    >>> # appender = EntryAppender(ledger, clock)
    >>> # appender.append(Marker(phase="site"))   # first a time_sync if the clock stepped
    >>> # appender.known.officer                  # what the ledger says, up to date
    """

    def __init__(self, ledger: LedgerWriter, clock: Clock):
        self.ledger, self.clock = ledger, clock
        self.store = ledger.path.parent
        self.known = LedgerState.read(self.store)
        self._lock = threading.RLock()
        #: Capture clock (monotonic) -> UTC, as last measured; a step is a time_sync.
        self.utc_offset_ns = self._current_offset_ns()
        #: Called with each entry once appended (under the lock, in ledger order).
        self.on_appended: list[Callable[[SignedEntry], None]] = []

    def append(self, body: Body) -> SignedEntry:
        """Append an entry, first declaring any wall-clock step since the last one."""
        with self._lock:
            self._check_clock()
            return self._append(body)

    def check_clock(self) -> None:
        """Declare a wall-clock step now (the recorder asks every half second when idle)."""
        with self._lock:
            self._check_clock()

    def apply_time_statement(self, statement: dict[str, Any], step_ns: int | None
                             ) -> SignedEntry:
        """A dock's signed time statement: step the wall clock by exactly its offset (if
        the dock says so) and append it as one ``time_sync`` whose step is that offset
        (or none: docs/format.md, 6a). The step is declared here, once."""
        with self._lock:
            old = int(self.clock.now() * 1e9)
            new = old + (step_ns or 0)
            if step_ns is not None:
                self.clock.set_time(new / 1e9, SyncSource.DOCK)
            self.utc_offset_ns = self._current_offset_ns()
            return self._append(TimeSync(old_utc_ns=old, new_utc_ns=new, source="dock",
                                         statement=statement))

    def _append(self, body: Body) -> SignedEntry:
        signed = self.ledger.append(body)
        self.known.apply(signed)
        for hook in self.on_appended:
            hook(signed)
        return signed

    def _current_offset_ns(self) -> int:
        return int(self.clock.now() * 1e9) - time.monotonic_ns()

    def _check_clock(self) -> None:
        offset = self._current_offset_ns()
        step = offset - self.utc_offset_ns
        if abs(step) > CLOCK_JUMP_NS:
            mono = time.monotonic_ns()
            self.utc_offset_ns = offset
            self._append(TimeSync(old_utc_ns=mono + offset - step, new_utc_ns=mono + offset,
                                  source=str(self.clock.sync.source)))
            log.warning("wall clock stepped %.3f s; time_sync appended", step / 1e9)
