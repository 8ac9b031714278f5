"""Simulated wall clock and RTC, with injectable offset, drift and jumps.

    >>> clock = SimClock(offset_s=-90.0, drift_ppm=50)   # 90 s slow, gaining 50 ppm
    >>> clock.jump(3600)                                  # someone set it an hour ahead
    >>> clock.set_time(time.time(), SyncSource.DOCK)      # the dock puts it right
    >>> clock.sync.source
    <SyncSource.DOCK: 'dock'>

The capture clock (``monotonic_us``) is never simulated: camera and microphone
timestamps stay real, exactly as on the Pi, where setting the time never moves
CLOCK_MONOTONIC. Nothing here touches the host's clocks.
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from hardware.clock import Clock, ClockSync, SyncSource


class SimClock(Clock):
    def __init__(
        self,
        *,
        offset_s: float = 0.0,
        drift_ppm: float = 0.0,
        has_rtc: bool = True,
        rtc_offset_s: float = 0.0,
        rtc_drift_ppm: float = 0.0,
        sync: SyncSource = SyncSource.NEVER,
    ) -> None:
        super().__init__()
        self._lock = threading.Lock()
        mono = time.monotonic()
        self._base_wall, self._base_mono = time.time() + offset_s, mono
        self._drift = drift_ppm * 1e-6
        self.has_rtc = has_rtc
        self.rtc_fails = False
        self._rtc_base, self._rtc_mono = time.time() + rtc_offset_s, mono
        self._rtc_drift = rtc_drift_ppm * 1e-6
        self.jumps: list[float] = []
        self.when_jumped: Callable[[float], None] | None = None
        if sync is not SyncSource.NEVER:
            self._sync = ClockSync(sync, self.now(), self.monotonic_us())

    def now(self) -> float:
        with self._lock:
            return self._base_wall + (time.monotonic() - self._base_mono) * (1 + self._drift)

    def _rebase(self, wall: float) -> None:
        self._base_wall, self._base_mono = wall, time.monotonic()

    @property
    def offset_s(self) -> float:
        """How far the simulated wall clock is from the host's true time."""
        return self.now() - time.time()

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._rebase(time.time() + seconds)

    def set_drift(self, ppm: float) -> None:
        with self._lock:
            self._rebase(self._base_wall + (time.monotonic() - self._base_mono) * (1 + self._drift))
            self._drift = ppm * 1e-6

    def jump(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (as a bad NTP step or a user would)."""
        with self._lock:
            self._base_wall += seconds
        self.jumps.append(seconds)
        if self.when_jumped is not None:
            self.when_jumped(seconds)

    def _set_wall(self, posix: float) -> None:
        with self._lock:
            self._rebase(posix)

    # -- RTC ----------------------------------------------------------------------

    def _rtc_now(self) -> float:
        return self._rtc_base + (time.monotonic() - self._rtc_mono) * (1 + self._rtc_drift)

    def read_rtc(self) -> datetime | None:
        if not self.has_rtc or self.rtc_fails:
            return None
        # A real RTC counts whole seconds.
        return datetime.fromtimestamp(math.floor(self._rtc_now()), UTC)

    def set_rtc(self, when: datetime) -> None:
        if not self.has_rtc:
            raise OSError(errno.ENODEV, "no RTC fitted")
        if self.rtc_fails:
            raise OSError(errno.EIO, "RTC not answering")
        self._rtc_base, self._rtc_mono = when.timestamp(), time.monotonic()
