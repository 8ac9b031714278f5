"""The recorder's unit under a real systemd as PID 1 (tests/systemd/container.py, ADR 0055).

Installed by ``systemd/install-pi.sh --root``, provisioned as docs/install-pi.md says,
on simulated hardware; then judged from outside the container: it starts as a
``Type=notify`` service with its watchdog fed, confined as the unit says, and a
``systemctl poweroff`` while recording leaves a sealed, verifiable store whose
recording ends with ``record_stop`` (trigger ``shutdown``).
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
    custody,
    install_device,
    journal_of,
    new_tree,
    provision,
    user_id,
)

pytestmark = BOOTS_A_CONTAINER

UNIT = "custody-recorder.service"


def main_pid(system: BootedSystem) -> int:
    return int(system.run("systemctl", "show", "-P", "MainPID", UNIT).stdout)


def watchdog_fed_at(system: BootedSystem) -> int:
    """When systemd last had WATCHDOG=1 from the unit (monotonic µs)."""
    return int(system.run("systemctl", "show", "-P", "WatchdogTimestampMonotonic",
                          UNIT).stdout)


def press_record(system: BootedSystem) -> dict:
    code = ("import json, pathlib; from device.control import ControlClient; "
            "print(json.dumps(ControlClient(pathlib.Path('/run/custody/recorder.sock'))"
            ".call('press', button='record')))")
    return json.loads(system.run("/opt/custody/.venv/bin/python3", "-c", code).stdout)


def test_a_poweroff_while_recording_leaves_the_last_segment_sealed(tmp_path: Path):
    unit = provision(tmp_path)
    tree, mount = new_tree(tmp_path), tmp_path / "store-mount"
    install_device(tree, unit, mount)
    started = time.monotonic()
    with BootedSystem(tree, binds=[f"{mount}:/var/lib/custody"]) as system:
        show = system.run("systemctl", "show", UNIT, "-p", "ActiveState", "-p", "SubState",
                          "-p", "StatusText", "-p", "NRestarts", "-p", "WatchdogUSec").stdout
        assert "ActiveState=active" in show and "SubState=running" in show, (
            show + system.journal("-u", UNIT))
        assert "NRestarts=0" in show and "WatchdogUSec=10s" in show, show
        assert "StatusText=standby" in show, show  # READY=1 came with the state

        # Confined as the unit says: its user, no new privileges, one capability,
        # the system-call filter, and everything read-only but the store.
        pid = main_pid(system)
        status = system.run("cat", f"/proc/{pid}/status").stdout
        assert re.search(rf"^Uid:\s+{user_id(tree, 'custody')}\s", status, re.M), status
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and \
            re.search(r"^Seccomp:\s+2$", status, re.M), status
        assert re.search(r"^CapEff:\s+0000000002000000$", status, re.M), status  # CAP_SYS_TIME
        mounts = {line.split()[4]: line.split()[5].split(",")
                  for line in system.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines()}
        assert "ro" in mounts["/"] and "rw" in mounts["/var/lib/custody"], mounts

        assert press_record(system)["state"] == "recording"
        fed = watchdog_fed_at(system)
        time.sleep(4.5)  # two 2-second segments sealed, the third open
        deadline = time.monotonic() + 3  # it pings every WatchdogSec/2 = 5 s
        while watchdog_fed_at(system) == fed and time.monotonic() < deadline:
            time.sleep(0.2)
        assert watchdog_fed_at(system) > fed, "the watchdog was not fed"
        assert list((mount / "store/pending").iterdir()), "no segment open at the poweroff"

        before_poweroff = time.monotonic()
        assert system.poweroff() == 0, system.console()
        poweroff_s = time.monotonic() - before_poweroff
    print(f"boot+start+record+poweroff {time.monotonic() - started:.1f} s "
          f"(poweroff {poweroff_s:.1f} s)")
    assert poweroff_s < 30  # the recorder stopped by itself, not at TimeoutStopSec

    # From outside: nothing left open, the recording closed by the shutdown, INTACT.
    store = mount / "store"
    assert not list((store / "pending").iterdir())
    r = custody("verify", store, "--trust", unit.trust, "--json")
    # Intact; under load the simulated camera may be late after the boot, which the
    # recorder declares and resumes at once (a device fault, never a silent gap).
    only_device_faults_unexplained(r.returncode, json.loads(r.stdout), explained=[])
    entries = [parse_line(line).entry
               for line in split_lines((store / "ledger.jsonl").read_bytes())]
    kinds = [entry.kind for entry in entries]
    assert kinds.count("segment") >= 3 and kinds[-1] == "record_stop", kinds
    assert entries[-1].body.trigger == "shutdown", entries[-1]

    journal = journal_of(tree)
    ours = [line for line in journal.splitlines() if " custody[" in line]
    assert any("recording" in line and "stopped (shutdown)" in line for line in ours), ours
    assert not [line for line in ours if DENIALS.search(line)], ours
    # The order the issue asks for: the recorder stopped (sealed) before its store's
    # filesystem went (unmounted here; remounted read-only on a Pi's root).
    lines = journal.splitlines()
    stopped = next(i for i, line in enumerate(lines) if f"Stopped {UNIT}" in line)
    unmounting = next(i for i, line in enumerate(lines)
                      if "Unmounting var-lib-custody.mount" in line)
    assert stopped < unmounting, lines[stopped - 3:unmounting + 1]
    # It stopped by itself: not at TimeoutStopSec, not killed.
    stop = [line for line in lines if UNIT in line and
            re.search(r"timed out|Failed with result|after final SIGKILL", line)]
    assert not stop, stop
