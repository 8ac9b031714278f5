"""The shipped units start what exists, the way the code expects to be run."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(ROOT / "systemd" / name)
    return parser


def test_recorder_unit_runs_custody_recorder_as_a_notify_service_with_a_watchdog():
    service = unit("custody-recorder.service")["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "always"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/custody") and argv[1:3] == ["recorder", "--config"]
    assert service["RuntimeDirectoryMode"] == "0700"
    # the subcommand and option it names exist
    r = subprocess.run([sys.executable, "-m", "custody_cli", "recorder", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout


# --- every unit: clean for systemd, and hardened ----------------------------------

UNITS = ("custody-recorder.service", "custody-console@.service", "custody-dock.service")
EXPOSURE_LIMIT = 4.0  # systemd-analyze security: 0 (safe) to 10 (unsafe); "OK" ends at 4.9
CUSTODY = str(Path(sys.executable).with_name("custody"))
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def _installed_units(tmp_path: Path) -> dict[str, Path]:
    """The shipped units as they would run here: ExecStart names this venv's custody."""
    out = {}
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        assert "/opt/custody/.venv/bin/custody " in text, name
        path = tmp_path / name
        path.write_text(text.replace("/opt/custody/.venv/bin/custody", CUSTODY))
        out[name] = path
    instance = tmp_path / "custody-console@ttyGS0.service"
    instance.symlink_to(out["custody-console@.service"])
    out["custody-console@.service"] = instance
    return out


@needs_systemd
def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    units = _installed_units(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", *map(str, units.values())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def _exposure(*args: str) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", *args],
                       capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert found, r.stdout + r.stderr
    return float(found.group(1))


@needs_systemd
def test_every_unit_scores_at_most_4_in_systemd_analyze_security(tmp_path):
    scores = {name: _exposure(str(path)) for name, path in _installed_units(tmp_path).items()}
    print("systemd-analyze security --offline=yes:", scores)
    assert all(score <= EXPOSURE_LIMIT for score in scores.values()), scores


@needs_systemd
@pytest.mark.skipif(not Path("/lib/systemd/system/mosquitto.service").exists(),
                    reason="Debian's mosquitto is not installed")
def test_the_mosquitto_drop_in_hardens_debians_broker_unit(tmp_path):
    (tmp_path / "lib/systemd/system").mkdir(parents=True)
    shutil.copy("/lib/systemd/system/mosquitto.service", tmp_path / "lib/systemd/system")
    before = _exposure(f"--root={tmp_path}", "mosquitto.service")
    dropin = tmp_path / "etc/systemd/system/mosquitto.service.d/custody.conf"
    dropin.parent.mkdir(parents=True)
    shutil.copy(ROOT / "systemd" / "mosquitto-custody.conf", dropin)
    after = _exposure(f"--root={tmp_path}", "mosquitto.service")
    print(f"mosquitto.service: {before} without the drop-in, {after} with it")
    assert after <= EXPOSURE_LIMIT < before


def test_the_recorder_reaches_only_private_networks_and_writes_only_its_store():
    # It offloads to dock_url and publishes to mqtt_broker itself (tests/systemd/
    # test_booted_dock.py): IP, but only loopback, link-local and the private ranges.
    service = unit("custody-recorder.service")["Service"]
    assert "PrivateNetwork" not in service and service["IPAddressDeny"] == "any"
    assert set(service["IPAddressAllow"].split()) == {
        "localhost", "link-local", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}
    assert set(service["RestrictAddressFamilies"].split()) <= {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].split() == ["/var/lib/custody"]
    assert service["User"] != "root" and service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"].split() == ["CAP_SYS_TIME"]
    assert service["DevicePolicy"] == "closed"


def test_a_shutdown_stops_the_recorder_before_its_store_is_unmounted():
    # Units stop in the reverse order of their start: ordered after the store's
    # mount, the recorder is sent SIGTERM (which seals) before the mount goes.
    parser = unit("custody-recorder.service")
    assert "/var/lib/custody" in parser["Unit"]["RequiresMountsFor"].split()
    assert "local-fs.target" in parser["Unit"]["After"].split()
    assert parser["Unit"].get("DefaultDependencies", "yes") == "yes"  # Before=shutdown.target
    service = parser["Service"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 10


def test_what_the_device_rewrites_itself_lies_where_its_units_may_write():
    # The console's `enroll update` replaces the trust file (a signed update, checked
    # first): under ProtectSystem=strict that needs it in a ReadWritePaths folder
    # of both the console and the recorder (the booted test found it in /etc).
    from device.config import RecorderConfig

    config = RecorderConfig.from_file(ROOT / "docs/examples/recorder.toml")
    for name in ("custody-recorder.service", "custody-console@.service"):
        writable = [Path(p) for p in unit(name)["Service"]["ReadWritePaths"].split()]
        for rewritten in (config.trust_file, config.store):
            assert rewritten is not None
            assert any(rewritten.is_relative_to(w) for w in writable), (name, rewritten)


def test_the_console_owns_its_tty_and_needs_no_network():
    parser = unit("custody-console@.service")
    assert parser["Unit"]["Conflicts"] == "serial-getty@%i.service"
    service = parser["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[1:4] == ["console", "--port", "/dev/%i"]
    assert service["DeviceAllow"] == "/dev/%i rw" and service["PrivateNetwork"] == "yes"
    assert service["User"] == unit("custody-recorder.service")["Service"]["User"]  # the socket
    assert service["Restart"] == "always"
    r = subprocess.run([sys.executable, "-m", "custody_cli", "console", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--port" in r.stdout and "--config" in r.stdout
    assert service["CapabilityBoundingSet"] == ""


def test_the_dock_runs_custody_dock_as_its_own_user():
    service = unit("custody-dock.service")["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[1:3] == ["dock", "--config"]
    assert service["User"] == "custody-dock" and service["Type"] == "notify"
    assert "/srv/custody/archive" in service["ReadWritePaths"].split()
    assert service["CapabilityBoundingSet"] == ""


def test_dock_unit_runs_custody_dock_as_a_notify_service_with_a_watchdog():
    service = unit("custody-dock.service")["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/custody") and argv[1:3] == ["dock", "--config"]
    r = subprocess.run([sys.executable, "-m", "custody_cli", "dock", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout
