"""The tamper matrix: every way of altering evidence gives its own finding.

Each case starts from the intact store of the ``unit`` fixture (entries:
0 provisioned, 1 assigned, 2 record_start, 3 marker, 4–6 segments,
7 marker, 8 record_stop) and changes one thing.
"""

from __future__ import annotations

import base64
import json
import os

import pytest

from device.sample import encode_sample
from device.sealer import SegmentSealer
from protocol.entries import EntryTime, Marker, RecordStart, Segment, TimeSync
from protocol.keys import SigningKey
from protocol.store_reader import MEDIA_DIR, RECEIPTS_DIR
from protocol.verify import BROKEN, INTACT
from tests.conftest import Unit, resign


def kinds(report) -> set[str]:
    return {f.kind for f in report.errors}


def media_files(unit: Unit) -> list:
    return sorted((unit.store / MEDIA_DIR).iterdir())


def test_untouched_store_is_intact(unit: Unit):
    report = unit.verify()
    assert report.verdict == INTACT, report.findings
    assert report.entries == 9
    [rec] = report.recordings
    assert (rec.officer, rec.category, rec.segments) == ("PC-0042", "scene", 3)
    assert rec.duration_s == pytest.approx(6.0)
    assert [m["phase"] for m in report.markers] == ["site", "questioning"]


def test_one_media_byte_changed(unit: Unit):
    f = media_files(unit)[1]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(data)
    report = unit.verify()
    assert report.verdict == BROKEN
    assert kinds(report) == {"media_hash"}
    assert [x.seq for x in report.errors] == [5]


def test_media_truncated(unit: Unit):
    f = media_files(unit)[0]
    os.truncate(f, f.stat().st_size - 100)
    assert kinds(unit.verify()) == {"media_truncated"}


def test_segment_file_deleted(unit: Unit):
    media_files(unit)[2].unlink()
    report = unit.verify()
    assert kinds(report) == {"media_missing"}
    assert report.errors[0].seq == 6


def test_ledger_entry_deleted(unit: Unit):
    lines = unit.lines()
    del lines[5]
    unit.write_lines(lines)
    report = unit.verify()
    assert report.verdict == BROKEN
    assert "missing_entries" in kinds(report)
    # its media is now sealed by nothing: said, not hidden
    assert "unsealed_media" in {f.kind for f in report.findings}


def test_two_entries_swapped(unit: Unit):
    lines = unit.lines()
    lines[4], lines[5] = lines[5], lines[4]
    unit.write_lines(lines)
    assert {"missing_entries", "seq_out_of_order"} <= kinds(unit.verify())


def test_entry_replayed(unit: Unit):
    lines = unit.lines()
    unit.write_lines([*lines[:6], lines[3], *lines[6:]])
    assert kinds(unit.verify()) == {"replayed_entry"}


def test_entry_spliced_in_from_another_device(unit: Unit, other_store):
    foreign = (other_store / "ledger.jsonl").read_bytes().splitlines()[4]
    lines = unit.lines()
    unit.write_lines([*lines[:5], foreign, *lines[5:]])
    assert "foreign_entry" in kinds(unit.verify())


def test_whole_chain_resigned_with_untrusted_key(unit: Unit):
    intruder = SigningKey.generate()
    unit.write_lines(resign(e.entry, intruder) for e in unit.entries())
    report = unit.verify()
    assert report.verdict == BROKEN
    assert kinds(report) == {"untrusted_signature"}
    assert len(report.errors) == 9  # not one entry is accepted


def test_timestamp_edited(unit: Unit):
    lines = unit.lines()
    envelope = json.loads(lines[5])
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["time"]["utc_ns"] += 5_000_000_000
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    lines[5] = json.dumps(envelope).encode()
    unit.write_lines(lines)
    report = unit.verify()
    assert (report.errors[0].kind, report.errors[0].seq) == ("bad_signature", 5)
    # and its consequences: entry 6 no longer links to it, and segment 5 is not
    # evidence any more, so its 2 s are a gap
    assert kinds(report) == {"bad_signature", "prev_mismatch", "undeclared_gap"}


def test_wall_clock_rolled_back(unit: Unit):
    """A correctly signed entry whose wall clock goes back within one boot."""
    unit.clock.utc_ns -= 10_000_000_000  # the clock steps back 10 s, undeclared
    unit.append(Marker(phase="other"))
    report = unit.verify()
    assert kinds(report) == {"clock_rollback"}
    assert report.errors[0].seq == 9


def test_declared_clock_step_is_not_a_rollback(unit: Unit):
    old = unit.clock.utc_ns
    unit.clock.utc_ns -= 10_000_000_000
    unit.append(TimeSync(old_utc_ns=old, new_utc_ns=unit.clock.utc_ns, source="dock"),
                Marker(phase="other"))
    assert unit.verify().verdict == INTACT


def test_entry_inserted_after_the_fact(unit: Unit):
    """A validly signed entry slipped in between 4 and 5 with the device key."""
    entries = unit.entries()
    forged = resign(entries[5].entry, unit.device_key, prev=entries[4].digest,
                    time=EntryTime(**{**entries[5].entry.time.to_dict(),
                                      "utc_ns": entries[5].entry.time.utc_ns - 1}))
    lines = unit.lines()
    unit.write_lines([*lines[:5], forged, *lines[5:]])
    report = unit.verify()
    assert report.verdict == BROKEN
    assert "seq_out_of_order" in kinds(report)


def test_two_same_size_segment_files_swapped(unit: Unit):
    """Two genuinely sealed files of equal size exchanged: only the hashes tell."""
    first, second = encode_sample(0, 20, 10).mp4, encode_sample(20, 20, 10).mp4
    size = max(len(first), len(second))
    # pad the shorter with an MP4 'free' box: still a valid file, now the same length
    first, second = (m + pad_box(size - len(m)) if len(m) < size else m for m in (first, second))
    with unit.ledger() as ledger:
        start = ledger.append(RecordStart(trigger="button", category="scene",
                                          officer="PC-0042", pre_record_seconds=0))
        rec, t0 = start.entry.seq, start.entry.time.utc_ns
        for i, mp4 in enumerate((first, second)):
            sealer = SegmentSealer(unit.store, f"same-{i}.cseg", unit.archive_public)
            sealer.write(mp4)
            media = sealer.close()
            unit.clock.advance_to(t0 + i * 2_000_000_000 + 1_900_000_000)
            ledger.append(Segment(recording=rec, span=0, index=i, media=media,
                                  first_capture_utc_ns=t0 + i * 2_000_000_000,
                                  last_capture_utc_ns=t0 + i * 2_000_000_000 + 1_900_000_000,
                                  frame_period_ns=100_000_000, frames=20,
                                  audio_samples=96_000, audio_rate=48_000))
    a, b = unit.store / MEDIA_DIR / "same-0.cseg", unit.store / MEDIA_DIR / "same-1.cseg"
    assert a.stat().st_size == b.stat().st_size
    assert unit.verify().verdict == INTACT
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    report = unit.verify()
    assert kinds(report) == {"media_hash"}
    assert len(report.errors) == 2


def pad_box(n: int) -> bytes:
    assert n == 0 or n >= 8
    return n.to_bytes(4, "big") + b"free" + bytes(n - 8) if n else b""


def test_tail_cut_detected_against_a_later_receipt(unit: Unit):
    receipt = unit.receipt()
    (unit.store / RECEIPTS_DIR).mkdir()
    (unit.store / RECEIPTS_DIR / "r1.json").write_text(json.dumps(receipt))
    assert unit.verify().verdict == INTACT
    unit.write_lines(unit.lines()[:-2])
    report = unit.verify()
    assert report.verdict == BROKEN
    assert kinds(report) == {"tail_cut"}


def test_tail_cut_without_any_later_receipt_is_not_detectable(unit: Unit):
    """Documented limit (docs/format.md): a ledger alone cannot prove its own end."""
    unit.write_lines(unit.lines()[:-2])
    report = unit.verify()
    assert report.verdict == INTACT
    assert report.recordings[0].stop_utc_ns is None  # but the recording shows no stop


def test_ledger_rewritten_after_a_receipt(unit: Unit):
    receipt = unit.receipt()
    entries = unit.entries()
    # the device key holder rewrites the last entry after the dock saw it
    lines = unit.lines()
    lines[-1] = resign(entries[-1].entry, unit.device_key, time=EntryTime(
        **{**entries[-1].entry.time.to_dict(), "utc_ns": entries[-1].entry.time.utc_ns + 1}))
    unit.write_lines(lines)
    assert kinds(unit.verify([receipt])) == {"receipt_mismatch"}


def test_forged_receipt_is_refused(unit: Unit):
    forged = unit.receipt(key=SigningKey.generate())
    assert kinds(unit.verify([forged])) == {"bad_receipt"}


def test_garbage_line_is_reported_not_fatal(unit: Unit):
    lines = unit.lines()
    lines.insert(3, b"\x00not json")
    unit.write_lines(lines)
    report = unit.verify()
    assert "malformed_entry" in kinds(report)
    assert report.recordings  # the rest is still read and reported
