"""The recorder end to end on simulated hardware, judged from the outside:
``custody sim`` runs it, ``custody export`` decrypts, PyAV and ffprobe decode,
``custody verify`` rules."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import device.recovery
from daemon.export import export_store
from daemon.provision import device_key_path
from device.recorder import Recorder, State
from device.sealer import SegmentSealer
from hardware.camera import monotonic_us
from protocol.store_reader import TRUST_NAME
from tests.conftest import DEVICE, Unit
from tests.device.simrun import (
    custody,
    decode,
    export,
    ledger_bodies,
    loss_at_cut_s,
    recorder_on_sim,
    run_sim,
    scenario_interruptions,
    verify_json,
)

SHIFT = """
[device]
segment_seconds = 1
video = "640x360@15"
pre_record_seconds = 2
category = "meeting"

[[at]]
t = 4
do = "press_record"
[[at]]
t = 6
do = "press_marker"
[[at]]
t = 8
do = "clock_jump"
seconds = -30
[[at]]
t = 16
do = "press_record"
[[at]]
t = 17
do = "end"
"""


@pytest.fixture(scope="module")
def shift(tmp_path_factory) -> Path:
    return run_sim(tmp_path_factory.mktemp("shift"), SHIFT)


def test_shift_verifies_intact_bound_to_officer_and_category(shift: Path):
    code, report = verify_json(shift / "device")
    assert code == 0, report["findings"]
    [rec] = report["recordings"]
    assert (rec["officer"], rec["category"]) == ("PC-SIM-01", "meeting")
    assert rec["segments"] >= 7 and rec["spans"] == 1
    assert report["gaps"] == []
    assert [m["phase"] for m in report["markers"]] == ["site"]  # the first Art. 7 phase


def test_gapless_rollover_every_frame_once_and_every_sample(shift: Path):
    files = export(shift)
    assert len(files) >= 7  # many boundaries
    for f in files:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                                "-of", "csv=p=0", f], capture_output=True, text=True, check=True)
        assert probe.stdout.split() == ["h264", "flac"] and probe.stderr == ""
    indices, samples = decode(files)
    assert indices == list(range(indices[0], indices[-1] + 1)), "a frame lost or repeated"
    video_s = len(indices) / 15
    # audio covers the video to within one frame period (it starts with the first frame)
    assert abs(samples / 48_000 - video_s) <= 1 / 15 + 1e-9
    segments = [e.body for e in ledger_bodies(shift) if e.kind == "segment"]
    assert sum(s.frames for s in segments) == len(indices)
    assert sum(s.audio_samples for s in segments) == samples


def test_pre_record_buffer_is_the_start_of_the_recording(shift: Path):
    steps = json.loads((shift / "sim.json").read_text())["steps"]
    pressed = steps[0]["ran_at"]
    start = next(e.body for e in ledger_bodies(shift) if e.kind == "record_start")
    assert 2.0 <= start.pre_record_seconds < 2.0 + 0.9
    indices, _ = decode(export(shift)[:1])
    first_s = indices[0] / 15
    # the recording begins about pre_record_seconds before the press, at a keyframe
    assert pressed - 2.0 - 0.9 <= first_s <= pressed - 2.0 + 0.1


def test_clock_jump_is_signed_and_segment_times_stay_consistent(shift: Path):
    entries = ledger_bodies(shift)
    [sync] = [e.body for e in entries if e.kind == "time_sync"]
    assert -31 < (sync.new_utc_ns - sync.old_utc_ns) / 1e9 < -29
    segments = [e.body for e in entries if e.kind == "segment"]
    for a, b in zip(segments, segments[1:], strict=False):
        step = b.first_capture_utc_ns - a.last_capture_utc_ns
        assert 0.5 * a.frame_period_ns <= step <= 1.5 * a.frame_period_ns


POWER_CUT = """
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0

[[at]]
t = 0
do = "press_record"
[[at]]
t = 5.6
do = "power_cut"
[[at]]
t = 6
do = "power_restore"
[[at]]
t = 7
do = "press_record"
[[at]]
t = 10
do = "press_record"
[[at]]
t = 11
do = "end"
"""


def test_power_cut_kills_hard_and_the_device_records_again(tmp_path: Path):
    out = run_sim(tmp_path, POWER_CUT)
    entries = ledger_bodies(out)
    assert [e.seq for e in entries] == list(range(len(entries)))  # numbering survives
    kinds = [e.kind for e in entries]
    # one recording: cut, sealed at the next start, resumed by the next press
    assert kinds.count("record_start") == 1 and kinds.count("record_stop") == 1
    # Every interruption is resumed: the cut by the press, and any camera fault (the
    # simulated camera is late after each boot under load, as a Pi's is) at once.
    [cut] = scenario_interruptions(entries)
    assert (cut.body.reason, cut.body.detected_by) == ("power_loss", "boot_recovery")
    assert kinds.count("resume") == kinds.count("interruption")
    # The open segment is recovered, unless the cut came before its first whole
    # fragment: at most about a fragment is lost either way.
    assert [e.body.recovered for e in entries if e.kind == "segment"].count(True) <= 1
    assert 0 <= loss_at_cut_s(out, entries) <= 1.0, "more than a fragment was lost"
    # nothing is left unsealed, and the cut-off bytes were kept, not deleted
    assert not list((out / "device" / "pending").glob("*.cseg"))
    code, report = verify_json(out / "device")
    assert code == 3, report["findings"]  # intact; the cut awaits its voice note
    device_faults = kinds.count("interruption") - 1
    assert report["recordings"][0]["spans"] == 2 + device_faults  # the cut's, and theirs
    indices, _ = decode(export(out))
    assert indices == sorted(set(indices))  # in order, none twice


def test_scenario_errors_name_the_step_and_nothing_runs(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[at]]\nt = 0\ndo = "press_record"\n[[at]]\nt = 3\ndo = "power_kut"\n')
    r = custody("sim", bad, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert 'step 2 (t=3, do="power_kut")' in r.stderr and "power_cut" in r.stderr
    assert not (tmp_path / "out").exists()
    bad.write_text('[device]\nsegment_seconds = 0\n[[at]]\nt = 0\ndo = "end"\n')
    r = custody("sim", bad, "--out", tmp_path / "out")
    assert r.returncode == 2 and "[device].segment_seconds" in r.stderr


def test_recorder_config_errors_name_the_key(tmp_path: Path):
    config = tmp_path / "recorder.toml"
    config.write_text('device_id = "D1"\nvideo = "1280x720@300"\n')
    r = custody("recorder", "--config", config)
    assert r.returncode == 2 and "video" in r.stderr and str(config) in r.stderr
    config.write_text('segment_secnds = 5\n')
    r = custody("recorder", "--config", config)
    assert r.returncode == 2 and "segment_secnds" in r.stderr and "segment_seconds" in r.stderr


@pytest.fixture
def store_without_xattrs(tmp_path: Path):
    """A folder on a ramfs, a filesystem that keeps no extended attributes."""
    folder = tmp_path / "ramfs"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "ramfs", "custody-test", folder],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a ramfs needs root: {mounted.stderr.strip()}")
    try:
        yield folder / "store"
    finally:
        subprocess.run(["umount", folder], check=True)


def test_a_store_that_cannot_keep_fragment_marks_is_refused_at_start(
    unit: Unit, store_without_xattrs: Path, tmp_path: Path
):
    config = tmp_path / "recorder.toml"
    config.write_text(f'device_id = "{DEVICE}"\nstore = "{store_without_xattrs}"\n'
                      f'key_file = "{device_key_path(unit.keys, DEVICE)}"\n'
                      f'trust_file = "{unit.keys / TRUST_NAME}"\n'
                      f'control_socket = "{tmp_path / "control.sock"}"\nhardware = "sim"\n')
    r = custody("recorder", "--config", config, timeout=30)  # it must not start at all
    assert r.returncode == 2, r.stderr
    assert str(store_without_xattrs) in r.stderr and "extended attributes" in r.stderr
    assert not list(store_without_xattrs.rglob("*"))  # nothing was recorded there


# --- in-process: the pipeline under a slow disk ----------------------------------------


class SlowSealer(SegmentSealer):
    """A medium that stalls 3 s on every write until ``slow_until`` (monotonic s)."""

    slow_until = 0.0

    def _emit(self, stored: list) -> None:
        if time.monotonic() < self.slow_until:
            time.sleep(3)
        super()._emit(stored)

    def write(self, data: bytes) -> int:
        if time.monotonic() < self.slow_until:
            time.sleep(3)
        return super().write(data)


def test_slow_disk_is_a_declared_fault_not_a_silent_drop(unit: Unit):
    with recorder_on_sim(unit, segment_seconds=1, queue_seconds=1,
                         video_bitrate=100_000) as recorder:
        recorder.sealer_class = SlowSealer
        recorder.start()
        assert recorder.state == State.STANDBY
        SlowSealer.slow_until = time.monotonic() + 5
        recorder.start_recording("button")
        time.sleep(8)
        recorder.stop_recording("button")
    assert recorder.stats.overflows >= 1 and recorder.stats.dropped_frames > 0
    report = unit.verify()
    cuts = [i for i in report.interruptions if i.reason == "other"]
    assert cuts, report.findings
    assert all(g.declared for g in report.gaps) and report.gaps
    assert not report.errors, report.errors  # declared, so intact (though unexplained)


def failing_sealer(refused: Callable[[str], bool], after_fragments: int,
                   error: int) -> type[SegmentSealer]:
    """A medium that refuses writes to the ``refused`` files once ``after_fragments``
    of them are durable. The error comes where a real one does: the writer's write.
    """

    class FailingSealer(SegmentSealer):
        def _emit(self, stored: list) -> None:
            # (The header is written while opening, before the count exists.)
            if (refused(self.file) and hasattr(self, "_durable")
                    and self._durable_fragments >= after_fragments):
                raise OSError(error, os.strerror(error))
            super()._emit(stored)

    return FailingSealer


def segment_index(file: str) -> int:
    return int(file.split("-")[1].split(".")[0])


def record_for(recorder: Recorder, seconds: float) -> int:
    """Start the recorder, record ``seconds``, stop, and wait until all is sealed."""
    recorder.start()
    seq = recorder.start_recording("button")
    time.sleep(seconds)
    recorder.stop_recording("button")
    assert recorder.wait_idle(30)
    return seq


def recording_entries(unit: Unit, seq: int) -> list:
    """The ledger's entries about recording ``seq``, in order."""
    return [e.entry for e in unit.entries() if getattr(e.entry.body, "recording", None) == seq]


@pytest.mark.parametrize("error, reason", [(errno.EIO, "other"),
                                           (errno.ENOSPC, "storage_full")])
def test_a_medium_that_refuses_a_segment_loses_only_what_it_refused(
        unit: Unit, tmp_path: Path, error: int, reason: str):
    """The durable part is sealed, the loss declared, and recording goes on in a new file."""
    # Other tests' simulated power cuts leave their sealers' threads behind on purpose
    # (a cut never closes anything): only this recorder's are judged.
    before = set(threading.enumerate())
    with recorder_on_sim(unit, segment_seconds=10) as recorder:
        recorder.sealer_class = failing_sealer(lambda f: segment_index(f) == 0,
                                               after_fragments=2, error=error)
        seq = record_for(recorder, 7)
        assert recorder.status()["seal_failures"] == 1
    entries = recording_entries(unit, seq)
    assert [e.kind for e in entries if e.kind in ("segment", "interruption", "resume")][:4] == [
        "segment", "interruption", "resume", "segment"]
    [cut] = [e.body for e in entries if e.kind == "interruption"]
    assert (cut.reason, cut.detected_by) == (reason, "storage_write")
    refused, after = [e.body for e in entries if e.kind == "segment"][:2]
    # What was durable before the error is sealed, marked recovered...
    assert refused.recovered and refused.index == 0 and refused.frames > 0
    assert refused.last_capture_utc_ns <= cut.cut_utc_ns
    # ...and the recording goes on in a fresh file at once, not at the segment's end
    # (which was 10 s away): only about a fragment and a keyframe interval is lost.
    assert 0 < after.first_capture_utc_ns - refused.last_capture_utc_ns < 3e9
    report = unit.verify()
    assert not report.errors, report.errors
    assert len(report.gaps) == 1 and report.gaps[0].declared
    assert report.gaps[0].interruption is not None
    # Nothing is deleted: the bytes the medium refused to vouch for stay aside,
    # no journal is left behind, and the failed sealer's threads are gone.
    pending = sorted(p.name for p in (unit.store / "pending").iterdir())
    assert all(".tail-" in name and not name.endswith(".journal") for name in pending), pending
    assert not [t.name for t in set(threading.enumerate()) - before
                if t.name.startswith(("write r", "flush r"))]
    # From the outside: the sealed part plays, its frames in order and none missing.
    [out] = [r.out for r in export_store(unit.store, unit.trust, unit.archive, tmp_path)
             if r.file == refused.media.file]
    indices = decode([out])[0]
    assert len(indices) == refused.frames
    assert indices == list(range(indices[0], indices[0] + len(indices)))


def test_a_file_refused_from_its_start_is_kept_aside_and_recording_goes_on(unit: Unit):
    with recorder_on_sim(unit, segment_seconds=4) as recorder:
        recorder.sealer_class = failing_sealer(lambda f: segment_index(f) == 1,
                                               after_fragments=0, error=errno.EIO)
        seq = record_for(recorder, 8)
    assert recorder.stats.seal_failures == 1
    entries = recording_entries(unit, seq)
    [cut] = [e.body for e in entries if e.kind == "interruption"]
    assert (cut.reason, cut.detected_by) == ("other", "storage_write")
    assert [s.index for s in (e.body for e in entries if e.kind == "segment")][:2] == [0, 2]
    report = unit.verify()
    assert not report.errors, report.errors
    # At once in a new file, not at the refused segment's end 4 s later.
    [gap] = [g for g in report.gaps if g.recording == seq]
    assert gap.declared and gap.seconds < 3
    aside = sorted(p.name for p in (unit.store / "pending").iterdir())
    assert [n.split(".tail-")[0] for n in aside] == [f"r{seq:06d}-00001.cseg"] * 2, aside


def test_a_dead_medium_fails_once_per_segment_not_once_per_keyframe(unit: Unit):
    with recorder_on_sim(unit, segment_seconds=6) as recorder:
        recorder.sealer_class = failing_sealer(lambda f: True, after_fragments=0,
                                               error=errno.EIO)
        seq = record_for(recorder, 8)
        assert recorder.healthy()
    # Refused at once, retried at once and refused again, then only at the
    # segment's end (6 s): two or three, where retrying at every keyframe would
    # make one every second or two.
    assert 2 <= recorder.stats.seal_failures <= 3
    entries = recording_entries(unit, seq)
    cuts = [e.body for e in entries if e.kind == "interruption"]
    assert len(cuts) == recorder.stats.seal_failures
    assert all(c.detected_by == "storage_write" for c in cuts)
    report = unit.verify()
    assert not report.errors, report.errors


def test_a_refused_file_recovery_cannot_seal_at_once_is_kept_aside_not_sealed_late(
        unit: Unit, monkeypatch: pytest.MonkeyPatch):
    def refuse(store: Path, file: str) -> None:
        raise OSError(errno.EIO, "the medium refuses the recovery too")

    with monkeypatch.context() as patch:
        patch.setattr(device.recovery, "recover_file", refuse)
        with recorder_on_sim(unit, segment_seconds=2) as recorder:
            recorder.sealer_class = failing_sealer(lambda f: segment_index(f) == 1,
                                                   after_fragments=1, error=errno.EIO)
            seq = record_for(recorder, 6)
    refused = f"r{seq:06d}-00001.cseg"
    assert (unit.store / "pending" / refused).exists()  # left for the next start
    with recorder_on_sim(unit) as recorder:
        recorder.start()  # its recovery finds the file after later segments and the stop
    entries = recording_entries(unit, seq)
    assert [e.body.index for e in entries if e.kind == "segment"][:2] == [0, 2]
    assert [e.body.detected_by for e in entries if e.kind == "interruption"] == ["storage_write"]
    report = unit.verify()
    assert not report.errors, report.errors
    aside = sorted(p.name for p in (unit.store / "pending").iterdir())
    assert [n.split(".tail-")[0] for n in aside] == [refused] * 2, aside


@pytest.mark.parametrize("late", ["microphone", "camera"])
def test_capture_still_on_its_way_at_the_stop_belongs_to_the_recording(unit: Unit, late: str):
    """A recording ends at the press's capture time, not when routing gets there."""
    with recorder_on_sim(unit, segment_seconds=10) as recorder:
        recorder.start()
        source = recorder.microphone if late == "microphone" else recorder.camera
        read, hold_until = source.read, [0.0]

        def busy_read(timeout: float | None = None):  # the agent busy for a moment
            time.sleep(max(0.0, hold_until[0] - time.monotonic()))
            return read(timeout=timeout)

        source.read = busy_read
        seq = recorder.start_recording("button")
        time.sleep(3)
        hold_until[0] = time.monotonic() + 0.4
        time.sleep(0.3)  # the loop is held, the source's queue filling
        press_us = monotonic_us()
        recorder.stop_recording("button")
        assert recorder.wait_idle(30)
        press_ns = press_us * 1000 + recorder.appender.utc_offset_ns  # on the segments' UTC clock
    [segment] = [e.entry.body for e in unit.entries() if e.entry.kind == "segment"
                 and e.entry.body.recording == seq]
    audio_end_ns = segment.first_capture_utc_ns + segment.audio_samples * 10**9 // 48_000
    video_end_ns = segment.last_capture_utc_ns + segment.frame_period_ns
    # Both reach the press: neither loses the 0.3 s before it that was on its way.
    for end_ns, step_ns in ((audio_end_ns, 20_000_000), (video_end_ns, segment.frame_period_ns)):
        assert press_ns - step_ns <= end_ns <= press_ns + step_ns
    assert not unit.verify().errors


def small_buffers(recorder: Recorder, *, frames: int | None = None,
                  blocks: int | None = None) -> None:
    """Give the recorder a camera or microphone that buffers only a few items."""
    hw = recorder.hardware
    camera, microphone = hw.camera, hw.microphone
    if frames is not None:
        hw.camera = lambda **settings: camera(queue_frames=frames, **settings)
    if blocks is not None:
        hw.microphone = lambda config, backend=None: microphone(
            replace(config, queue_blocks=blocks), backend)


def stall_capture(recorder: Recorder, seconds: float) -> None:
    """The agent starved for a moment: nothing reads the camera or the microphone."""
    with recorder.router.lock:
        time.sleep(seconds)


def exported_frame_indices(unit: Unit, out: Path) -> list[list[int]]:
    """Each exported segment's frame indices, in ledger order."""
    files = [r.out for r in export_store(unit.store, unit.trust, unit.archive, out)]
    return [decode([f])[0] for f in files if f is not None]


@pytest.mark.parametrize("source", ["camera", "microphone"])
def test_capture_a_source_itself_loses_is_a_declared_gap(unit: Unit, tmp_path: Path,
                                                         source: str):
    """Frames the camera skips or audio the microphone drops never hide inside a segment."""
    with recorder_on_sim(unit, segment_seconds=1) as recorder:
        if source == "camera":
            small_buffers(recorder, frames=1)
        else:
            small_buffers(recorder, blocks=2)
        recorder.start()
        recorder.start_recording("button")
        time.sleep(2)
        stall_capture(recorder, 0.6)  # shorter than the silence that is a fault
        time.sleep(2)
        recorder.stop_recording("button")
        assert recorder.wait_idle(30)
    assert recorder.stats.source_losses >= 1
    reason, detected_by = (("camera_fault", "frame_index") if source == "camera"
                           else ("mic_fault", "audio_overflow"))
    entries = [e.entry for e in unit.entries()]
    [cut] = [e.body for e in entries if e.kind == "interruption"]
    assert (cut.reason, cut.detected_by) == (reason, detected_by)
    segments = [e.body for e in entries if e.kind == "segment"]
    assert {s.span for s in segments} == {0, 1}
    for s in segments:
        if s.span == 0 and source == "camera":  # the span ends at the first lost frame
            assert s.last_capture_utc_ns < cut.cut_utc_ns
        elif s.span == 0:  # video may go on a moment; the audio stops at the loss
            audio_end_ns = s.first_capture_utc_ns + s.audio_samples * 10**9 // s.audio_rate
            assert audio_end_ns <= cut.cut_utc_ns + 25_000_000
        else:
            assert s.first_capture_utc_ns >= cut.cut_utc_ns
    report = unit.verify()
    assert [(i.reason, i.detected_by) for i in report.interruptions] == [(reason, detected_by)]
    assert all(g.declared for g in report.gaps)
    assert not report.errors, report.errors
    # From the outside: no segment holds a jump in the frame index.
    for indices in exported_frame_indices(unit, tmp_path / "export"):
        assert indices == list(range(indices[0], indices[0] + len(indices)))


def test_illegal_transitions_are_refused_not_fatal(unit: Unit):
    with recorder_on_sim(unit) as recorder:
        assert recorder.start_recording("button") is None  # still booting
        recorder.start()
        recorder.stop_recording("button")  # not recording
        assert recorder.stats.refused_transitions == 2
        assert recorder.state == State.STANDBY and recorder.healthy()


def test_microphone_fault_is_declared_and_video_goes_on(unit: Unit):
    with recorder_on_sim(unit, segment_seconds=1) as recorder:
        recorder.start()
        recorder.start_recording("button")
        time.sleep(2)
        assert recorder.microphone is not None
        recorder.microphone.stop()  # the microphone goes silent, as a broken one does
        time.sleep(3)
        recorder.stop_recording("button")
    report = unit.verify()
    [cut] = [i for i in report.interruptions if i.reason == "mic_fault"]
    assert cut.resumed_by is not None
    assert not report.errors, report.errors
    segments = [e.entry.body for e in unit.entries() if e.entry.kind == "segment"
                and e.entry.body.recording == cut.recording]
    assert sum(s.frames for s in segments) >= 40  # ~5 s of video at 10 fps: it went on
