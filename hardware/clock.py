"""Time: the monotonic capture clock, the wall clock, the RTC, and how time was last set.

    >>> from hardware.factory import get_factory
    >>> clock = get_factory().clock()
    >>> clock.monotonic_us()        # the capture clock shared with camera and microphone
    >>> clock.now()                 # wall clock, POSIX seconds
    >>> clock.sync.source           # SyncSource.NTP, .DOCK, .RTC, ... or .NEVER
    >>> clock.set_time(t, SyncSource.DOCK)   # sets the system clock and the RTC

The sync state says where the wall clock came from: never set, the RTC (at boot),
the dock, NTP or GPS. Only the dock, NTP and GPS are references; an RTC carries
whatever it was last given.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import struct
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from hardware.camera import monotonic_us


class SyncSource(StrEnum):
    NEVER = "never_set"
    RTC = "rtc"
    DOCK = "dock"
    NTP = "ntp"
    GPS = "gps"
    TECHNICIAN = "technician"  # typed in at the serial console; not a reference


@dataclass(frozen=True, slots=True)
class ClockSync:
    """How the wall clock was last set."""

    source: SyncSource = SyncSource.NEVER
    wall_at_sync: float | None = None  # POSIX seconds just after setting
    monotonic_at_sync_us: int | None = None  # capture clock at that moment (this boot)

    @property
    def is_set(self) -> bool:
        return self.source is not SyncSource.NEVER

    @property
    def is_reference(self) -> bool:
        """Set from an outside reference (dock, NTP, GPS), not just the RTC."""
        return self.source in (SyncSource.DOCK, SyncSource.NTP, SyncSource.GPS)


class Clock(ABC):
    """Wall clock, RTC and sync state. The capture clock is always CLOCK_MONOTONIC."""

    def __init__(self) -> None:
        self._sync = ClockSync()

    def monotonic_us(self) -> int:
        return monotonic_us()

    @abstractmethod
    def now(self) -> float:
        """Wall clock, POSIX seconds."""

    def now_utc(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    @property
    def sync(self) -> ClockSync:
        return self._sync

    @abstractmethod
    def read_rtc(self) -> datetime | None:
        """The RTC's time (UTC, whole seconds), or None without a readable RTC."""

    @abstractmethod
    def set_rtc(self, when: datetime) -> None: ...

    @abstractmethod
    def _set_wall(self, posix: float) -> None: ...

    def set_time(self, when: datetime | float, source: SyncSource) -> ClockSync:
        """Set the wall clock (and the RTC, if any) from ``source``; record the sync."""
        if source is SyncSource.NEVER:
            raise ValueError("set_time needs a real source")
        posix = when.timestamp() if isinstance(when, datetime) else float(when)
        self._set_wall(posix)
        if source is not SyncSource.RTC:
            # No RTC fitted (OSError): the wall clock is still set.
            with contextlib.suppress(OSError):
                self.set_rtc(datetime.fromtimestamp(posix, UTC))
        return self._record(source)

    def sync_from_rtc(self) -> ClockSync | None:
        """At boot: set the wall clock from the RTC. None if there is no readable RTC."""
        when = self.read_rtc()
        if when is None:
            return None
        self._set_wall(when.timestamp())
        return self._record(SyncSource.RTC)

    def _record(self, source: SyncSource) -> ClockSync:
        self._sync = ClockSync(source, self.now(), self.monotonic_us())
        return self._sync

    def close(self) -> None:
        return None  # nothing to release by default

    def __enter__(self) -> Clock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# linux/rtc.h: struct rtc_time is nine ints; RTC_RD_TIME = _IOR('p', 0x09, struct
# rtc_time), RTC_SET_TIME = _IOW('p', 0x0a, struct rtc_time).
_RTC_TIME = struct.Struct("9i")
_RTC_RD_TIME = (2 << 30) | (_RTC_TIME.size << 16) | (ord("p") << 8) | 0x09
_RTC_SET_TIME = (1 << 30) | (_RTC_TIME.size << 16) | (ord("p") << 8) | 0x0A
_TIME_ERROR = 5  # adjtimex(): the kernel's clock is not synchronised


def ntp_synchronised() -> bool | None:
    """Whether the kernel says an NTP daemon has disciplined the clock (None: can't tell)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class SystemClock(Clock):
    """The Pi's clocks: CLOCK_REALTIME and the RTC at ``/dev/rtc0`` (or its sysfs view).

    The sync state survives restarts in ``state_file`` (JSON) when one is given.
    """

    def __init__(
        self,
        rtc_device: str = "/dev/rtc0",
        rtc_sysfs: str = "/sys/class/rtc/rtc0",
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.rtc_device = rtc_device
        self.rtc_sysfs = Path(rtc_sysfs)
        self.state_file = Path(state_file) if state_file else None
        self._sync = self._initial_sync()

    def _initial_sync(self) -> ClockSync:
        if self.state_file is not None:
            try:
                data = json.loads(self.state_file.read_text())
                # The monotonic stamp belongs to an earlier boot: drop it.
                return ClockSync(SyncSource(data["source"]), data.get("wall_at_sync"), None)
            except (OSError, ValueError, KeyError):
                pass
        if ntp_synchronised():
            return ClockSync(SyncSource.NTP, time.time(), monotonic_us())
        try:
            # hctosys = 1: the kernel set the system clock from this RTC at boot.
            if (self.rtc_sysfs / "hctosys").read_text().strip() == "1":
                return ClockSync(SyncSource.RTC, None, None)
        except OSError:
            pass
        return ClockSync()

    def _record(self, source: SyncSource) -> ClockSync:
        sync = super()._record(source)
        if self.state_file is not None:
            data = asdict(sync)
            data["source"] = sync.source.value
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.state_file)
        return sync

    def now(self) -> float:
        return time.time()

    def _set_wall(self, posix: float) -> None:
        time.clock_settime(time.CLOCK_REALTIME, posix)  # needs CAP_SYS_TIME

    def read_rtc(self) -> datetime | None:
        try:
            with open(self.rtc_device, "rb", buffering=0) as rtc:
                raw = bytearray(_RTC_TIME.size)
                fcntl.ioctl(rtc, _RTC_RD_TIME, raw)
            sec, minute, hour, mday, mon, year, *_ = _RTC_TIME.unpack(raw)
            return datetime(year + 1900, mon + 1, mday, hour, minute, sec, tzinfo=UTC)
        except (OSError, ValueError):
            pass
        try:
            seconds = int((self.rtc_sysfs / "since_epoch").read_text().strip())
            return datetime.fromtimestamp(seconds, UTC)
        except (OSError, ValueError):
            return None

    def set_rtc(self, when: datetime) -> None:
        utc = when.astimezone(UTC)
        raw = _RTC_TIME.pack(
            utc.second, utc.minute, utc.hour, utc.day, utc.month - 1, utc.year - 1900, 0, 0, 0
        )
        with open(self.rtc_device, "wb", buffering=0) as rtc:
            fcntl.ioctl(rtc, _RTC_SET_TIME, raw)
