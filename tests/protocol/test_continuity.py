"""Continuity: gaps, interruptions, voice notes, receipts, key rotation."""

from __future__ import annotations

import json

import pytest

from daemon.provision import write_trust
from device.ledger import LedgerWriter
from device.ledger_state import LedgerState
from device.sealer import SegmentSealer
from protocol.entries import (
    Exemption,
    Interruption,
    KeyRotated,
    Marker,
    OffloadReceiptEntry,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    VoiceNote,
    explains_interruption,
)
from protocol.keys import SigningKey
from protocol.receipt import OffloadReceipt, sign_receipt
from protocol.store_reader import MEDIA_DIR, TRUST_NAME
from protocol.trust import Holder, TrustedKey
from protocol.verify import BROKEN, INTACT, INTACT_UNEXPLAINED_GAPS
from tests.conftest import DEVICE, Unit

PERIOD = 100_000_000  # 10 fps
S = 1_000_000_000


def sealed(unit: Unit, name: str):
    sealer = SegmentSealer(unit.store, name, unit.archive_public)
    sealer.write(name.encode() * 10)
    return sealer.close()


def segment(unit: Unit, rec: int, index: int, first_ns: int, seconds: float = 2, span: int = 0):
    frames = int(seconds * S // PERIOD)
    return Segment(recording=rec, span=span, index=index, media=sealed(unit, f"c{rec}-{index}"),
                   first_capture_utc_ns=first_ns,
                   last_capture_utc_ns=first_ns + (frames - 1) * PERIOD,
                   frame_period_ns=PERIOD, frames=frames, audio_samples=int(48_000 * seconds),
                   audio_rate=48_000)


def voice_note(unit: Unit, interruption: int, speech: float) -> VoiceNote:
    return VoiceNote(interruption=interruption, media=sealed(unit, f"vn-{interruption}"),
                     first_capture_utc_ns=0, audio_samples=48_000 * 5, audio_rate=48_000,
                     speech_seconds=speech)


def start(unit: Unit) -> tuple[int, int]:
    [e] = unit.append(RecordStart(trigger="button", category="meeting", officer="PC-0042",
                                  pre_record_seconds=30))
    return e.entry.seq, e.entry.time.utc_ns


def interrupted_recording(unit: Unit, speech: float | None, gap_s: float = 5) -> int:
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0))
    [cut] = unit.append(Interruption(reason="battery", detected_by="battery_gauge",
                                     cut_utc_ns=t0 + 2 * S, recording=rec))
    unit.append(Resume(interruption=cut.entry.seq, recording=rec))
    if speech is not None:
        unit.append(voice_note(unit, cut.entry.seq, speech))
    unit.append(segment(unit, rec, 1, t0 + 2 * S + int(gap_s * S), span=1),
                RecordStop(recording=rec, trigger="button"))
    return cut.entry.seq


def test_interruption_explained_by_voice_note_is_intact(unit: Unit):
    cut = interrupted_recording(unit, speech=3.2)
    report = unit.verify()
    assert report.verdict == INTACT, report.findings
    [gap] = report.gaps
    assert gap.declared and gap.explained
    assert (gap.reason, gap.interruption) == ("battery", cut)
    assert abs(gap.seconds - 5.0) < 1e-6
    [i] = report.interruptions
    assert i.resumed_by == cut + 1 and i.voice_note == cut + 2
    assert report.recordings[-1].spans == 2


def test_interruption_without_voice_note_is_unexplained(unit: Unit):
    interrupted_recording(unit, speech=None)
    report = unit.verify()
    assert report.verdict == INTACT_UNEXPLAINED_GAPS
    assert [f.kind for f in report.findings if f.severity == "unexplained"] == [
        "unexplained_interruption"]
    assert report.gaps[0].declared and not report.gaps[0].explained


def test_silent_voice_note_explains_nothing(unit: Unit):
    interrupted_recording(unit, speech=0.0)
    report = unit.verify()
    assert report.verdict == INTACT_UNEXPLAINED_GAPS
    assert "silent_voice_note" in {f.kind for f in report.findings}


@pytest.mark.parametrize(("speech", "explains"), [(0.499, False), (0.5, True), (0.512, True)])
def test_device_and_verifier_apply_one_speech_rule(unit: Unit, speech: float, explains: bool):
    """The verifier's verdict and the device's own view at boot (whether to prompt again)
    come from the one rule of docs/format.md, at its edge too."""
    cut = interrupted_recording(unit, speech=speech)
    assert explains_interruption(speech) is explains
    report = unit.verify()
    assert report.gaps[0].explained is explains
    assert report.verdict == (INTACT if explains else INTACT_UNEXPLAINED_GAPS)
    assert (cut in LedgerState.read(unit.store).explained) is explains


def test_gap_no_interruption_declares_is_broken(unit: Unit):
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), segment(unit, rec, 1, t0 + 2 * S + S // 2))
    report = unit.verify()
    assert report.verdict == BROKEN
    assert [f.kind for f in report.errors] == ["undeclared_gap"]
    assert abs(report.gaps[0].seconds - 0.5) < 1e-6


def test_abutting_segments_within_one_and_a_half_periods_are_continuous(unit: Unit):
    rec, t0 = start(unit)
    # next first frame 1.4 periods after the last one: jitter, not a gap
    unit.append(segment(unit, rec, 0, t0),
                segment(unit, rec, 1, t0 + 19 * PERIOD + 14 * PERIOD // 10))
    assert unit.verify().verdict == INTACT
    unit.append(segment(unit, rec, 2, t0 + 39 * PERIOD + 16 * PERIOD // 10 + 2 * S))
    assert unit.verify().verdict == BROKEN


def test_overlapping_segments_are_broken(unit: Unit):
    rec, t0 = start(unit)
    unit.append(segment(unit, rec, 0, t0), segment(unit, rec, 1, t0 + S))
    assert [f.kind for f in unit.verify().errors] == ["overlap"]


def test_media_freed_against_a_receipt_is_offloaded_not_missing(unit: Unit):
    receipt = unit.receipt()
    unit.append(OffloadReceiptEntry(receipt=receipt))
    for f in (unit.store / MEDIA_DIR).iterdir():
        f.unlink()
    report = unit.verify()
    assert report.verdict == INTACT, report.findings
    assert sum(f.kind == "offloaded" for f in report.findings) == 3


def test_media_freed_without_a_receipt_is_missing(unit: Unit):
    forged = unit.receipt(key=SigningKey.generate())
    unit.append(OffloadReceiptEntry(receipt=forged))
    next((unit.store / MEDIA_DIR).iterdir()).unlink()
    kinds = {f.kind for f in unit.verify().errors}
    assert kinds == {"bad_receipt", "media_missing"}


def test_embedded_receipt_for_other_entries_is_a_mismatch(unit: Unit):
    """A genuine dock signature over a head that is not this ledger's entry 4."""
    receipt = OffloadReceipt(dock="DOCK-01", device=DEVICE, first_seq=0, last_seq=4,
                             head="0" * 64, media=[], archived_utc_ns=0)
    unit.append(OffloadReceiptEntry(receipt=sign_receipt(receipt, unit.dock_key.signer())))
    assert {f.kind for f in unit.verify().errors} == {"receipt_mismatch"}


def test_key_rotation(unit: Unit):
    new = SigningKey.generate()
    trust = unit.trust
    trust.keys[new.keyid] = TrustedKey(keytype="ed25519", public=new.public_hex)
    trust.devices[DEVICE] = Holder(keys=[*trust.devices[DEVICE].keys, new.keyid])
    write_trust(unit.keys, trust)
    unit.append(KeyRotated(new_key=new.keyid, new_public=new.public_hex))
    with LedgerWriter(unit.store, DEVICE, new, unit.clock) as ledger:
        ledger.append(Marker(phase="other"))
    assert unit.verify().verdict == INTACT
    # the old key may no longer sign
    unit.append(Marker(phase="other"))
    assert {f.kind for f in unit.verify().errors} == {"untrusted_signature"}
    assert (unit.keys / TRUST_NAME).exists()


def test_exemptions_and_markers_are_reported(unit: Unit):
    unit.append(Exemption(reason="privacy", note="minor present"))
    report = unit.verify()
    assert report.verdict == INTACT
    assert [(x["reason"], x["note"]) for x in report.exemptions] == [("privacy", "minor present")]
    doc = json.loads(report.to_json())
    assert set(doc) >= {"verdict", "recordings", "gaps", "exemptions", "markers", "findings"}
    assert doc["recordings"][0]["officer"] == "PC-0042"
    assert not any(k.startswith("_") for k in doc["recordings"][0])
