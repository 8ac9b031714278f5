"""Real power loss: the recorder's store behind a layer that forgets unsynced writes at the cut.

A SIGKILL leaves the page cache to the kernel; a power cut does not. Behind
:mod:`tests.fuselayer` every write not yet fsynced is gone at the instant of
the cut. After each cut nothing sealed may be lost, the cut must be declared,
and ``custody verify`` must find no error (intact, or intact with the declared
interruptions that no voice note explains).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.scenario import load_scenario
from protocol.entries import Interruption, Segment
from protocol.envelope import parse_line, split_lines
from tests.device.powerloss import LayeredSimRunner, sealed_lost

SCENARIO = """
[device]
segment_seconds = 10
video = "320x180@10"
pre_record_seconds = 0

[[at]]
t = 0
do = "press_record"
[[at]]
t = 3.5
do = "power_cut"
[[at]]
t = 3.7
do = "power_restore"
[[at]]
t = 4.6
do = "press_record"
[[at]]
t = 8.2
do = "power_cut"
[[at]]
t = 8.4
do = "power_restore"
[[at]]
t = 9.2
do = "end"
"""


@pytest.fixture
def fuse_available() -> None:
    if shutil.which("fusermount3") is None or not Path("/dev/fuse").exists():
        pytest.skip("needs fuse3 (fusermount3) and /dev/fuse: make setup installs fuse3")


def test_power_cuts_lose_nothing_sealed_and_each_is_declared(fuse_available, tmp_path: Path):
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    runner = LayeredSimRunner(load_scenario(tmp_path / "scenario.toml"), tmp_path / "out",
                              tmp_path / "backing")
    assert runner.run() == 0, (runner.log_path.read_text())[-3000:]

    assert len(runner.at_cuts) == 2
    assert sealed_lost(runner.store, runner.at_cuts) == 0
    entries = [parse_line(x).entry
               for x in split_lines((runner.store / "ledger.jsonl").read_bytes())]
    # (Under load a slow simulated camera may add a declared camera_fault: not the cut's.)
    cuts = [e for e in entries
            if isinstance(e.body, Interruption) and e.body.detected_by == "boot_recovery"]
    assert [(c.body.reason, c.body.detected_by, c.time.boot_id) for c in cuts] == [
        ("power_loss", "boot_recovery", "sim-boot-2"), ("power_loss", "boot_recovery",
                                                        "sim-boot-3")]
    assert any(isinstance(e.body, Segment) and e.body.recovered for e in entries)
    verify = subprocess.run([sys.executable, "-m", "custody_cli", "verify", "--json",
                             str(runner.store)], capture_output=True, text=True)
    report = json.loads(verify.stdout)
    assert verify.returncode == 3, report["findings"]  # the cuts, declared, unexplained
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    assert all(g["declared"] for g in report["gaps"])
