"""The device's self-checks: battery, storage and the 24-hour hand-in rule.

Pure decisions, so they are easy to test: each ``check`` takes a reading and
returns what the recorder must do now. The recorder polls them once a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from hardware.battery import BatteryStatus

CRITICAL_PERCENT = 3.0  # used when the gauge gives a level but no time estimate


@dataclass
class BatteryWatch:
    """Low: warn once per crossing. Critical: seal, declare, shut down cleanly.

    The gauge's own minutes-left estimate is used when it has one; otherwise
    the level: ``low_percent`` (the board's) and :data:`CRITICAL_PERCENT`.
    An unreadable gauge is "unknown" and never triggers anything.
    """

    low_minutes: float
    critical_minutes: float
    low_percent: float = 15.0
    warned: bool = False
    last: BatteryStatus | None = None  # the latest reading, for the device's status

    def check(self, status: BatteryStatus) -> str | None:
        """``"critical"``, ``"low"`` (first time only) or None."""
        self.last = status
        if not status.known:
            return None
        if status.charging or status.external_power:
            self.warned = False  # warn again after the next discharge
            return None
        minutes, percent = status.minutes_left, status.percent or 0.0
        if (minutes is not None and minutes <= self.critical_minutes) or \
                percent <= CRITICAL_PERCENT:
            return "critical"
        low = (minutes is not None and minutes <= self.low_minutes) or percent <= self.low_percent
        if low and not self.warned:
            self.warned = True
            return "low"
        if not low:
            self.warned = False
        return None


@dataclass
class StorageWatch:
    """Stop recording while the voice-note reserve still fits.

    ``reserve_bytes`` (the configured reserve plus room for the voice notes
    and the entries an interruption needs) must always stay free; recording
    stops when less than ``headroom_bytes`` (a few seconds of media) is left
    above it.
    """

    reserve_bytes: int
    headroom_bytes: int

    def check(self, free_bytes: int) -> str | None:
        if free_bytes - self.reserve_bytes < self.headroom_bytes:
            return "full"
        return None

    def can_start(self, free_bytes: int) -> bool:
        return free_bytes - self.reserve_bytes >= 2 * self.headroom_bytes


def voice_note_reserve_bytes(seconds: float, audio_rate: int) -> int:
    """Room for ``seconds`` of voice notes: raw 16-bit PCM, an upper bound for FLAC."""
    return int(seconds * audio_rate * 2)


@dataclass
class OverdueWatch:
    """Art. 10: hand recordings in within 24 hours (warn at 20)."""

    warn_hours: float
    overdue_hours: float

    def check(self, oldest_start_utc_ns: int | None, now_utc_ns: int) -> str | None:
        """``"overdue"``, ``"warn"`` or None for the oldest un-archived recording."""
        if oldest_start_utc_ns is None:
            return None
        hours = (now_utc_ns - oldest_start_utc_ns) / 3.6e12
        if hours >= self.overdue_hours:
            return "overdue"
        if hours >= self.warn_hours:
            return "warn"
        return None
