"""Interruptions, voice notes, exemptions, markers, receipts and the 24-hour rule,
end to end on simulated hardware and judged from the outside."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import av
import pytest

from device.receipts import ReceiptRefused
from device.recorder import Recorder
from protocol.keys import SigningKey
from protocol.receipt import OffloadReceipt, sign_receipt
from protocol.store_reader import MEDIA_DIR
from tests.conftest import DEVICE, DOCK, Unit
from tests.device.simrun import (
    custody,
    ledger_bodies,
    loss_at_cut_s,
    only_device_faults_unexplained,
    recorder_on_sim,
    run_sim,
    scenario_interruptions,
    verify_json,
)

SMALL = """
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0
"""


def steps(*items: tuple) -> str:
    out = []
    for t, do, *params in items:
        out.append(f'[[at]]\nt = {t}\ndo = "{do}"\n')
        for key, value in params:
            out.append(f"{key} = {value}\n")
    return "\n".join(out)


def sim_json(out: Path) -> dict:
    return json.loads((out / "sim.json").read_text())


def kinds(out: Path) -> list[str]:
    return [e.kind for e in ledger_bodies(out)]


def test_battery_critical_seals_declares_prompts_and_the_voice_note_explains(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (4, "battery", ("percent", 2)),  # critical: shut down
        (6, "power_cut"), (7, "battery", ("percent", 80)), (8, "power_restore"),
        (9, "press_record"),  # resumes; the prompt plays for up to ~8 s
        (19, "speak", ("seconds", 3)), (23, "hold_function", ("seconds", 0.1)),
        (24, "press_record"), (25, "end")))
    entries = ledger_bodies(out)
    [cut] = scenario_interruptions(entries)  # and any camera fault under load, resumed
    assert (cut.body.reason, cut.body.detected_by) == ("battery", "battery_gauge")
    # sealed before the shutdown: the segment before the cut is a normal one
    before = [e for e in entries if e.kind == "segment" and e.seq < cut.seq]
    assert before and not any(e.body.recovered for e in before)
    [note] = [e for e in entries if e.kind == "voice_note"]
    assert note.body.interruption == cut.seq and note.body.speech_seconds > 1
    code, report = verify_json(out / "device")
    device_faults = only_device_faults_unexplained(code, report, explained=[cut.seq])
    [rec] = report["recordings"]
    assert rec["spans"] == 2 + device_faults
    [gap] = [g for g in report["gaps"] if g["interruption"] == cut.seq]
    assert gap["reason"] == "battery" and gap["explained"] and gap["voice_note"] == note.seq
    assert sim_json(out)["final_status"]["prompts"] == 1


def test_voice_note_exports_and_plays_on_its_own(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (3, "power_cut"), (4, "power_restore"), (5, "press_record"),
        (15, "speak", ("seconds", 2)), (18, "hold_function", ("seconds", 0.1)),
        (19, "press_record"), (20, "end")))
    r = custody("export", out / "device", "--key", out / "keys" / "archive-secret.key",
                "--out", out / "export")
    assert r.returncode == 0, r.stderr
    [note] = sorted((out / "export").glob("*-voice_note.mp4"))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", note], capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["flac"]
    with av.open(str(note)) as c:
        assert sum(f.samples for f in c.decode(audio=0)) > 48_000 * 2


def test_power_cut_recovers_the_segment_and_prompts_on_resume(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (5.5, "power_cut"), (7, "power_restore"), (8, "press_record"),
        (18, "speak", ("seconds", 2)), (21, "hold_function", ("seconds", 0.1)),
        (22, "press_record"), (23, "end")))
    log = sim_json(out)
    entries = ledger_bodies(out)
    # The segment open at the cut is recovered, unless the cut came before its first
    # fragment was whole (under load segments begin when the late camera does): then
    # the one sealed before it ends the recording's capture. Either way, at most about
    # a fragment is lost.
    recovered = [e.body for e in entries if e.kind == "segment" and e.body.recovered]
    assert len(recovered) <= 1
    assert 0 <= loss_at_cut_s(out, entries) <= 1.0, "more than a fragment was lost"
    [cut] = scenario_interruptions(entries)
    assert (cut.body.reason, cut.body.detected_by) == ("power_loss", "boot_recovery")
    code, report = verify_json(out / "device")
    only_device_faults_unexplained(code, report, explained=[cut.seq])
    assert log["final_status"]["prompts"] == 1


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_skipped_voice_note_is_unexplained_and_the_prompt_repeats(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (3, "power_cut"), (4, "power_restore"),
        (5, "press_record"), (5.5, "hold_function", ("seconds", 0.1)),  # skipped at once
        (7, "press_record"),
        (9, "press_record"), (10, "press_record"),  # a new recording: prompted again, stopped
        (11, "end")))
    code, report = verify_json(out / "device")
    assert code == 3
    assert [i["reason"] for i in report["interruptions"]] == ["power_loss"]
    assert not report["interruptions"][0]["explained"]
    status = sim_json(out)["final_status"]
    assert status["prompts"] == 2 and status["unexplained"] == [report["interruptions"][0]["seq"]]


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_camera_fault_audio_goes_on_and_it_is_said(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (3, "camera_fault"), (8, "camera_ok"), (12, "press_record"),
        (13, "end")))
    entries = ledger_bodies(out)
    [cut] = [e for e in entries if e.kind == "interruption"]
    assert (cut.body.reason, cut.body.detected_by) == ("camera_fault", "camera_watchdog")
    segments = [e.body for e in entries if e.kind == "segment"]
    audio_only = [s for s in segments if s.frames == 0]
    assert audio_only and all(s.media.codecs == {"audio": "flac"} for s in audio_only)
    # audio is continuous through the fault: every boundary abuts, the only gap is video's
    code, report = verify_json(out / "device")
    assert code == 3, report["findings"]  # declared; the voice note comes at the next start
    [gap] = report["gaps"]
    assert gap["reason"] == "camera_fault" and gap["declared"]
    assert gap["seconds"] < 2.0  # the last frame to the first audio-only sample
    audio_s = sum(s.audio_samples for s in segments) / 48_000
    assert audio_s > 11.0  # ~12 s recorded, the camera's 5 s included
    assert segments[-1].frames > 0  # video came back


def test_storage_full_stops_keeps_everything_and_honours_the_voice_note_reserve(
        tmp_path: Path):
    config = SMALL.replace('pre_record_seconds = 0', 'pre_record_seconds = 0\n'
                           'video_bitrate = 100000\nstorage_reserve_bytes = 1000000')
    out = run_sim(tmp_path, config + steps(
        (0, "press_record"), (2, "storage_left", ("bytes", 30_230_000)),  # ~0.1 MB above
        (14, "press_record"),  # refused: still full
        (15, "end")))
    entries = ledger_bodies(out)
    [cut] = scenario_interruptions(entries)  # and any camera fault under load, resumed
    assert cut.body.reason == "storage_full"
    # the press after it was refused: nothing resumes the storage cut
    assert cut.seq not in {e.body.interruption for e in entries if e.kind == "resume"}
    status = sim_json(out)["final_status"]
    voice_reserve = 300 * 48_000 * 2
    assert status["free_bytes"] >= voice_reserve + 1_000_000  # the reserve is untouched
    code, report = verify_json(out / "device")
    assert code == 3  # intact, but the stop is not yet explained
    assert not [f for f in report["findings"] if f["severity"] == "error"]


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_exemption_and_markers_reach_the_report(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (1, "hold_function", ("seconds", 2.5)),  # standby: an exemption
        (4, "hold_function", ("seconds", 0.1)),  # second reason: commercial_secret
        (8, "speak", ("seconds", 2)), (11, "hold_function", ("seconds", 0.1)),  # memo ends
        (12, "press_record"), (13, "press_marker"), (14, "press_marker"),
        (15, "press_record"), (16, "end")))
    code, report = verify_json(out / "device")
    assert code == 0, report["findings"]
    [exemption] = report["exemptions"]
    assert exemption["reason"] == "commercial_secret" and exemption["voice_memo"]
    assert [m["phase"] for m in report["markers"]] == ["site", "id_shown_rights_told"]


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_officer_declares_an_interruption_with_the_function_button(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (2, "hold_function", ("seconds", 2.5)),  # arm: weather
        (5, "hold_function", ("seconds", 0.1)),  # next reason: location_change
        (9, "press_record"),  # the stop is the declared interruption
        (10, "end")))
    cuts = [e.body for e in ledger_bodies(out) if e.kind == "interruption"]
    assert [(c.reason, c.detected_by) for c in cuts] == [("location_change", "officer")]
    assert "record_stop" not in kinds(out)


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_24_hour_rule_warns_then_declares_overdue(tmp_path: Path):
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (2, "press_record"),
        (3, "clock_jump", ("seconds", 20.5 * 3600)),
        (10, "press_record"), (11, "press_record"),  # warned on each press
        (12, "clock_jump", ("seconds", 4 * 3600)), (22, "end")))
    entries = ledger_bodies(out)
    overdue = [e.body for e in entries if e.kind == "overdue"]
    assert [o.recording for o in overdue][:1] == [next(
        e.seq for e in entries if e.kind == "record_start")]
    code, report = verify_json(out / "device")
    assert code == 0 and report["overdue"]
    assert sim_json(out)["final_status"]["overdue_warning"]


# --- receipts: in process, with the unit's real dock key ---------------------------------


@pytest.fixture
def recorded(unit: Unit):
    with recorder_on_sim(unit, segment_seconds=1) as recorder:
        recorder.start()
        recorder.start_recording("button")
        time.sleep(3)
        recorder.stop_recording("button")
        assert recorder.wait_idle(30)
        # Idle means sealed: the stop is the ledger's last word, nothing comes after.
        assert unit.entries()[-1].entry.kind == "record_stop"
        assert not list((unit.store / "pending").iterdir())
        yield recorder


def test_space_is_freed_only_against_a_valid_receipt(unit: Unit, recorded: Recorder):
    media = lambda: sorted(p.name for p in (unit.store / MEDIA_DIR).iterdir())  # noqa: E731
    before = media()
    for bad in (unit.receipt(key=SigningKey.generate()),  # forged
                unit.receipt(dock="DOCK-99")):  # a dock the trust file does not know
        with pytest.raises(ReceiptRefused):
            recorded.accept_receipt(bad)
    assert media() == before
    receipt = unit.receipt()  # the dock archived the ledger as it is now
    freed = recorded.accept_receipt(receipt)
    assert sorted(freed) == before and media() == []
    report = unit.verify()
    assert report.verdict == "intact", report.findings
    assert {f.kind for f in report.findings} == {"offloaded"}


def test_a_receipt_for_another_chain_frees_nothing(unit: Unit, recorded: Recorder):
    # genuinely signed by the dock, but its entry 3 is not ours
    receipt = OffloadReceipt(dock=DOCK, device=DEVICE, first_seq=0, last_seq=3, head="f" * 64,
                             media=[], archived_utc_ns=0)
    bad = sign_receipt(receipt, unit.dock_key.signer())
    with pytest.raises(ReceiptRefused, match="head"):
        recorded.accept_receipt(bad)
    assert list((unit.store / MEDIA_DIR).iterdir())


@pytest.mark.slow  # a long real-time scenario: pytest -m slow (make test-slow)
def test_a_device_off_ignores_presses_and_the_charger_boots_it(tmp_path: Path):
    """After a battery shutdown a press does nothing (the run goes on), the charger
    (power_restore, no power_cut first) boots it, and a speak inside the spoken
    prompt is warned about by step."""
    out = run_sim(tmp_path, SMALL + steps(
        (0, "press_record"), (2, "battery", ("percent", 2)),  # critical: it switches off
        (6, "press_record"),  # off: nothing happens
        (7, "power_restore"),  # the charger: on again, still at 2 %, charging
        (9, "press_record"),  # resumes; the prompt plays
        (9.3, "speak", ("seconds", 1)),  # inside the prompt: not the answer
        (12, "press_record"), (13, "end")))
    log = sim_json(out)
    by_step = {s["step"]: s for s in log["steps"]}
    assert by_step[3]["ignored"] == "the device is off"
    assert "spoken prompt" in by_step[6]["warning"]
    assert any(w.startswith("step 6 (speak at t = 9.3)") for w in log["warnings"])
    entries = ledger_bodies(out)
    cuts = [e.body for e in entries if e.kind == "interruption"]
    assert [(c.reason, c.detected_by) for c in cuts][:1] == [("battery", "battery_gauge")]
    assert "resume" in kinds(out)
    code, report = verify_json(out / "device")
    assert not [f for f in report["findings"] if f["severity"] == "error"], report["findings"]
