"""Storage (statvfs and the capacity-limited simulator), clocks, and the console port."""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import UTC, datetime

import pytest

from hardware.clock import ClockSync, SyncSource, SystemClock
from hardware.serialport import SerialPort, find_console_port
from hardware.sim.clock import SimClock
from hardware.sim.storage import SimStorage
from hardware.storage import Storage

# -- storage -----------------------------------------------------------------------------


def test_storage_reports_the_real_volume_less_the_reserve(tmp_path) -> None:
    st = os.statvfs(tmp_path)
    storage = Storage(tmp_path, reserve_bytes=10 << 20, low_bytes=1 << 60)
    status = storage.status()
    assert status.total_bytes == st.f_blocks * st.f_frsize
    assert abs(status.free_bytes - st.f_bavail * st.f_frsize) < 64 << 20  # others write too
    assert status.usable_bytes == max(0, status.free_bytes - (10 << 20))
    assert status.is_low  # below an absurd "low" mark
    huge = Storage(tmp_path, reserve_bytes=status.total_bytes)
    assert huge.is_full and huge.usable_bytes == 0
    with pytest.raises(ValueError):
        Storage(tmp_path, reserve_bytes=-1)


def test_sim_storage_fills_up_at_its_capacity(tmp_path) -> None:
    storage = SimStorage(tmp_path / "store", 100_000, reserve_bytes=10_000, low_bytes=30_000)
    assert storage.status().usable_bytes == 90_000 and not storage.is_low
    (storage.path / "other.bin").write_bytes(b"x" * 50_000)  # any writer counts
    assert storage.free_bytes == 50_000 and storage.usable_bytes == 40_000
    with storage.open("seg.mp4") as f:
        f.write(b"y" * 30_000)
        assert storage.is_low
        with pytest.raises(OSError) as info:
            f.write(b"z" * 30_000)
        assert info.value.errno == errno.ENOSPC
    assert storage.free_bytes == 0 and storage.is_full
    assert (storage.path / "seg.mp4").stat().st_size == 50_000  # what fitted was kept
    os.remove(storage.path / "other.bin")  # offloaded: room again
    assert storage.usable_bytes == 40_000


def test_sim_factory_storage_is_a_small_disk(sim_hardware) -> None:
    storage = sim_hardware.storage()
    assert storage.total_bytes == sim_hardware.capacity_bytes
    assert storage.path.is_relative_to(sim_hardware.storage_root)


# -- clocks -----------------------------------------------------------------------------


def test_sim_clock_offset_drift_and_jump() -> None:
    clock = SimClock(offset_s=-90.0)
    assert clock.offset_s == pytest.approx(-90.0, abs=0.01)
    assert clock.sync == ClockSync() and not clock.sync.is_set
    clock.set_drift(100_000)  # 10 %: big enough to see in 0.2 s
    time.sleep(0.2)
    assert clock.offset_s == pytest.approx(-90.0 + 0.02, abs=0.006)
    jumped = []
    clock.when_jumped = jumped.append
    before = clock.now()
    clock.jump(3600)
    assert clock.now() - before == pytest.approx(3600, abs=0.01)
    assert jumped == [3600] and clock.jumps == [3600]
    mono = clock.monotonic_us()
    assert abs(mono - time.monotonic_ns() // 1000) < 5_000  # the capture clock is untouched


def test_sim_clock_sync_sets_wall_and_rtc() -> None:
    clock = SimClock(offset_s=500.0, rtc_offset_s=-7200.0)
    assert clock.read_rtc().timestamp() == pytest.approx(time.time() - 7200, abs=1.01)
    now = time.time()
    sync = clock.set_time(now, SyncSource.DOCK)
    assert clock.offset_s == pytest.approx(0.0, abs=0.01)
    assert sync.source is SyncSource.DOCK and sync.is_reference
    assert clock.sync is sync and sync.wall_at_sync == pytest.approx(now, abs=0.01)
    assert clock.read_rtc().timestamp() == pytest.approx(now, abs=1.01)
    assert clock.read_rtc().microsecond == 0  # an RTC counts whole seconds
    clock.set_offset(-30.0)
    boot = clock.sync_from_rtc()
    assert boot.source is SyncSource.RTC and not boot.is_reference
    assert clock.offset_s == pytest.approx(0.0, abs=1.01)


def test_sim_clock_without_rtc() -> None:
    clock = SimClock(has_rtc=False)
    assert clock.read_rtc() is None and clock.sync_from_rtc() is None
    assert clock.set_time(datetime.now(UTC), SyncSource.NTP).source is SyncSource.NTP
    with pytest.raises(ValueError):
        clock.set_time(time.time(), SyncSource.NEVER)


def test_system_clock_reads_rtc_from_sysfs_and_keeps_sync_state(tmp_path) -> None:
    rtc = tmp_path / "rtc0"
    rtc.mkdir()
    (rtc / "since_epoch").write_text("1700000000\n")
    (rtc / "hctosys").write_text("1\n")
    state = tmp_path / "clock-sync.json"
    clock = SystemClock(str(tmp_path / "no-rtc-device"), str(rtc), state)
    assert clock.read_rtc() == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert clock.sync.source in (SyncSource.NTP, SyncSource.RTC)  # NTP if the host is synced
    assert abs(clock.now() - time.time()) < 0.01
    clock._record(SyncSource.DOCK)  # what set_time records (setting the host clock needs root)
    saved = json.loads(state.read_text())
    assert saved["source"] == "dock"
    again = SystemClock(str(tmp_path / "no-rtc-device"), str(rtc), state)
    assert again.sync.source is SyncSource.DOCK  # survives a restart
    assert again.sync.monotonic_at_sync_us is None  # ... but not across boots
    with pytest.raises(OSError):
        clock.set_rtc(datetime.now(UTC))  # no /dev/rtc0 here


@pytest.mark.hardware
def test_pi_rtc_reads_a_plausible_time(pi_factory) -> None:
    clock = pi_factory.clock()
    rtc = clock.read_rtc()
    assert rtc is not None, "no RTC: check the DS3231 and dtoverlay=i2c-rtc,ds3231"
    assert rtc.year >= 2024


# -- serial console ------------------------------------------------------------------------


def test_console_port_talks_both_ways(console_cable) -> None:
    with SerialPort(["ttyGS0-missing", console_cable.device_path], 115_200) as port:
        assert port.is_open and port.path == console_cable.device_path
        console_cable.technician.write(b"status\r\n")
        assert port.readline(timeout=2) == b"status\r\n"
        port.write(b"custody> " + bytes(range(256)))  # raw: every byte passes untouched
        got = console_cable.technician.read_until(bytes([255]), timeout=2)
        assert got == b"custody> " + bytes(range(256))
    assert not port.is_open


def test_console_port_picks_the_first_present(tmp_path) -> None:
    (tmp_path / "ttyAMA0").touch()
    (tmp_path / "ttyS0").touch()
    assert find_console_port(["ttyGS0", "ttyAMA0", "ttyS0"], str(tmp_path)) == str(
        tmp_path / "ttyAMA0"
    )
    assert find_console_port(["ttyGS0"], str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="ttyGS0"):
        SerialPort(["/nonexistent/ttyGS0"])


def test_sim_factory_console_cable(sim_hardware) -> None:
    port = sim_hardware.serial_port()
    port.write(b"hello\n")
    assert sim_hardware.cable.technician.read_until(timeout=2) == b"hello\n"
    assert port.baudrate == sim_hardware.board.serial.baudrate
