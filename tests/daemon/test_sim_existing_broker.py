"""`custody sim --broker mqtts://HOST:PORT --keys DIR` against a broker the unit runs
already, provisioned as docs/scenarios.md says: `custody provision unit`, a watcher
certificate (`custody provision cert --role watcher`), `custody provision mosquitto`,
and Mosquitto started on that configuration. Two devices dock; each offload is
attested by the dock through that broker and checked by the run's watcher."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.attestation import check_attestation
from protocol.store_reader import read_trust
from tests.device.simrun import custody
from tests.mosquitto import MOSQUITTO, free_port

SHIFT = """
[device]
segment_seconds = 1
video = "320x180@10"
pre_record_seconds = 0

[devices.CAM-A]
officer = "PC-0001"
[devices.CAM-B]
officer = "PC-0002"

[[at]]
t = 0
do = "press_record"
device = "CAM-A"
[[at]]
t = 0
do = "press_record"
device = "CAM-B"
[[at]]
t = 2.5
do = "press_record"
device = "CAM-A"
[[at]]
t = 2.5
do = "press_record"
device = "CAM-B"
[[at]]
t = 3
do = "dock"
device = "CAM-A"
[[at]]
t = 3
do = "dock"
device = "CAM-B"
[[at]]
t = 4
do = "end"
"""


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def unit_broker(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """A unit's keys and its own Mosquitto, both made with `custody provision`."""
    keys = tmp_path / "unit-keys"
    _ok(custody("provision", "unit", "--keys", keys, "--unit", "u-existing", "--dock",
                "DOCK-07"))
    _ok(custody("provision", "cert", "--keys", keys, "--role", "watcher", "--name",
                "WATCH-HQ"))
    # Mosquitto becomes user mosquitto: its folder must be reachable (pytest's is 0700).
    folder = Path(tempfile.mkdtemp(prefix="custody-existing-broker-"))
    folder.chmod(0o755)
    port = free_port()
    _ok(custody("provision", "mosquitto", "--keys", keys, "--out", folder / "mosq",
                "--port", port))
    log = folder / "mosquitto.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(folder / "mosq" / "mosquitto.conf")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.02)
        yield keys, port, log
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # ~30 s of real time; test_sim_shift.py covers the run's own broker
def test_sim_attests_two_devices_through_an_existing_broker(tmp_path: Path, unit_broker):
    keys, port, broker_log = unit_broker
    before = _digests(keys)
    (tmp_path / "shift.toml").write_text(SHIFT)
    out = tmp_path / "out"
    r = custody("sim", tmp_path / "shift.toml", "--out", out, "--broker",
                f"mqtts://127.0.0.1:{port}", "--keys", keys, timeout=240)
    logs = "".join(p.read_text() for p in out.rglob("*.log")) if out.exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + logs[-4000:]

    received = json.loads((out / "attestations.json").read_text())
    assert received["broker"] == f"mqtts://127.0.0.1:{port}"
    assert received["unit"] == "u-existing" and received["refused"] == []
    trust = read_trust(out / "keys" / "trust.json")
    sim = json.loads((out / "sim.json").read_text())
    for device in ("CAM-A", "CAM-B"):
        mine = [a for a in received["attestations"] if a["attestation"]["device"] == device]
        assert mine, received["attestations"]
        ids = [a["attestation"]["id"] for a in mine]
        assert len(ids) == len(set(ids))
        # Checked: the signed envelope as received verifies against the trust file, signed
        # by the unit's own dock; the last range reaches what the archive holds.
        assert all(check_attestation(a["envelope"], trust).ok for a in mine)
        assert all(a["attestation"]["dock"] == "DOCK-07" for a in mine)
        assert all(a["signed_by"] == trust.docks["DOCK-07"].keys for a in mine)
        archived = (out / "archive" / "devices" / device / "ledger.jsonl").read_bytes()
        assert mine[-1]["attestation"]["last_seq"] == len(archived.splitlines()) - 1
        assert sim["attestations"][device] == len(mine)
    # The existing broker, not one of the run's: it took the dock and the watcher by
    # their certificates' names; the run started no Mosquitto of its own.
    said = broker_log.read_text()
    assert "as DOCK-07" in said and "as WATCH-HQ" in said, said[-2000:]
    assert not (out / "mosquitto.log").exists()
    # The devices were enrolled in the run's copy of the unit, never in the folder given.
    assert _digests(keys) == before
    assert {"CAM-A", "CAM-B"} <= set(trust.devices)
    assert not set(read_trust(keys / "trust.json").devices) & {"CAM-A", "CAM-B"}
