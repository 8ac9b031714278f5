"""Simulated storage: a capacity limit over a real directory, so "disk full" comes early.

    >>> storage = SimStorage(tmp_path, capacity_bytes=10_000_000, reserve_bytes=1_000_000)
    >>> with storage.open("seg.mp4") as f:          # doctest: +SKIP
    ...     f.write(b"x" * 20_000_000)              # OSError(ENOSPC) at the capacity

Used space is what the files under the directory take (their sizes), so whatever
writes there - through :meth:`open` or not - counts against the capacity. Writes
through :meth:`open` fail with ``ENOSPC`` exactly when the capacity would be
exceeded, as a full filesystem would fail them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Any

from hardware.storage import Storage


def directory_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed while we walked
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class SimStorage(Storage):
    def __init__(
        self,
        path: str | os.PathLike[str],
        capacity_bytes: int,
        *,
        reserve_bytes: int = 0,
        low_bytes: int = 0,
    ) -> None:
        super().__init__(path, reserve_bytes=reserve_bytes, low_bytes=low_bytes)
        if capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self.path.mkdir(parents=True, exist_ok=True)

    def _measure(self) -> tuple[int, int]:
        free = self.capacity_bytes - directory_bytes(self.path)
        # Never claim more room than the real disk has.
        _, real_free = super()._measure()
        return self.capacity_bytes, max(0, min(free, real_free))

    def open(self, relative: str | os.PathLike[str], mode: str = "wb") -> IO[Any]:
        if "b" not in mode:
            raise ValueError("SimStorage.open supports binary modes only")
        return _CappedFile(self, self.path / relative, mode)


class _CappedFile:
    """A binary file whose writes fail with ENOSPC once the capacity is reached."""

    def __init__(self, storage: SimStorage, path: Path, mode: str) -> None:
        self._storage = storage
        self._file = open(path, mode)  # noqa: SIM115 - closed by close()/__exit__
        self.name = str(path)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._file.flush()
        room = self._storage.capacity_bytes - directory_bytes(self._storage.path)
        size = len(memoryview(data).cast("B"))
        if size > room:
            # A real full disk may accept part of a write; keep what fits, then fail.
            if room > 0:
                self._file.write(bytes(memoryview(data).cast("B")[:room]))
                self._file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _CappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def close(self) -> None:
        self._file.close()
