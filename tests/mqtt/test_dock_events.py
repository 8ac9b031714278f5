"""The dock's offload reports become attestations of the new range and their alerts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from daemon.mqtt.dock_events import MqttDockEvents, _range_of, verify_archived
from protocol.store_reader import MEDIA_DIR
from tests.conftest import DEVICE, Unit
from tests.mosquitto import Broker
from tests.mqtt.helpers import publisher, wait_until, watcher
from tests.protocol.test_continuity import interrupted_recording

H = 3600 * 1_000_000_000


def soon_after(unit: Unit):
    """The dock's clock: a minute after the device's last entry (the device clock is the
    test's StepClock, far from today)."""
    return lambda: unit.clock.utc_ns + 60_000_000_000


def test_each_offload_attests_only_what_is_new(unit: Unit, mosquitto: Broker, tmp_path: Path):
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            events = MqttDockEvents(pub, clock=soon_after(unit))
            first = events.offloaded(DEVICE, unit.store, unit.verify(), 2_000_000)
            assert (first.first_seq, first.last_seq) == (0, unit.entries()[-1].entry.seq)
            assert first.clock_offset_ns == 2_000_000 and first.verdict == "intact"
            assert events.offloaded(DEVICE, unit.store, unit.verify(), None) is None  # nothing new
            unit.record(segments=1)
            second = events.offloaded(DEVICE, unit.store, unit.verify(), None)
            assert second.first_seq == first.last_seq + 1
            assert [r.recording for r in second.recordings] == [first.last_seq + 1]
            assert pub.wait_delivered(second.id, 10)
            assert wait_until(w, lambda: w.board.accepted == 2)
            assert w.board.devices[DEVICE].attestation == second
            assert w.board.alerts == []
            unit.write_lines(unit.lines()[:5])  # the archive copy cut behind the dock's back
            assert events.offloaded(DEVICE, unit.store, unit.verify(), None) is None
            assert pub.flush(10)
        assert wait_until(w, lambda: len(w.board.alerts) == 1)
        [alert] = w.board.alerts
        assert alert.alert == "integrity_failure" and "ends at entry 4" in alert.detail["problem"]
    finally:
        w.stop()


def test_an_unexplained_gap_and_an_overdue_recording_raise_alerts(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    interrupted_recording(unit, speech=None)
    late = unit.clock.utc_ns + 25 * H
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            att = MqttDockEvents(pub, clock=lambda: late).offloaded(
                DEVICE, unit.store, unit.verify(), None)
            assert att.verdict == "intact_unexplained_gaps" and len(att.overdue) == 2
            assert pub.flush(10)
        assert wait_until(w, lambda: len(w.board.alerts) == 2)
        by_kind = {a.alert: a for a in w.board.alerts}
        assert set(by_kind) == {"unexplained_gap", "overdue_handover"}
        assert by_kind["unexplained_gap"].detail["attestation"] == att.id
        assert len(by_kind["overdue_handover"].detail["recordings"]) == 2
    finally:
        w.stop()


def test_a_broken_store_raises_an_integrity_failure(unit: Unit, mosquitto: Broker,
                                                    tmp_path: Path):
    victim = sorted((unit.store / MEDIA_DIR).iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[200] ^= 1
    victim.write_bytes(bytes(data))
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            events = MqttDockEvents(pub, clock=soon_after(unit))
            att = events.offloaded(DEVICE, unit.store, unit.verify(), None)
            assert att.verdict == "broken"
            assert pub.flush(10)
        assert wait_until(w, lambda: len(w.board.alerts) == 1)
        [alert] = w.board.alerts
        assert alert.alert == "integrity_failure"
        assert [f["kind"] for f in alert.detail["findings"]] == ["media_hash"]
        assert "broken" in w.board.table()
    finally:
        w.stop()


def test_the_new_range_is_found_in_a_ledger_with_a_broken_line(unit: Unit):
    lines = unit.lines()
    n = len(lines)
    assert _range_of(unit.store, None) == (0, n - 1, unit.entries()[0].entry.time.utc_ns)
    third = unit.entries()[2].entry.time.utc_ns
    unit.write_lines([*lines[:2], b"{not an entry", *lines[2:]])  # entry n is no longer line n
    assert _range_of(unit.store, 1) == (2, n - 1, third)


@dataclass
class OffloadReport:
    """The fields of the dock's offload report (daemon.events) the attestation uses."""

    first_seq: int
    last_seq: int
    archived_utc_ns: int
    clock_offset_ns: int | None = None


def test_the_docks_event_interface_attests_on_a_worker_and_catches_up_after_a_crash(
        unit: Unit, mosquitto: Broker, tmp_path: Path):
    archive = tmp_path / "archive"
    (archive / "devices").mkdir(parents=True)
    store = archive / "devices" / DEVICE
    shutil.copytree(unit.store, store)
    last = unit.entries()[-1].entry.seq
    w = watcher(mosquitto, unit)
    try:
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            events = MqttDockEvents(pub, unit.trust, clock=soon_after(unit))
            events.on_offloaded(DEVICE, store, OffloadReport(0, last, unit.clock.utc_ns, -7))
            assert events.wait_idle(10)
            events.alert("unknown_device", {"device": "CAM-9", "reason": "not_enrolled"})
            assert pub.flush(10)
            events.close()
        assert wait_until(w, lambda: w.board.accepted == 2)
        att = w.board.devices[DEVICE].attestation
        assert (att.first_seq, att.last_seq, att.verdict, att.clock_offset_ns) == (
            0, last, "intact", -7)
        assert att.archived_utc_ns == unit.clock.utc_ns
        assert w.board.alerts[0].detail == {"device": "CAM-9", "reason": "not_enrolled"}

        # the dock archives more, then dies before it attests: caught up at its next start
        unit.record(segments=1)
        shutil.copytree(unit.store, store, dirs_exist_ok=True)
        with publisher(mosquitto, unit, tmp_path / "outbox.db") as pub:
            [late] = MqttDockEvents(pub, unit.trust, clock=soon_after(unit)).catch_up(archive)
            assert late.first_seq == last + 1 and late.verdict == "intact"
            assert pub.wait_delivered(late.id, 10)
            assert MqttDockEvents(pub, unit.trust).catch_up(archive) == []
        assert wait_until(w, lambda: w.board.devices[DEVICE].attestation == late)
    finally:
        w.stop()


def test_an_archive_file_cut_short_shows_in_the_attestation(unit: Unit, tmp_path: Path):
    victim = sorted((unit.store / MEDIA_DIR).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    report = verify_archived(unit.store, unit.trust)
    assert report.verdict == "broken"
    assert [f.kind for f in report.errors] == ["media_truncated"]
