"""The archive's audit log: who wrote, annotated, searched, viewed, exported or
deleted what (Art. 12: who saw what), append-only and hash-chained.

Each line of ``audit.jsonl`` is one compact JSON record::

    {"seq": 7, "prev": "<sha256 of line 6>", "utc_ns": ..., "who": "custodian:LI",
     "action": "search", "object": "DEV-0001/5" | null, "details": {...}}

``prev`` is the SHA-256 of the previous line's bytes (without its newline), so
removing, reordering or editing a record breaks the chain from there on;
:func:`verify_audit` checks it. Appends hold an exclusive ``flock`` so the CLI
and the web view can write at once, and are fsynced before returning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.host.durable import fsync_dir

GENESIS = "0" * 64
ACTIONS = ("write", "annotate", "hold", "release", "search", "view", "export", "delete",
           "checkpoint", "login", "acknowledge")


class AuditError(Exception):
    """The audit log's chain is broken; names the line."""


@dataclass
class AuditRecord:
    seq: int
    prev: str
    utc_ns: int
    who: str
    action: str
    object: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


class AuditLog:
    """Appends to and reads ``audit.jsonl``."""

    def __init__(self, path: Path, clock: Callable[[], int] = time.time_ns):
        self.path, self.clock = Path(path), clock

    def append(self, who: str, action: str, object: str | None = None,
               **details: Any) -> AuditRecord:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        if not who:
            raise ValueError("an audited action needs who did it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = self._tail(fd)
            record = AuditRecord(seq, prev, self.clock(), who, action, object, details)
            os.write(fd, record.line() + b"\n")
            os.fsync(fd)
            if seq == 0:
                fsync_dir(self.path.parent)  # a new log: its name must be durable too
            return record
        finally:
            os.close(fd)  # releases the lock

    def head(self) -> tuple[int, str]:
        """How many records there are and the SHA-256 of the last one's line (what a
        checkpoint anchors, protocol/audit_anchor.py)."""
        if not self.path.is_file():
            return 0, GENESIS
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return self._tail(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _tail(fd: int) -> tuple[int, str]:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        # Read back far enough for the last line; records are small.
        step = 4096
        while True:
            start = max(0, size - step)
            data = os.pread(fd, size - start, start)
            body = data[:-1] if data.endswith(b"\n") else data
            cut = body.rfind(b"\n")
            if cut >= 0 or start == 0:
                last = body[cut + 1:]
                return json.loads(last)["seq"] + 1, hashlib.sha256(last).hexdigest()
            step *= 4

    def records(self) -> Iterator[AuditRecord]:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            for line in f:
                yield AuditRecord(**json.loads(line))

    def about(self, object: str) -> list[AuditRecord]:
        return [r for r in self.records() if r.object == object]


def verify_audit(path: Path) -> int:
    """Check the chain of an audit log; returns the number of records.

    Raises :class:`AuditError` naming the first line that does not link.
    """
    prev, count = GENESIS, 0
    if not Path(path).is_file():
        return 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                raise AuditError(f"{path}:{number}: torn last line")
            line = raw[:-1]
            try:
                record = json.loads(line)
            except ValueError as e:
                raise AuditError(f"{path}:{number}: not JSON") from e
            if record.get("seq") != count or record.get("prev") != prev:
                raise AuditError(f"{path}:{number}: does not link to the record before it "
                                 "(removed, reordered or edited)")
            prev, count = hashlib.sha256(line).hexdigest(), count + 1
    return count
