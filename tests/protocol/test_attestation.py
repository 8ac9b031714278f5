"""Continuity attestations: built from the verifier's report, dock-signed, checked."""

from __future__ import annotations

import base64
import json

import pytest

from protocol.attestation import (
    ATTESTATION_PAYLOAD_TYPE,
    Attestation,
    attestation_id,
    build_attestation,
    check_attestation,
    open_attestation,
    sign_attestation,
)
from protocol.envelope import encode_json, sign_payload
from protocol.errors import ProtocolError
from protocol.verify import INTACT, INTACT_UNEXPLAINED_GAPS
from tests.conftest import DEVICE, DOCK, OFFICER, Unit
from tests.protocol.test_continuity import interrupted_recording

H = 3600 * 1_000_000_000


def attest(unit: Unit, archived_after_stop_ns: int = 60_000_000_000, **kw) -> Attestation:
    report = unit.verify()
    last = unit.entries()[-1].entry.seq
    stop = max(r.stop_utc_ns or 0 for r in report.recordings)
    t = stop + archived_after_stop_ns
    return build_attestation(report, dock=DOCK, first_seq=kw.pop("first_seq", 0), last_seq=last,
                             archived_utc_ns=t, attested_utc_ns=t, **kw)


def test_an_intact_recording_is_attested_with_what_the_unit_head_needs(unit: Unit):
    att = attest(unit, clock_offset_ns=-1_500_000)
    assert (att.device, att.dock, att.unit, att.verdict) == (DEVICE, DOCK, "test-unit", INTACT)
    assert att.officers == [OFFICER]
    assert att.head == unit.entries()[-1].digest
    [rec] = att.recordings
    assert rec.segments == 3 and rec.stop_utc_ns is not None
    assert abs(rec.duration_s - 6.0) < 1e-6
    assert rec.handover_s == pytest.approx(60.0) and not rec.overdue
    assert [m.phase for m in att.markers] == ["site", "questioning"]
    assert att.gaps == [] and att.clock_offset_ns == -1_500_000


def test_the_signed_attestation_opens_against_the_trust_file(unit: Unit):
    att = attest(unit)
    envelope = sign_attestation(att, unit.dock_key.signer())
    assert envelope["payloadType"] == ATTESTATION_PAYLOAD_TYPE
    opened = open_attestation(json.loads(json.dumps(envelope)), unit.trust)
    assert opened == att
    check = check_attestation(envelope, unit.trust)
    assert check.ok and check.signed_by == [unit.dock_key.keyid]


def test_a_recording_handed_in_after_24_hours_is_overdue(unit: Unit):
    att = attest(unit, archived_after_stop_ns=25 * H)
    [rec] = att.recordings
    assert rec.overdue and rec.handover_s == pytest.approx(25 * 3600)
    assert att.overdue == [rec]
    assert not attest(unit, archived_after_stop_ns=23 * H).recordings[0].overdue


def test_gaps_say_their_reason_and_which_voice_note_explains_them(unit: Unit):
    explained = interrupted_recording(unit, speech=3.0)
    unexplained = interrupted_recording(unit, speech=None)
    att = attest(unit)
    assert att.verdict == INTACT_UNEXPLAINED_GAPS
    by_cut = {g.interruption: g for g in att.gaps}
    assert by_cut[explained].explained and by_cut[explained].voice_note == explained + 2
    assert by_cut[explained].reason == "battery"
    assert not by_cut[unexplained].explained and by_cut[unexplained].voice_note is None
    assert att.unexplained_gaps == [by_cut[unexplained]]
    assert any(f.kind == "unexplained_interruption" for f in att.findings)


def test_a_later_range_keeps_only_its_own_recordings_and_gaps(unit: Unit):
    first_last = unit.entries()[-1].entry.seq
    interrupted_recording(unit, speech=None)
    att = attest(unit, first_seq=first_last + 1,
                 since_utc_ns=unit.entries()[first_last + 1].entry.time.utc_ns)
    assert [r.recording for r in att.recordings] == [first_last + 1]
    assert len(att.gaps) == 1 and att.markers == []


def test_unknown_fields_are_kept_and_signed(unit: Unit):
    data = attest(unit).to_dict()
    data["x_future"] = {"a": 1}
    data["recordings"][0]["x_more"] = [1, 2]
    att = Attestation.from_dict(data)
    assert att.to_dict() == data
    assert open_attestation(sign_attestation(att, unit.dock_key.signer()), unit.trust) == att


def _tampered(envelope: dict, change) -> dict:
    payload = json.loads(base64.b64decode(envelope["payload"]))
    change(payload)
    return {**envelope, "payload": base64.b64encode(encode_json(payload)).decode()}


def test_an_altered_attestation_is_refused(unit: Unit):
    envelope = sign_attestation(attest(unit), unit.dock_key.signer())

    def hide(p):
        p["verdict"] = "intact"
        p["gaps"] = []
        p["recordings"][0]["overdue"] = False
        p["attested_utc_ns"] += 1
    check = check_attestation(_tampered(envelope, hide), unit.trust)
    assert not check.ok and "no valid signature" in check.problem
    with pytest.raises(ProtocolError, match="no valid signature"):
        open_attestation(_tampered(envelope, hide), unit.trust)


def test_only_a_dock_key_may_sign_an_attestation(unit: Unit):
    att = attest(unit)
    by_device = sign_attestation(att, unit.device_key.signer())
    assert "no valid signature by dock" in check_attestation(by_device, unit.trust).problem
    # naming a dock the trust file does not list does not help either
    att.dock = "DOCK-99"
    att.id = attestation_id(att.unit, att.dock, att.device, att.first_seq, att.last_seq,
                            att.head)
    forged = sign_attestation(att, unit.device_key.signer())
    assert "only a dock may attest" in check_attestation(forged, unit.trust).problem


def test_an_id_that_is_not_its_own_is_refused(unit: Unit):
    # Consumers deduplicate by id: a second statement under an old id would be hidden.
    data = attest(unit).to_dict()
    data["id"] = "0" * 32
    payload = sign_payload(encode_json(data), ATTESTATION_PAYLOAD_TYPE,
                           [unit.dock_key.signer()]).to_dict()
    check = check_attestation(payload, unit.trust)
    assert not check.ok and "attestation.id" in check.problem


@pytest.mark.parametrize("bad", [None, 3, "x", {}, {"payload": "!!", "payloadType": "t",
                                                     "signatures": []}])
def test_malformed_input_is_a_protocol_error_never_a_crash(unit: Unit, bad):
    check = check_attestation(bad, unit.trust)
    assert not check.ok and check.problem.startswith("attestation")
