"""systemd/install-pi.sh and install-dock.sh, run as a unit's technician would.

There is no Pi here, so the scripts are run two ways: ``--dry-run`` (every step
printed, nothing done) and ``--root DIR`` (every file written under DIR, units
enabled and users made with systemd's own ``--root`` tools, package installs
skipped), which is the real script's logic against a throw-away system tree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PI = ROOT / "systemd" / "install-pi.sh"
DOCK = ROOT / "systemd" / "install-dock.sh"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait\n"


def run(script: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def files_under(root: Path) -> dict[str, bytes | str]:
    """Every path under root with its content (files) or target (links)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "-> " + os.readlink(path)
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    boot = tmp_path / "pi" / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "config.txt").write_text("arm_64bit=1\n")
    return tmp_path / "pi"


def test_a_dry_run_prints_every_step_and_changes_nothing(pi_root):
    before = files_under(pi_root)
    out = run(PI, "--dry-run", "--root", str(pi_root), "--serial", "uart", "--rtc", "ds3231").stdout
    assert files_under(pi_root) == before
    for step in ("== Debian packages", "== The code in /opt/custody", "== The recorder's user",
                 "== Settings", "== Serial maintenance console: uart on ttyS0",
                 "== Real-time clock: ds3231", "== systemd units"):
        assert step in out, step
    enabled = "enable custody-recorder.service custody-console@ttyS0.service"
    assert f"+ systemctl --root={pi_root} {enabled}" in out
    assert "+ append to /boot/firmware/config.txt: dtoverlay=i2c-rtc,ds3231" in out


def test_a_dry_run_on_the_live_system_names_the_packages_and_the_venv():
    out = run(PI, "--dry-run").stdout
    assert "apt-get install -y --no-install-recommends python3-picamera2" in out
    assert "python3 -m venv --system-site-packages /opt/custody/.venv" in out
    assert "+ systemctl enable custody-recorder.service custody-console@ttyGS0.service" in out


def test_the_pi_install_places_units_users_settings_and_boot_config(pi_root):
    run(PI, "--root", str(pi_root), "--serial", "uart", "--rtc", "ds3231", "--device-id", "BWC-7")
    etc = pi_root / "etc"
    wants = etc / "systemd/system/multi-user.target.wants"
    units = "/etc/systemd/system"
    assert os.readlink(wants / "custody-recorder.service") == f"{units}/custody-recorder.service"
    console = wants / "custody-console@ttyS0.service"
    assert os.readlink(console) == f"{units}/custody-console@.service"
    assert os.readlink(etc / "systemd/system/serial-getty@ttyS0.service") == "/dev/null"  # masked
    assert (etc / "systemd/system/custody-recorder.service").read_bytes() == \
        (ROOT / "systemd/custody-recorder.service").read_bytes()
    passwd = (etc / "passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("custody:"))
    assert user.endswith(":/usr/sbin/nologin")
    rows = [line.split(":") for line in (etc / "group").read_text().splitlines()]
    groups = {row[0]: row[3] for row in rows}
    assert all("custody" in groups[g].split(",") for g in ("video", "audio", "gpio", "i2c"))
    settings = etc / "custody/recorder.toml"
    assert 'device_id = "BWC-7"' in settings.read_text()
    assert settings.stat().st_mode & 0o777 == 0o640
    # root's, readable by the recorder's group: the service reads but cannot change them
    gid = int(next(row[2] for row in rows if row[0] == "custody"))
    assert (settings.stat().st_uid, settings.stat().st_gid) == (0, gid)
    boot = pi_root / "boot/firmware"
    assert (boot / "cmdline.txt").read_text() == CMDLINE.replace("console=serial0,115200 ", "")
    assert (boot / "config.txt").read_text().splitlines() == [
        "arm_64bit=1", "enable_uart=1", "dtparam=i2c_arm=on", "dtoverlay=i2c-rtc,ds3231"]
    assert (pi_root / "opt/custody/device/agent.py").is_file()
    assert not (pi_root / "opt/custody/.git").exists()


def test_the_installed_settings_are_ones_the_recorder_accepts(pi_root):
    from device.config import load_config

    run(PI, "--root", str(pi_root), "--serial", "none", "--device-id", "BWC-7")
    config = load_config(pi_root / "etc/custody/recorder.toml")
    assert config.device_id == "BWC-7" and config.hardware == "pi"


def test_installing_twice_changes_nothing_and_keeps_the_units_settings(pi_root):
    args = ("--root", str(pi_root), "--serial", "gadget", "--rtc", "pcf85063a",
            "--device-id", "BWC-7")
    run(PI, *args)
    settings = pi_root / "etc/custody/recorder.toml"
    settings.write_text(settings.read_text() + "segment_seconds = 30\n")  # the unit's own edit
    first = files_under(pi_root)
    out = run(PI, *args).stdout
    assert files_under(pi_root) == first
    assert "keeping the existing /etc/custody/recorder.toml" in out
    config = (pi_root / "boot/firmware/config.txt").read_text().splitlines()
    assert config.count("dtoverlay=dwc2,dr_mode=peripheral") == 1
    assert "g_cdc" in (pi_root / "etc/modules-load.d/custody-gadget.conf").read_text().split()


def test_bad_options_are_refused_by_name(pi_root):
    r = run(PI, "--root", str(pi_root), "--serial", "bluetooth", ok=False)
    assert r.returncode == 2 and "--serial" in r.stderr
    r = run(PI, "--root", str(pi_root), "--device-id", "../etc", ok=False)
    assert r.returncode == 2 and "--device-id" in r.stderr
    r = run(DOCK, "--root", str(pi_root), "--mosquitto-conf", "/nonexistent", ok=False)
    assert r.returncode == 2 and "--mosquitto-conf" in r.stderr
    assert not (pi_root / "etc").exists()  # refused before anything was done


def test_the_dock_install_places_the_broker_drop_in_archive_and_units(tmp_path):
    root = tmp_path / "dock"
    broker = tmp_path / "custody.conf"
    broker.write_text("persistence true\npersistence_location /etc/mosquitto/custody/data/\n"
                      "listener 8883 127.0.0.1\n")
    # Debian's mosquitto package (not installed under --root) made its user and group.
    (root / "etc").mkdir(parents=True)
    (tmp_path / "mosquitto.conf").write_text("u mosquitto - - /var/lib/mosquitto\n")
    subprocess.run(["systemd-sysusers", f"--root={root}", str(tmp_path / "mosquitto.conf")],
                   check=True, capture_output=True)
    run(DOCK, "--root", str(root), "--archive-device", "/dev/sdb1", "--mosquitto-conf", str(broker))
    etc = root / "etc"
    wants = etc / "systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "custody-dock.service") == "/etc/systemd/system/custody-dock.service"
    assert (etc / "systemd/system/mosquitto.service.d/custody.conf").read_bytes() == \
        (ROOT / "systemd/mosquitto-custody.conf").read_bytes()
    broker_settings = etc / "mosquitto/conf.d/custody.conf"
    # Debian's mosquitto.conf says where it persists: a second one would be refused.
    assert broker_settings.read_text() == "listener 8883 127.0.0.1\n"
    mosquitto_gid = int(next(line.split(":")[2] for line in (etc / "group").read_text()
                             .splitlines() if line.startswith("mosquitto:")))
    assert broker_settings.stat().st_gid == mosquitto_gid  # the broker starts as mosquitto
    fstab = (etc / "fstab").read_text()
    assert "/dev/sdb1 /srv/custody/archive ext4 nodev,nosuid,noexec 0 2" in fstab
    assert (root / "srv/custody/archive").is_dir()
    dock = next(line.split(":") for line in (etc / "passwd").read_text().splitlines()
                if line.startswith("custody-dock:"))
    uid, gid = int(dock[2]), int(dock[3])
    archive = (root / "srv/custody/archive").stat()
    assert (archive.st_uid, archive.st_gid, archive.st_mode & 0o777) == (uid, gid, 0o750)
    settings = (etc / "custody/dock.toml").stat()
    assert (settings.st_uid, settings.st_gid, settings.st_mode & 0o777) == (0, gid, 0o640)


def test_the_installed_dock_settings_are_ones_the_dock_accepts():
    import dataclasses
    import tomllib

    from daemon.dock.config import DockConfig
    from daemon.mqtt.settings import MqttSettings

    text = (ROOT / "docs/examples/dock.toml").read_text()
    top = text[:text.index("[mqtt]")]
    config = DockConfig.from_toml(top, source="dock.toml")  # raises on a bad or unknown key
    assert config.archive == Path("/srv/custody/archive")
    # The [mqtt] table's files exist only on a dock; its keys are the settings'.
    mqtt = tomllib.loads(text)["mqtt"]
    assert set(mqtt) <= {f.name for f in dataclasses.fields(MqttSettings)}
