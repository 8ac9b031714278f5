"""The dock's units under a real systemd as PID 1 (tests/systemd/container.py, ADR 0055).

One booted system holds a dock (install-dock.sh: custody-dock.service, Debian's
mosquitto.service with the Custody drop-in) and a device (install-pi.sh) set to
offload to it over the container's loopback, as a device on the dock's USB link
does over usb0: the dock and its broker reach active, and the recorder's unit lets
the recorder reach the dock, whose archive then holds the device's recording.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from protocol.envelope import parse_line, split_lines
from tests.device.simrun import only_device_faults_unexplained
from tests.systemd.container import BOOTS_A_CONTAINER, BootedSystem
from tests.systemd.installed import (
    DENIALS,
    DOCK_PORT,
    custody,
    install_device,
    install_dock,
    journal_of,
    new_tree,
    provision,
)

pytestmark = BOOTS_A_CONTAINER

SERVICES = ("mosquitto.service", "custody-dock.service", "custody-recorder.service")


def control(system: BootedSystem, cmd: str, **args: object) -> dict:
    code = ("import json, pathlib, sys; from device.control import ControlClient; "
            "print(json.dumps(ControlClient(pathlib.Path('/run/custody/recorder.sock'))"
            f".call({cmd!r}, **json.loads(sys.argv[1]))))")
    return json.loads(system.run("/opt/custody/.venv/bin/python3", "-c", code,
                                 json.dumps(args)).stdout)


def kinds(ledger: Path) -> list[str]:
    if not ledger.is_file():
        return []
    return [parse_line(line).entry.kind for line in split_lines(ledger.read_bytes())]


def test_the_dock_and_its_broker_run_hardened_and_a_device_offloads_to_it(tmp_path: Path):
    unit = provision(tmp_path)
    tree, mount = new_tree(tmp_path), tmp_path / "store-mount"
    install_dock(tree, unit, tmp_path)
    install_device(tree, unit, mount, dock_url=f"https://127.0.0.1:{DOCK_PORT}",
                   dock_detect="link")
    archive = tree / "srv/custody/archive"
    with BootedSystem(tree, binds=[f"{mount}:/var/lib/custody"]) as system:
        for service in SERVICES:
            state = system.run("systemctl", "show", "-P", "ActiveState", service).stdout
            assert state.strip() == "active", service + "\n" + system.journal("-u", service)
        assert control(system, "press", button="record")["state"] == "recording"
        time.sleep(2.5)
        assert control(system, "press", button="record")["ok"]
        # Docked (the dock answers at dock_url): the recording goes to the archive.
        ledger = archive / "devices" / unit.device_id / "ledger.jsonl"
        deadline = time.monotonic() + 60
        while "record_stop" not in kinds(ledger):
            assert time.monotonic() < deadline, (
                json.dumps(control(system, "status").get("offload"), indent=1) + "\n" +
                system.journal("-u", "custody-recorder.service", "-u", "custody-dock.service"))
            time.sleep(0.5)
        assert system.poweroff() == 0, system.console()

    r = custody("verify", archive / "devices" / unit.device_id, "--trust", unit.trust, "--json")
    only_device_faults_unexplained(r.returncode, json.loads(r.stdout), explained=[])
    journal = journal_of(tree)
    (tmp_path / "journal.txt").write_text(journal)  # kept for whoever reads a failure
    ours = [line for line in journal.splitlines()
            if re.search(r" (custody|mosquitto)\[\d+\]", line)]
    assert ours and not [line for line in ours if DENIALS.search(line)], (
        [line for line in ours if DENIALS.search(line)], tmp_path / "journal.txt")
