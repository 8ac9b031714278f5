"""Seq is never reused: a ledger cut back while the device is off is declared at its next start.

The attack: someone with the card cuts the ledger back to before a recording
and deletes its media. The device boots on simulated hardware; it must sign a
``ledger_gap`` naming the missing range, go on numbering after it, never reuse a
file name, and ``custody verify`` must report the gap as an error.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from device.high_water import MARK_FILES
from protocol.entries import LedgerGap, RecordStart, Segment
from tests.conftest import Unit
from tests.device.simrun import recorder_on_sim, verify_json


def cut_back_to_before_the_recording(unit: Unit) -> tuple[int, int, str]:
    """The attack; returns (first seq removed, last seq removed, the removed head)."""
    entries = unit.entries()
    start = next(e.entry.seq for e in entries if isinstance(e.entry.body, RecordStart))
    unit.write_lines(unit.lines()[:start])
    shutil.rmtree(unit.store / "media")
    return start, entries[-1].entry.seq, entries[-1].digest


def boot_and_record(unit: Unit, seconds: float = 0) -> None:
    with recorder_on_sim(unit, segment_seconds=1) as recorder:
        recorder.start()
        if seconds:
            recorder.press_record()
            time.sleep(seconds)
            recorder.press_record()
            assert recorder.wait_idle()


def test_a_ledger_cut_back_is_declared_and_numbering_goes_on_after_it(unit: Unit) -> None:
    old_files = {m.file for e in unit.entries() for m in e.entry.media()}
    first, last, head = cut_back_to_before_the_recording(unit)

    boot_and_record(unit, seconds=2.5)

    entries = unit.entries()
    [gap] = [e for e in entries if isinstance(e.entry.body, LedgerGap)]
    assert (gap.entry.body.first_seq, gap.entry.body.last_seq) == (first, last)
    assert gap.entry.body.last_head == head
    assert (gap.entry.seq, gap.entry.prev) == (last + 1, head)  # after the mark, not in it
    seqs = [e.entry.seq for e in entries]
    assert seqs == list(range(first)) + list(range(last + 1, last + 1 + len(seqs) - first))
    new_files = {m.file for e in entries for m in e.entry.media()}
    assert new_files and not new_files & old_files  # no file name used twice
    assert [s for s in (e.entry.body for e in entries) if isinstance(s, Segment)]

    code, report = verify_json(unit.store)
    assert code == 1 and report["verdict"] == "broken"
    kinds = {f["kind"]: f for f in report["findings"]}
    assert kinds["ledger_gap"]["severity"] == "error"
    assert f"{first}..{last}" in kinds["ledger_gap"]["message"]
    assert kinds["missing_entries"]["seq"] == last + 1


def test_the_mark_removed_too_is_declared_as_a_gap_of_unknown_size(unit: Unit) -> None:
    first, _, _ = cut_back_to_before_the_recording(unit)
    for name in MARK_FILES:
        (unit.store / name).unlink(missing_ok=True)

    boot_and_record(unit)

    [gap] = [e.entry.body for e in unit.entries() if isinstance(e.entry.body, LedgerGap)]
    assert (gap.first_seq, gap.last_seq, gap.last_head) == (first, None, None)
    code, report = verify_json(unit.store)
    assert code == 1 and "ledger_gap" in {f["kind"] for f in report["findings"]}


def test_a_mark_rewritten_to_match_the_cut_ledger_does_not_verify(unit: Unit) -> None:
    first, _, _ = cut_back_to_before_the_recording(unit)
    entries = unit.entries()
    for name in MARK_FILES:
        path = unit.store / name
        record = json.loads(path.read_bytes())
        record.update(seq=entries[-1].entry.seq, head=entries[-1].digest)  # old MAC kept
        path.write_text(json.dumps(record))

    boot_and_record(unit)

    [gap] = [e.entry.body for e in unit.entries() if isinstance(e.entry.body, LedgerGap)]
    assert gap.first_seq == first and gap.last_seq is None


def test_an_untouched_ledger_declares_nothing(unit: Unit, tmp_path: Path) -> None:
    boot_and_record(unit, seconds=1.5)
    boot_and_record(unit)
    assert not [e for e in unit.entries() if isinstance(e.entry.body, LedgerGap)]
    code, report = verify_json(unit.store)
    assert code == 0, report["findings"]
