"""Trees installed the way a unit installs a device and a dock, for booting (container.py).

Each step is the install script's own (``--root TREE``), then what
docs/install-pi.md and docs/install-dock.md leave to do by hand: provisioning's
keys and trust file, and on a dock Debian's mosquitto package (its user and
``mosquitto.conf``, which ``apt-get install`` would have brought). The unit's keys
come from ``custody sim``, which also enrols the device's store and wraps its keys
with the simulated board's OTP secret; the device runs on simulated hardware.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from device.config import RecorderConfig
from tests.systemd.container import ROOT, install_venv, make_tree

SCENARIO = '[device]\nvideo = "320x180@10"\npre_record_seconds = 0\n\n[[at]]\nt = 0.5\ndo = "end"\n'
#: What a confined service logs when its confinement stops something (EPERM from the
#: system-call filter, EROFS from ProtectSystem, EACCES from the users), a crash, or
#: a part it had to do without. Not ERROR alone: under load the simulated camera is
#: late after a boot, which the recorder declares (at ERROR) and resumes at once.
DENIALS = re.compile(r"denied|not permitted|read-only file system|seccomp|SIGSYS|"
                     r"Traceback|unavailable", re.IGNORECASE)
DOCK_PORT = 8443
BROKER_PORT = 8883


def custody(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class Unit:
    """What ``custody sim`` provisioned: the unit's keys, the device, its enrolled store."""

    out: Path
    device_id: str

    @property
    def keys(self) -> Path:
        return self.out / "keys"

    @property
    def trust(self) -> Path:
        return self.keys / "trust.json"


def provision(tmp_path: Path) -> Unit:
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    out = tmp_path / "sim"
    r = custody("sim", tmp_path / "scenario.toml", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return Unit(out, RecorderConfig.from_file(out / "recorder.toml").device_id)


def new_tree(tmp_path: Path) -> Path:
    tree = make_tree(tmp_path / "tree")
    install_venv(tree)
    (tree / "var/log/journal").mkdir(parents=True)  # kept, to be read after the poweroff
    return tree


def run_script(script: str, tree: Path, *args: object) -> str:
    r = subprocess.run([ROOT / "systemd" / script, "--root", tree, *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def put(source: Path, dest: Path, gid: int, mode: int = 0o640) -> None:
    """A provisioned file: root's, readable by the service's group ``gid``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, dest)
    shutil.chown(dest, 0, gid)
    dest.chmod(mode)


def install_device(tree: Path, unit: Unit, store_mount: Path, **settings: object) -> None:
    """install-pi.sh into ``tree``, the device provisioned, running on simulated hardware
    with ``settings`` (with a ``dock_url``, its TLS files too); its enrolled store copied
    to ``store_mount`` (to be bind-mounted at /var/lib/custody, the store's own
    filesystem as an SD card's data partition is)."""
    run_script("install-pi.sh", tree, "--device-id", unit.device_id, "--serial", "none")
    etc = tree / "etc/custody"
    gid = group_id(tree, "custody")
    put(unit.out / "device-keys/signing.key", etc / "device.key", gid)
    # The simulated board's OTP (a Pi's is in its silicon), read-only for the recorder.
    for secret in (unit.out / "otp").iterdir():
        put(secret, etc / "otp" / secret.name, gid)
    shutil.chown(etc / "otp", 0, gid)
    (etc / "otp").chmod(0o750)
    if settings.get("dock_url"):
        settings = {**device_tls(tree, unit), **settings}
    config = RecorderConfig.from_file(etc / "recorder.toml").with_overrides({
        "hardware": "sim", "otp_state_dir": "/etc/custody/otp", "video": "320x180@10",
        "pre_record_seconds": 0, "segment_seconds": 2, "sim_epoch_unix_ns": time.time_ns(),
        **settings})
    (etc / "recorder.toml").write_text(config.to_toml())
    assert config.store == Path("/var/lib/custody/store")
    store_mount.mkdir()
    shutil.copytree(unit.out / "device", store_mount / "store")
    # The trust file is the device's state: the console's enroll update replaces it.
    assert config.trust_file == Path("/var/lib/custody/trust.json")
    put(unit.trust, store_mount / "trust.json", gid)
    shutil.chown(store_mount / "trust.json", user_id(tree, "custody"), gid)


def device_tls(tree: Path, unit: Unit) -> dict[str, str]:
    """The device's TLS files for the dock, its key wrapped by the board's OTP as
    provisioning leaves it (``custody otp wrap --purpose tls``); recorder settings."""
    from device.key_custody import wrap_tls_key, write_wrapped_key
    from hardware.sim.otp import SimOtp

    etc, gid = tree / "etc/custody", group_id(tree, "custody")
    secret = SimOtp(unit.out / "otp").read() or b""
    plain = unit.keys / "tls/devices" / f"{unit.device_id}.key"
    wrapped = unit.out / "tls.key.wrapped"
    write_wrapped_key(wrapped, wrap_tls_key(plain.read_bytes(), secret, unit.device_id))
    put(wrapped, etc / "tls/device.key", gid)
    put(unit.keys / "tls/devices" / f"{unit.device_id}.crt", etc / "tls/device.crt", gid)
    put(unit.keys / "tls/ca.crt", etc / "tls/ca.crt", gid)
    return {"tls_key_file": "/etc/custody/tls/device.key",
            "tls_cert_file": "/etc/custody/tls/device.crt",
            "tls_ca_file": "/etc/custody/tls/ca.crt"}


def install_dock(tree: Path, unit: Unit, work: Path) -> None:
    """install-dock.sh into ``tree`` with the broker settings ``custody provision
    mosquitto`` makes (in /etc/mosquitto/custody), after what Debian's mosquitto
    package would have done; the dock's keys where docs/examples/dock.toml names
    them; listening on the container's loopback (it has no other link)."""
    # Debian's mosquitto package: its user and its mosquitto.conf (include_dir conf.d).
    users = work / "mosquitto.sysusers"
    users.write_text('u mosquitto - "Mosquitto MQTT broker" /var/lib/mosquitto\n')
    subprocess.run(["systemd-sysusers", f"--root={tree}", users], check=True,
                   capture_output=True)
    (tree / "etc/mosquitto").mkdir(parents=True, exist_ok=True)
    shutil.copy("/etc/mosquitto/mosquitto.conf", tree / "etc/mosquitto/mosquitto.conf")
    # `custody provision mosquitto --out /etc/mosquitto/custody`, made here and moved in.
    # (provision checks that user mosquitto can reach its folder: not under pytest's 0700)
    made = Path(tempfile.mkdtemp(prefix="custody-broker-")) / "broker"
    made.parent.chmod(0o755)
    try:
        r = custody("provision", "mosquitto", "--keys", unit.keys, "--out", made,
                    "--host", "127.0.0.1", "--port", BROKER_PORT)
        assert r.returncode == 0, r.stdout + r.stderr
        folder = tree / "etc/mosquitto/custody"
        shutil.copytree(made, folder)
    finally:
        shutil.rmtree(made.parent)
    for path in [folder, *folder.rglob("*")]:
        if path.is_file():
            path.write_text(path.read_text().replace(str(made), "/etc/mosquitto/custody"))
        shutil.chown(path, user_id(tree, "mosquitto"), group_id(tree, "mosquitto"))

    run_script("install-dock.sh", tree, "--mosquitto-conf", folder / "mosquitto.conf")
    gid = group_id(tree, "custody-dock")
    dock = tree / "etc/custody/dock"
    put(unit.keys / "docks/DOCK-01.key", dock / "DOCK-01.key", gid)
    put(unit.trust, dock / "trust.json", gid)
    for name in ("docks/DOCK-01.crt", "docks/DOCK-01.key", "ca.crt", "crl.pem"):
        put(unit.keys / "tls" / name, dock / "tls" / name, gid)
    for folder in (dock, dock / "tls", dock / "tls/docks"):
        shutil.chown(folder, 0, gid)
        folder.chmod(0o750)
    settings = tree / "etc/custody/dock.toml"
    text = settings.read_text()
    assert 'listen_host = "192.168.7.1"' in text and f"listen_port = {DOCK_PORT}" in text
    settings.write_text(text.replace('listen_host = "192.168.7.1"', 'listen_host = "127.0.0.1"'))


def user_id(tree: Path, name: str) -> int:
    """``name``'s uid in the installed tree (made there by systemd-sysusers --root)."""
    return _id(tree / "etc/passwd", name)


def group_id(tree: Path, name: str) -> int:
    return _id(tree / "etc/group", name)


def _id(table: Path, name: str) -> int:
    for line in table.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no {name} in {table}")


def journal_of(tree: Path) -> str:
    """The container's journal, read from the host after it has stopped."""
    machine = (tree / "etc/machine-id").read_text().strip()
    return subprocess.run(["journalctl", "--no-pager", "-o", "short-monotonic", "-D",
                           tree / "var/log/journal" / machine], capture_output=True,
                          text=True, timeout=60).stdout
