"""The shipped units start what exists, the way the code expects to be run."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

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
    r = subprocess.run([sys.executable, "-m", "protocol.cli", "recorder", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout


def test_console_unit_runs_custody_console_on_its_tty_instead_of_a_getty():
    parsed = unit("custody-console@.service")
    assert parsed["Unit"]["Conflicts"] == "serial-getty@%i.service"
    service = parsed["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/custody") and argv[1] == "console"
    assert argv[argv.index("--port") + 1] == "/dev/%i" and "--config" in argv
    assert service["User"] == unit("custody-recorder.service")["Service"]["User"]  # the socket
    assert service["Restart"] == "always"
    r = subprocess.run([sys.executable, "-m", "protocol.cli", "console", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--port" in r.stdout and "--config" in r.stdout
