"""A hole in a segment's sound is a gap too: declared by an interruption, or broken."""

from __future__ import annotations

import dataclasses

from protocol.entries import Interruption, RecordStart, RecordStop, Resume
from protocol.verify import BROKEN, INTACT, INTACT_UNEXPLAINED_GAPS
from tests.conftest import Unit
from tests.protocol.test_continuity import S, segment, start

RATE = 48_000


def short(unit: Unit, rec: int, index: int, first_ns: int, missing_s: float, **changes):
    """A 2 s segment holding ``missing_s`` less sound than its time."""
    whole = segment(unit, rec, index, first_ns)
    return dataclasses.replace(whole, audio_samples=whole.audio_samples - int(missing_s * RATE),
                               **changes)


def mic_fault(rec: int, cut_ns: int) -> Interruption:
    return Interruption(reason="mic_fault", detected_by="audio_late", cut_utc_ns=cut_ns,
                        recording=rec)


def test_a_hole_in_the_sound_no_interruption_declares_is_broken(unit: Unit):
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), short(unit, rec, 1, t0 + 2 * S, 0.4),
                segment(unit, rec, 2, t0 + 4 * S), RecordStop(recording=rec, trigger="button"))
    report = unit.verify()
    assert report.verdict == BROKEN
    [finding] = report.errors
    assert finding.kind == "undeclared_audio_gap" and finding.seq == rec + 2
    assert finding.line == rec + 3  # the short segment's own line, not the one after it
    [gap] = report.audio_gaps
    assert (gap.seq, gap.declared) == (rec + 2, False) and abs(gap.seconds - 0.4) < 1e-6


def test_a_hole_at_the_end_of_the_ledger_is_broken_too(unit: Unit):
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), short(unit, rec, 1, t0 + 2 * S, 1.0))
    assert "undeclared_audio_gap" in [f.kind for f in unit.verify().errors]


def test_a_hole_within_the_tolerance_is_no_gap(unit: Unit):
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), short(unit, rec, 1, t0 + 2 * S, 0.2),
                RecordStop(recording=rec, trigger="button"))
    report = unit.verify()
    assert report.verdict == INTACT and report.audio_gaps == []


def test_an_interruption_after_the_short_segment_declares_it(unit: Unit):
    """The device declares a hole when it finds it: after the segment was sealed."""
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), short(unit, rec, 1, t0 + 2 * S, 0.5))
    [cut] = unit.append(mic_fault(rec, t0 + 3 * S))
    unit.append(Resume(interruption=cut.entry.seq, recording=rec),
                segment(unit, rec, 2, t0 + 4 * S), RecordStop(recording=rec, trigger="button"))
    report = unit.verify()
    assert report.verdict == INTACT_UNEXPLAINED_GAPS, report.findings
    [gap] = report.audio_gaps
    assert gap.declared and gap.interruption == cut.entry.seq


def test_a_declaration_does_not_reach_past_a_whole_segment(unit: Unit):
    rec, t0 = start(unit)
    unit.append(short(unit, rec, 0, t0, 0.5), segment(unit, rec, 1, t0 + 2 * S))
    [cut] = unit.append(mic_fault(rec, t0 + 3 * S))
    unit.append(Resume(interruption=cut.entry.seq, recording=rec),
                RecordStop(recording=rec, trigger="button"))
    assert [f.kind for f in unit.verify().errors] == ["undeclared_audio_gap"]


def test_a_silence_declared_once_stays_declared_until_the_sound_is_back(unit: Unit):
    rec, t0 = start(unit)
    _, cut = unit.append(segment(unit, rec, 0, t0), mic_fault(rec, t0 + 2 * S))
    unit.append(Resume(interruption=cut.entry.seq, recording=rec),
                short(unit, rec, 1, t0 + 2 * S, 2.0), short(unit, rec, 2, t0 + 4 * S, 2.0),
                short(unit, rec, 3, t0 + 6 * S, 1.0), segment(unit, rec, 4, t0 + 8 * S),
                short(unit, rec, 5, t0 + 10 * S, 1.0),  # a new hole: not the old silence
                RecordStop(recording=rec, trigger="button"))
    report = unit.verify()
    assert [(g.declared, g.interruption) for g in report.audio_gaps] == [
        (True, cut.entry.seq)] * 3 + [(False, None)]
    assert [f.kind for f in report.errors] == ["undeclared_audio_gap"]


def test_a_recording_without_sound_is_not_judged(unit: Unit):
    """Video only (no microphone; or silent from the start, which the device declares):
    the ledger cannot tell a hole from a track that was never there."""
    rec, t0 = start(unit)
    unit.append(*(short(unit, rec, i, t0 + 2 * i * S, 2.0) for i in range(3)),
                RecordStop(recording=rec, trigger="button"))
    report = unit.verify()
    assert report.verdict == INTACT and report.audio_gaps == []


def test_pre_record_video_needs_no_sound_but_the_recording_after_the_press_does(unit: Unit):
    """Pre-record without audio: the first segment begins 3 s before the press (the
    record_start's time) and holds sound from the press on. Allowed up to the
    recording's pre_record_seconds, and only before the press."""
    for pre_record_s, verdict in ((30, INTACT), (1, BROKEN)):
        [e] = unit.append(RecordStart(trigger="button", category="scene", officer="PC-0042",
                                      pre_record_seconds=pre_record_s, pre_record_audio=False))
        rec, t0 = e.entry.seq, e.entry.time.utc_ns
        first = segment(unit, rec, 0, t0 - 3 * S, seconds=5)
        first = dataclasses.replace(first, audio_samples=first.audio_samples - 3 * RATE)
        unit.append(first, segment(unit, rec, 1, t0 + 2 * S),
                    RecordStop(recording=rec, trigger="button"))
        report = unit.verify()
        assert report.verdict == verdict, (pre_record_s, report.findings)
