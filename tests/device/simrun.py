"""Running the recorder for tests: ``custody sim`` from outside, or in process.

Shared by the end-to-end tests; each judges the device from the outside
(``custody export``, PyAV, ffprobe, ``custody verify``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av

from device.config import RecorderConfig
from device.ledger import LedgerWriter, entry_clock
from device.recorder import Recorder
from hardware.sim.factory import SimFactory
from hardware.sim.pattern import read_frame_index
from protocol.envelope import parse_line, split_lines
from tests.conftest import DEVICE, Unit


def custody(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def run_sim(tmp: Path, scenario: str) -> Path:
    (tmp / "scenario.toml").write_text(scenario)
    out = tmp / "out"
    r = custody("sim", tmp / "scenario.toml", "--out", out)
    assert r.returncode == 0, r.stderr + (out / "recorder.log").read_text()
    return out


def export(out: Path) -> list[Path]:
    r = custody("export", out / "device", "--key", out / "keys" / "archive-secret.key",
                "--out", out / "export")
    assert r.returncode == 0, r.stdout + r.stderr
    return sorted((out / "export").iterdir())


def decode(files: list[Path]) -> tuple[list[int], int]:
    """Frame indices of every frame and the total audio samples, in file order."""
    indices, samples = [], 0
    for f in files:
        with av.open(str(f)) as c:
            if c.streams.video:  # an audio-only segment (the camera down, or late) has none
                indices += [read_frame_index(frame) for frame in c.decode(video=0)]
        with av.open(str(f)) as c:
            samples += sum(frame.samples for frame in c.decode(audio=0))
    return indices, samples


def ledger_bodies(out: Path) -> list:
    return [parse_line(x).entry for x in split_lines((out / "device/ledger.jsonl").read_bytes())]


def verify_json(store: Path) -> tuple[int, dict]:
    r = custody("verify", store, "--json")
    return r.returncode, json.loads(r.stdout)


@contextmanager
def recorder_on_sim(unit: Unit, **settings: object) -> Iterator[Recorder]:
    """A Recorder (not yet started) for the unit's device on simulated hardware,
    in this process (camera in a thread); closed, with its ledger, afterwards."""
    config = RecorderConfig.from_toml("").with_overrides({
        "device_id": DEVICE, "store": str(unit.store), "hardware": "sim",
        "video": "320x180@10", "pre_record_seconds": 0, **settings})
    with SimFactory(camera_isolation="thread") as hw:
        ledger = LedgerWriter(unit.store, DEVICE, unit.device_key, entry_clock(hw.clock()))
        recorder = Recorder(config, hw, ledger, unit.archive_public, trust=unit.trust)
        try:
            yield recorder
        finally:
            recorder.close()
            ledger.close()


#: What the recorder detects on its own and resumes at once. Under load the simulated
#: camera is late after every boot (as a Pi's is): its watchdog declares that, truly.
DEVICE_FAULTS = {"camera_watchdog", "mic_watchdog", "audio_late", "frame_index", "audio_overflow",
                 "queue_overflow"}


def scenario_interruptions(entries: list) -> list:
    """The interruptions a scenario's events caused, after checking that every other one
    is a device fault declared and resumed at once (never a silent one)."""
    resumed = {e.body.interruption for e in entries if e.kind == "resume"}
    faults = [e for e in entries if e.kind == "interruption"
              and e.body.detected_by in DEVICE_FAULTS]
    assert all(f.seq in resumed for f in faults), "a device fault not resumed"
    return [e for e in entries if e.kind == "interruption" and e not in faults]


def loss_at_cut_s(out: Path, entries: list) -> float:
    """Seconds from the last capture sealed (recovered or not) to the power cut."""
    log = json.loads((out / "sim.json").read_text())
    cut_at = next(s["ran_at"] for s in log["steps"] if s["do"] == "power_cut")
    [cut] = [e for e in entries if e.kind == "interruption"
             and e.body.detected_by == "boot_recovery"]
    last = max(e.body.last_capture_utc_ns for e in entries
               if e.kind == "segment" and e.seq < cut.seq)
    return cut_at - (last - log["epoch_unix_ns"]) / 1e9


def only_device_faults_unexplained(code: int, report: dict, explained: list[int]) -> int:
    """``verify``'s verdict on a scenario whose voice notes explain ``explained``: no
    error, every gap declared, and nothing else unexplained but device faults (said,
    with no one to explain them). Returns how many device faults there were."""
    assert not [f for f in report["findings"] if f["severity"] == "error"], report["findings"]
    assert all(g["declared"] for g in report["gaps"]), report["gaps"]
    assert [i["seq"] for i in report["interruptions"] if i["explained"]] == explained
    faults = [i for i in report["interruptions"] if i["detected_by"] in DEVICE_FAULTS]
    unexplained = [i for i in report["interruptions"] if not i["explained"]]
    assert all(i in faults for i in unexplained), unexplained
    assert code == (3 if unexplained else 0), report["findings"]
    return len(faults)
