"""`custody sim` with a dock: the real recorder, docked while recording, offloads on its own."""

from __future__ import annotations

import json

import pytest

from device.checkpoint_keeper import CHECKPOINT_NAME
from protocol.archive_log import open_device_checkpoint
from protocol.entries import OffloadReceiptEntry, Segment, TimeSync
from protocol.store_reader import read_trust
from protocol.time_statement import open_time_statement
from tests.daemon.dockkit import verify_archive
from tests.device.simrun import custody, ledger_bodies, run_sim

SCENARIO = """
[device]
segment_seconds = 2
video = "320x180@15"
pre_record_seconds = 0

[[at]]
t = 1
do = "press_record"
[[at]]
t = 6
do = "dock"            # docked while recording: recording goes on
[[at]]
t = 11
do = "press_record"
[[at]]
t = 13
do = "end"
"""


# The one-device form of tests/daemon/test_sim_shift.py (which runs in make test).
@pytest.mark.slow
def test_sim_docks_offloads_and_the_archive_verifies(tmp_path):
    out = run_sim(tmp_path, SCENARIO)
    entries = ledger_bodies(out)
    segments = [e for e in entries if isinstance(e.body, Segment)]
    receipts = [e for e in entries if isinstance(e.body, OffloadReceiptEntry)]
    syncs = [e for e in entries if isinstance(e.body, TimeSync) and e.body.source == "dock"]
    assert len(segments) >= 4 and receipts and len(syncs) == 1
    statement = open_time_statement(syncs[0].body.statement, read_trust(out / "keys/trust.json"))
    assert statement.device == entries[0].device
    # Recording went on while docked: segments sealed after the docking exist.
    assert any(s.seq > syncs[0].seq for s in segments)
    # The archive holds a verifiable copy; custody verify takes it as it is.
    # (Under heavy load the simulated camera may start late: the recorder then
    # declares a camera_fault interruption, which the archive reports as it is.)
    report = verify_archive(out / "archive", entries[0].device)
    assert report.verdict in ("intact", "intact_unexplained_gaps")
    assert not report.errors, [f.message for f in report.findings]
    r = custody("verify", out / "archive", "--json")
    assert r.returncode == (0 if report.verdict == "intact" else 3), r.stdout + r.stderr
    # At the docking the dock signed a checkpoint of the device's log; the device
    # checked it against its own ledger, cosigned it and keeps it; custody verify of
    # the archive finds it cosigned.
    archived = json.loads(r.stdout)
    kinds = {f["kind"] for s in archived["stores"] for f in s["findings"]}
    assert not kinds & {"not_cosigned", "no_checkpoint", "bad_checkpoint"}, kinds
    device = entries[0].device
    kept = (out / "device" / CHECKPOINT_NAME).read_bytes()
    newest = sorted((out / "archive" / "checkpoints" / device).glob("*.checkpoint"))[-1]
    assert newest.read_bytes() == kept
    cp = open_device_checkpoint(kept, read_trust(out / "keys/trust.json"), device)
    assert cp.cosigned_by and cp.checkpoint.size == len(
        (out / "archive" / "devices" / device / "ledger.jsonl").read_bytes().splitlines())
    # The device freed what receipts cover, and says so in its status.
    status = json.loads((out / "sim.json").read_text())["final_status"]
    assert status["offload"]["freed_files"] >= 1
    assert status["freed_files"] == status["offload"]["freed_files"]
    assert status["offload"]["checkpoint_size"] == cp.checkpoint.size
    assert status["offload"]["checkpoint_refused"] == ""
