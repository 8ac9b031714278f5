"""The evidence volume: free and total bytes (statvfs), less a configurable reserve.

    >>> storage = Storage("/var/lib/custody", reserve_bytes=256 << 20)  # doctest: +SKIP
    >>> status = storage.status()
    >>> status.usable_bytes, status.is_full, storage.is_low

The reserve is kept back for the ledger and the system: recording stops, and says
why, while there is still room to write that it stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardware.board import StorageSettings


@dataclass(frozen=True, slots=True)
class StorageStatus:
    total_bytes: int
    free_bytes: int  # free to an unprivileged writer
    reserve_bytes: int
    low_bytes: int

    @property
    def usable_bytes(self) -> int:
        """What recording may still use: free space above the reserve."""
        return max(0, self.free_bytes - self.reserve_bytes)

    @property
    def is_full(self) -> bool:
        return self.usable_bytes == 0

    @property
    def is_low(self) -> bool:
        return self.usable_bytes < self.low_bytes

    @property
    def used_fraction(self) -> float:
        return 1 - self.free_bytes / self.total_bytes if self.total_bytes else 1.0


class Storage:
    """The real volume under ``path``, measured with ``os.statvfs``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reserve_bytes: int = 256 << 20,
        low_bytes: int = 2 << 30,
    ) -> None:
        if reserve_bytes < 0 or low_bytes < 0:
            raise ValueError("reserve_bytes and low_bytes must not be negative")
        self.path = Path(path)
        self.reserve_bytes = reserve_bytes
        self.low_bytes = low_bytes

    @classmethod
    def from_board(cls, settings: StorageSettings, path: str | None = None) -> Storage:
        return cls(
            path or settings.path,
            reserve_bytes=settings.reserve_bytes,
            low_bytes=settings.low_bytes,
        )

    def _measure(self) -> tuple[int, int]:
        st = os.statvfs(self.path)
        # f_bavail, not f_bfree: blocks kept for root are not ours to fill.
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def status(self) -> StorageStatus:
        total, free = self._measure()
        return StorageStatus(total, free, self.reserve_bytes, self.low_bytes)

    @property
    def free_bytes(self) -> int:
        return self.status().free_bytes

    @property
    def total_bytes(self) -> int:
        return self.status().total_bytes

    @property
    def usable_bytes(self) -> int:
        return self.status().usable_bytes

    @property
    def is_full(self) -> bool:
        return self.status().is_full

    @property
    def is_low(self) -> bool:
        return self.status().is_low

    def open(self, relative: str | os.PathLike[str], mode: str = "wb") -> IO[Any]:
        """Open a file on the volume (the simulator's version enforces its capacity)."""
        return open(self.path / relative, mode)  # noqa: SIM115 - the caller closes it

    def close(self) -> None:
        pass

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
