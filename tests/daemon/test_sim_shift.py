"""`custody sim` with two devices, one real dock and the run's own Mosquitto (TLS, ACLs):
both record, dock at the same instant (one while recording), offload; each archive copy
verifies and each device's offload is attested, signed by the dock, delivered over MQTT.
(It also covers what tests/daemon/test_sim_dock.py checks of one device, which runs
under -m slow to keep make test's time.)"""

from __future__ import annotations

import json
import socket
import subprocess
from itertools import pairwise

from protocol.attestation import check_attestation
from protocol.entries import OffloadReceiptEntry, Segment, TimeSync
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import read_trust
from protocol.time_statement import open_time_statement
from tests.daemon.dockkit import verify_archive
from tests.device.simrun import custody

SHIFT = """
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0

[devices.CAM-A]
officer = "PC-0001"
[devices.CAM-B]
officer = "PC-0002"
video = "320x180@15"     # its own settings, on top of [device]

[[at]]
t = 0
do = "press_record"
device = "CAM-A"
[[at]]
t = 0.5
do = "press_record"
device = "CAM-B"
[[at]]
t = 4
do = "press_record"
device = "CAM-A"
[[at]]
t = 4.5
do = "dock"              # both at the same instant
device = "CAM-A"
[[at]]
t = 4.5
do = "dock"              # CAM-B while it records: recording goes on
device = "CAM-B"
[[at]]
t = 7
do = "press_record"
device = "CAM-B"
[[at]]
t = 7.5
do = "end"
"""


def ledger(store) -> list:
    return [parse_line(x).entry for x in split_lines((store / "ledger.jsonl").read_bytes())]


def test_two_devices_dock_at_once_offload_and_each_offload_is_attested(tmp_path):
    (tmp_path / "shift.toml").write_text(SHIFT)
    out = tmp_path / "out"
    r = custody("sim", tmp_path / "shift.toml", "--out", out, timeout=240)
    logs = "".join(p.read_text() for p in out.rglob("*.log")) if out.exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + logs[-4000:]
    trust = read_trust(out / "keys" / "trust.json")
    sim = json.loads((out / "sim.json").read_text())
    assert set(sim["devices"]) == {"CAM-A", "CAM-B"}
    assert sim["devices"]["CAM-B"]["fps"] == 15 and sim["devices"]["CAM-A"]["fps"] == 10
    docked = {s["device"]: s["ran_at"] for d in sim["devices"].values() for s in d["steps"]
              if s["do"] == "dock"}
    assert abs(docked["CAM-A"] - docked["CAM-B"]) < 1.0, docked  # at once, not one by one

    received = json.loads((out / "attestations.json").read_text())
    assert received["refused"] == []
    for device, officer in (("CAM-A", "PC-0001"), ("CAM-B", "PC-0002")):
        store = out / "devices" / device / "store"
        entries = ledger(store)
        assert entries[0].device == device
        assert any(isinstance(e.body, Segment) for e in entries)
        assert any(isinstance(e.body, OffloadReceiptEntry) for e in entries)
        status = sim["devices"][device]["final_status"]
        assert status["offload"]["freed_files"] >= 1
        assert status["freed_files"] == status["offload"]["freed_files"]
        # The dock's signed time statement, appended as time_sync.
        [sync] = [e for e in entries if isinstance(e.body, TimeSync) and e.body.source == "dock"]
        assert open_time_statement(sync.body.statement, trust).device == device
        # The archive copy verifies on its own.
        report = verify_archive(out / "archive", device)
        assert report.verdict in ("intact", "intact_unexplained_gaps"), report
        assert not report.errors, [f.message for f in report.findings]
        # Attested, signed by the dock as the trust file says, once per range
        # (CAM-B, offloading while it records, in several ranges), the last range
        # reaching what the archive holds.
        mine = [a for a in received["attestations"] if a["attestation"]["device"] == device]
        assert mine, received["attestations"]
        ids = [a["attestation"]["id"] for a in mine]
        assert len(ids) == len(set(ids))  # each delivered once
        ranges = [(a["attestation"]["first_seq"], a["attestation"]["last_seq"]) for a in mine]
        assert ranges[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in pairwise(ranges))
        assert sim["attestations"][device] == len(mine)
        att = mine[-1]["attestation"]
        assert att["dock"] == "DOCK-01" and att["officers"] == [officer]
        assert all(a["signed_by"] == trust.docks["DOCK-01"].keys for a in mine)
        # The envelope as received checks against the trust file; altered, it does not.
        assert all(check_attestation(a["envelope"], trust).ok for a in mine)
        forged = dict(mine[-1]["envelope"], payload=mine[-1]["envelope"]["payload"][::-1])
        assert not check_attestation(forged, trust).ok
        archived = len((out / "archive" / "devices" / device / "ledger.jsonl")
                       .read_bytes().splitlines())
        assert att["last_seq"] == archived - 1
        assert mine[0]["attestation"]["recordings"], mine[0]
    # CAM-B went on recording while docked: segments sealed after its docking exist.
    b = ledger(out / "devices" / "CAM-B" / "store")
    [sync] = [e for e in b if isinstance(e.body, TimeSync) and e.body.source == "dock"]
    assert any(isinstance(e.body, Segment) and e.seq > sync.seq for e in b)
    # The whole archive: both devices' copies (custody verify takes it as it is).
    r = custody("verify", out / "archive")
    assert r.returncode in (0, 3), r.stdout + r.stderr
    # The run's own Mosquitto took the dock by its certificate's name.
    assert "as DOCK-01" in (out / "mosquitto.log").read_text()
    # Nothing the run started is left: no recorder or dock of this run, no broker.
    left = subprocess.run(["pgrep", "-af", str(out)], capture_output=True, text=True).stdout
    assert left.strip() == "", left
    port = int(received["broker"].rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the run's Mosquitto still listens"



