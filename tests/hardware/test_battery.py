"""Battery contract over every backend; an unreadable gauge is "unknown", never a crash."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from hardware.battery import (
    Battery,
    BatteryStatus,
    DrainEstimator,
    INA219Battery,
    PiSugarBattery,
    SysfsBattery,
    percent_from_voltage,
)
from hardware.factory import PiFactory
from hardware.sim.battery import Phase, SimBattery, SimINA219Bus, voltage_from_percent

# -- backends made to read 76 % / 7.9 V-ish, discharging -------------------------------


def make_sysfs(root, *, capacity="76", status="Discharging", online="0", extra=None):
    bat, ac = root / "BAT0", root / "AC"
    bat.mkdir(parents=True, exist_ok=True)
    ac.mkdir(exist_ok=True)
    files = {
        bat / "type": "Battery", bat / "capacity": capacity, bat / "status": status,
        bat / "voltage_now": "7912000", bat / "current_now": "-650000",
        ac / "type": "Mains", ac / "online": online,
    }
    for path, text in {**files, **(extra or {})}.items():
        path.write_text(text + "\n")
    return root


class PiSugarHandler(socketserver.StreamRequestHandler):
    replies = {
        "battery": "76.0", "battery_v": "3.79",
        "battery_charging": "false", "battery_power_plugged": "false",
    }

    def handle(self) -> None:
        for line in self.rfile:
            what = line.decode().strip().removeprefix("get ")
            self.wfile.write(f"{what}: {self.replies.get(what, '?')}\n".encode())


@pytest.fixture
def pisugar_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), PiSugarHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(
    params=["sim", "ina219", "sysfs", "pisugar", pytest.param("pi", marks=pytest.mark.hardware)]
)
def battery(request, tmp_path) -> Battery:
    """Each backend, set up (except the real one) to read 76 % and discharging."""
    kind = request.param
    if kind == "sim":
        b = SimBattery(percent=76)
        b.discharge(1.0)
        return b
    if kind == "ina219":
        bus = SimINA219Bus(0x42)
        bus.volts, bus.current_ma = voltage_from_percent(76, 2), -650.0
        return INA219Battery(bus, 0x42, cells=2)
    if kind == "sysfs":
        return SysfsBattery(make_sysfs(tmp_path / "ps"))
    if kind == "pisugar":
        return PiSugarBattery(request.getfixturevalue("pisugar_server"))
    real = request.getfixturevalue("pi_factory").battery()
    real.is_real = True
    return real


def test_contract_reading(battery: Battery) -> None:
    status = battery.read()
    assert isinstance(status, BatteryStatus)
    assert status.known, status.error
    assert 0 <= status.percent <= 100
    if not getattr(battery, "is_real", False):
        assert status.percent == pytest.approx(76, abs=1.0)
        assert status.state == "discharging" and not status.charging
        assert status.external_power is False
        assert "76%" in str(status)
    assert status.source == battery.name
    assert battery.last is status


def test_contract_never_raises_when_unreadable(battery: Battery, monkeypatch) -> None:
    def broken() -> BatteryStatus:
        raise OSError(121, "Remote I/O error")

    monkeypatch.setattr(battery, "_read", broken)
    status = battery.read()
    assert not status.known and status.state == "unknown" and str(status) == "unknown"
    assert "Remote I/O" in status.error
    assert battery.percent is None and battery.is_low is False


# -- the simulator ----------------------------------------------------------------------


def test_sim_discharge_charge_and_script() -> None:
    b = SimBattery(percent=50, time_scale=600)  # 0.1 s real = 1 simulated minute
    b.discharge(percent_per_minute=2)
    time.sleep(0.2)
    status = b.read()
    assert 44 <= status.percent < 50 and status.state == "discharging"
    assert status.minutes_left == pytest.approx(status.percent / 2, abs=1)
    b.charge(percent_per_minute=5)
    time.sleep(0.2)
    charged = b.read()
    assert charged.percent > status.percent and charged.charging and charged.external_power
    b.script(Phase("discharge", 60, rate=10), Phase("hold", 3600))  # -10 % then flat
    time.sleep(0.25)  # 2.5 simulated minutes: past the first phase
    after = b.read().percent
    assert after == pytest.approx(charged.percent - 10, abs=1.5)
    time.sleep(0.1)
    assert b.read().percent == pytest.approx(after, abs=0.01)


def test_sim_forced_levels_low_and_voltage_curve() -> None:
    b = SimBattery(percent=90, cells=2)
    assert not b.is_low
    b.set_level(10)
    assert b.is_low and b.read().percent == 10
    assert b.read().voltage == pytest.approx(voltage_from_percent(10, 2), abs=1e-3)
    for p in (0, 5, 33, 60, 99, 100):
        assert percent_from_voltage(voltage_from_percent(p, 2), 2) == pytest.approx(p, abs=0.01)


def test_sim_gauge_failure_and_sudden_cut() -> None:
    b = SimBattery(percent=70)
    b.fail()
    assert str(b.read()) == "unknown" and "I2C" in b.read().error
    b.fail(None)
    assert b.read().known
    cut = []
    b.when_cut = lambda: cut.append(True)
    b.cut()
    b.cut()
    assert cut == [True] and b.is_cut
    assert not b.read().known


# -- INA219 register maths against the simulated bus ---------------------------------------


def test_ina219_converts_registers() -> None:
    bus = SimINA219Bus(0x42, shunt_ohms=0.01)
    gauge = INA219Battery(bus, 0x42, cells=2, shunt_ohms=0.01, capacity_mah=3000)
    bus.volts, bus.current_ma = 8.4, 1200.0  # full and charging
    status = gauge.read()
    assert status.voltage == pytest.approx(8.4, abs=0.004)
    assert status.current_ma == pytest.approx(1200, abs=1)
    assert status.percent == 100 and status.charging and status.state == "charging"
    bus.volts, bus.current_ma = 7.4, -1000.0  # 3.7 V a cell: 40 %
    status = gauge.read()
    assert status.percent == pytest.approx(40, abs=0.5) and not status.external_power
    assert status.minutes_left == pytest.approx(3000 * 0.40 / 1000 * 60, abs=1)


def test_ina219_unreadable_is_unknown() -> None:
    bus = SimINA219Bus(0x42)
    assert not INA219Battery(bus, 0x43).read().known  # nothing answers at 0x43
    bus.failing = True
    status = INA219Battery(bus, 0x42).read()
    assert status.state == "unknown" and "Remote I/O" in status.error
    bus.failing, bus.volts = False, 0.0  # gauge answers but the pack is gone
    assert not INA219Battery(bus, 0x42).read().known


def test_pi_factory_without_i2c_reports_unknown() -> None:
    # On a PC there is no smbus2 / /dev/i2c-1: the recorder must still start.
    from hardware.board import load_board

    battery = PiFactory(load_board()).battery()
    status = battery.read()
    if status.known:  # pragma: no cover - only on a Pi with a gauge fitted
        pytest.skip("a real gauge answered")
    assert str(status) == "unknown" and "INA219" in status.error


# -- sysfs and PiSugar --------------------------------------------------------------------


def test_sysfs_charging_on_mains_with_time_to_empty(tmp_path) -> None:
    root = make_sysfs(tmp_path, capacity="55", status="Charging", online="1")
    status = SysfsBattery(root).read()
    assert status.percent == 55 and status.charging and status.external_power
    assert status.voltage == pytest.approx(7.912)
    root = make_sysfs(tmp_path, extra={tmp_path / "BAT0" / "time_to_empty_now": "5400"})
    assert SysfsBattery(root, "BAT0").read().minutes_left == 90


def test_sysfs_without_a_battery_is_unknown(tmp_path) -> None:
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    assert str(SysfsBattery(tmp_path).read()) == "unknown"
    assert not SysfsBattery(tmp_path / "missing").read().known


def test_pisugar_unreachable_is_unknown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free port, nobody listening
    status = PiSugarBattery(f"127.0.0.1:{port}", timeout=0.5).read()
    assert not status.known and "Connection refused" in status.error


def test_drain_estimate_from_falling_percentages() -> None:
    estimator = DrainEstimator(window_s=600)
    assert estimator.minutes_left() is None
    for minute, percent in enumerate([80.0, 79.0, 78.0]):
        estimator.add(minute * 60.0, percent)
    assert estimator.minutes_left() == 78  # 1 % a minute, 78 % left
    estimator.reset()
    estimator.add(0.0, 60.0)
    estimator.add(120.0, 61.0)  # rising (charging): no estimate
    assert estimator.minutes_left() is None
    estimator.reset()
    estimator.add(1000.0, 50.0)
    estimator.add(1010.0, 49.0)
    assert estimator.minutes_left() is None  # ten seconds is too little history
