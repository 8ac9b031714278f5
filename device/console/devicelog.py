"""The device's log file: what the recorder and the console say, one line each, in UTC.

Both processes append to the same file (``log_file``); the console's ``log [N]``
shows its last lines, so a technician sees the recorder's messages even while
the recorder is down. Every console login, failed login and action is written
here. The log is for people; the ledger is the evidence.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
log = logging.getLogger("custody.console")


def log_to_device_log(path: Path) -> None:
    """Also write this process's log to the device's log file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:  # a missing log file must never stop the recorder
        log.warning("cannot write the device log %s: %s", path, e)
        return
    formatter = logging.Formatter(FORMAT, TIME_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)


def last_lines(path: Path, count: int, max_bytes: int = 1 << 20) -> list[str]:
    """The last ``count`` lines of the log (reading at most its last ``max_bytes``)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        tail = f.read()
    lines = deque(tail.decode("utf-8", "replace").splitlines(), maxlen=count)
    return list(lines)
