"""The self-check decisions: battery, storage, the 24-hour rule."""

from __future__ import annotations

from device.watch import BatteryWatch, OverdueWatch, StorageWatch
from hardware.battery import BatteryStatus


def status(percent=None, minutes=None, charging=False, external=False) -> BatteryStatus:
    return BatteryStatus(percent=percent, minutes_left=minutes, charging=charging,
                         external_power=external)


def test_battery_low_warns_once_then_critical():
    watch = BatteryWatch(low_minutes=20, critical_minutes=3)
    assert watch.check(status(80, 200)) is None
    assert watch.check(status(30, 19)) == "low"
    assert watch.check(status(29, 18)) is None  # warned already
    assert watch.check(status(5, 2)) == "critical"


def test_battery_level_alone_when_no_estimate():
    watch = BatteryWatch(low_minutes=20, critical_minutes=3, low_percent=15)
    assert watch.check(status(50)) is None
    assert watch.check(status(12)) == "low"
    assert watch.check(status(2.5)) == "critical"


def test_unknown_or_charging_battery_triggers_nothing():
    watch = BatteryWatch(low_minutes=20, critical_minutes=3)
    assert watch.check(BatteryStatus.unknown("ina219", "I2C error")) is None
    assert watch.check(status(1, charging=True)) is None
    assert watch.check(status(1, external=True)) is None


def test_storage_stops_above_the_reserve():
    watch = StorageWatch(reserve_bytes=1000, headroom_bytes=500)
    assert watch.check(2000) is None
    assert watch.check(1499) == "full"
    assert not watch.can_start(1999) and watch.can_start(2000)


def test_overdue():
    h = 3_600 * 10**9
    watch = OverdueWatch(warn_hours=20, overdue_hours=24)
    assert watch.check(None, 0) is None
    assert watch.check(0, 19 * h) is None
    assert watch.check(0, 20 * h) == "warn"
    assert watch.check(0, 24 * h) == "overdue"
