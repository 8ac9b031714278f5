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
    r = subprocess.run([sys.executable, "-m", "custody_cli", "recorder", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--config" in r.stdout
