"""The hash-chain rule: what the next entry of a ledger is (pure).

An entry's ``seq`` is one more than the last entry's (0 for the first) and its
``prev`` is the last entry's payload digest (``GENESIS_PREV`` for the first).
Whoever writes a ledger — the device's ``LedgerWriter``, the dock's
provisioning writing a device's genesis — builds entries with this one rule.

>>> from protocol.entries import Assigned, EntryTime
>>> t = EntryTime(utc_ns=1, clock_source="rtc", clock_synced=True, monotonic_ns=1, boot_id="b")
>>> first = next_entry(None, "DEV-1", t, Assigned(officer="PC-7"))
>>> first.seq, first.prev == GENESIS_PREV
(0, True)
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.entries import GENESIS_PREV, Body, Entry, EntryTime
from protocol.envelope import SignedEntry

#: Where entry times come from (each writer brings its own clock).
EntryClock = Callable[[], EntryTime]


def next_entry(last: SignedEntry | None, device: str, time: EntryTime, body: Body) -> Entry:
    """The entry that follows ``last`` (None: the ledger's first) in ``device``'s ledger."""
    return entry_after(-1 if last is None else last.entry.seq,
                       GENESIS_PREV if last is None else last.digest, device, time, body)


def entry_after(seq: int, digest: str, device: str, time: EntryTime, body: Body) -> Entry:
    """The entry that follows the one numbered ``seq`` with payload ``digest`` (-1 and
    ``GENESIS_PREV``: none). A device continuing after entries it lost (a declared
    ``ledger_gap``) follows its high-water mark rather than its last line."""
    return Entry(device=device, seq=seq + 1, prev=digest, time=time, body=body)
