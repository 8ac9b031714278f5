"""A double tap — stop, then start again within tens of milliseconds — is two presses
the officer may make: the ledger says exactly that and verifies."""

from __future__ import annotations

import time
from pathlib import Path

from device.recorder import State
from tests.conftest import Unit
from tests.device.simrun import ledger_bodies, recorder_on_sim, run_sim, verify_json


def recording_kinds(unit: Unit) -> list[tuple[str, int | None]]:
    """(kind, recording) of each entry about a recording, in ledger order."""
    out = []
    for e in unit.entries():
        rec = e.entry.seq if e.entry.kind == "record_start" else getattr(
            e.entry.body, "recording", None)
        if rec is not None:
            out.append((e.entry.kind, rec))
    return out


def test_stop_then_start_within_milliseconds_is_two_recordings(unit: Unit):
    before = {r.recording for r in unit.verify().recordings}
    with recorder_on_sim(unit, segment_seconds=1) as recorder:
        recorder.start()
        first = recorder.press_record()
        assert first == State.RECORDING
        time.sleep(2.5)
        recorder.press_record()  # stop...
        time.sleep(0.02)
        assert recorder.press_record() == State.RECORDING  # ...and start again at once
        time.sleep(2.0)
        recorder.press_record()
        assert recorder.wait_idle(30)
    report = unit.verify()
    assert not report.errors, report.errors
    assert not report.interruptions, report.interruptions  # nothing was interrupted
    assert len([r for r in report.recordings if r.recording not in before]) == 2
    entries = [(k, r) for k, r in recording_kinds(unit) if r not in before]
    first_seq, second_seq = sorted({rec for _, rec in entries})
    # In the order things happened: the first recording ends before the second starts.
    assert [k for k, r in entries if r == first_seq][-1] == "record_stop"
    last_of_first = max(i for i, (_, r) in enumerate(entries) if r == first_seq)
    first_of_second = min(i for i, (_, r) in enumerate(entries) if r == second_seq)
    assert last_of_first < first_of_second
    assert [k for k, r in entries if r == second_seq][0] == "record_start"


def test_two_presses_at_the_same_scenario_second_verify(tmp_path: Path):
    out = run_sim(tmp_path, """
[device]
segment_seconds = 1
video = "320x180@10"
pre_record_seconds = 0

[[at]]
t = 0
do = "press_record"
[[at]]
t = 3
do = "press_record"
[[at]]
t = 3
do = "press_record"
[[at]]
t = 5
do = "press_record"
[[at]]
t = 5.02
do = "press_record"
[[at]]
t = 7
do = "press_record"
[[at]]
t = 8
do = "end"
""")
    code, report = verify_json(out / "device")
    assert code in (0, 3), report["findings"]
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    # Nothing the presses did is an interruption (a loaded machine may starve the
    # simulated camera for a second: that one is real, detected and declared).
    assert all(i["detected_by"] == "camera_watchdog" for i in report["interruptions"]), (
        report["interruptions"])
    kinds = [e.kind for e in ledger_bodies(out)]
    assert kinds.count("record_start") == 3 and kinds.count("record_stop") == 3
