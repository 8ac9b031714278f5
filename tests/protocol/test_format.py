"""Property tests of the evidence format: parsing never fails in an undocumented
way, and every valid entry round-trips byte-exactly."""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import entries as E
from protocol.envelope import encode_json, parse_line, sign_entry
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.receipt import open_receipt
from protocol.trust import Holder, TrustFile

KEY = SigningKey.generate()
SIGNER = KEY.signer()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)
names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=16)
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
ints = st.integers(min_value=0, max_value=2**62)
extra = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "x_" + k), json_values,
                        max_size=2)

times = st.builds(E.EntryTime, utc_ns=ints, clock_source=st.sampled_from(E.CLOCK_SOURCES),
                  clock_synced=st.booleans(), monotonic_ns=ints, boot_id=names,
                  unrecognized_fields=extra)
media = st.builds(
    E.MediaFile, file=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}\.cseg", fullmatch=True),
    container=st.just("mp4"), codecs=st.just({"video": "h264", "audio": "flac"}), size=ints,
    sha256=hex64, plaintext_size=st.none() | ints, plaintext_sha256=st.none() | hex64,
    encryption=st.just({"scheme": "custody-seg/1"}), unrecognized_fields=extra)


@st.composite
def segments(draw) -> E.Segment:
    first = draw(ints)
    return E.Segment(
        recording=draw(ints), span=draw(ints), index=draw(ints), media=draw(media),
        first_capture_utc_ns=first, last_capture_utc_ns=first + draw(ints),
        frame_period_ns=draw(st.integers(1, 10**9)), frames=draw(ints), audio_samples=draw(ints),
        audio_rate=48_000, recovered=draw(st.booleans()), unrecognized_fields=draw(extra))


bodies = st.one_of(
    st.builds(E.Provisioned, unit=names, device_key=hex64, archive_key=hex64,
              dock_keys=st.lists(hex64, max_size=2), unrecognized_fields=extra),
    st.builds(E.Assigned, officer=names, by=names, unrecognized_fields=extra),
    st.builds(E.RecordStart, trigger=names, category=names, officer=names,
              pre_record_seconds=st.floats(0, 120), pre_record_audio=st.booleans(),
              unrecognized_fields=extra),
    segments(),
    st.builds(E.Marker, phase=st.sampled_from(E.MARKER_PHASES), recording=st.none() | ints),
    st.builds(E.Interruption, reason=st.sampled_from(E.INTERRUPTION_REASONS), detected_by=names,
              cut_utc_ns=ints, recording=st.none() | ints),
    st.builds(E.Resume, interruption=ints, recording=ints),
    st.builds(E.VoiceNote, interruption=ints, media=media, first_capture_utc_ns=ints,
              audio_samples=ints, audio_rate=st.just(48_000), speech_seconds=st.floats(0, 60)),
    st.builds(E.Exemption, reason=st.sampled_from(E.EXEMPTION_REASONS), note=names,
              voice_memo=st.none() | media),
    st.builds(E.RecordStop, recording=ints, trigger=names),
    st.builds(E.TimeSync, old_utc_ns=ints, new_utc_ns=ints,
              source=st.sampled_from(E.CLOCK_SOURCES)),
    st.builds(E.ConsoleAction, technician=names, command=names, result=names),
    st.builds(E.KeyRotated, new_key=hex64, new_public=hex64),
    st.builds(E.Overdue, recording=ints, started_utc_ns=ints, hours=st.floats(0, 48)),
)


@st.composite
def entries(draw) -> E.Entry:
    if draw(st.integers(0, 9)) == 0:  # a kind from the future
        body: E.Body = E.UnknownBody(unrecognized_fields=draw(st.dictionaries(
            st.text(max_size=8), json_values, max_size=3)))
        kind = "future_" + draw(st.text("abc", min_size=1, max_size=5))
    else:
        body = draw(bodies)
        kind = body.KIND
    return E.Entry(device=draw(names), seq=draw(ints), prev=draw(hex64), time=draw(times),
                   body=body, kind=kind, unrecognized_fields=draw(extra))


@given(entries())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_every_valid_entry_round_trips_byte_exactly(entry: E.Entry):
    signed = sign_entry(entry, SIGNER)
    line = signed.to_line()
    again = parse_line(line)
    assert again.entry == entry
    assert again.payload == signed.payload
    assert again.to_line() == line
    assert encode_json(again.entry.to_dict()) == signed.payload


@given(st.binary(max_size=400))
def test_parsing_arbitrary_bytes_raises_only_protocol_error(data: bytes):
    with contextlib.suppress(ProtocolError):
        parse_line(data)


@given(json_values)
def test_parsing_arbitrary_json_raises_only_protocol_error(value):
    line = json.dumps({"payload": base64.b64encode(json.dumps(value).encode()).decode(),
                       "payloadType": "application/vnd.custody.entry+json",
                       "signatures": []}).encode()
    for data in (json.dumps(value).encode(), line):
        with contextlib.suppress(ProtocolError):
            parse_line(data)


@given(entries(), st.data())
@settings(max_examples=200)
def test_mutated_entries_raise_only_protocol_error(entry: E.Entry, data):
    doc = entry.to_dict()
    target = doc
    path = data.draw(st.lists(st.sampled_from(["body", "time", "media"]), max_size=2))
    for key in path:
        if isinstance(target.get(key), dict):
            target = target[key]
    if target:
        victim = data.draw(st.sampled_from(sorted(target)))
        target[victim] = data.draw(json_values)
    with contextlib.suppress(ProtocolError):
        E.Entry.from_dict(doc)


@given(json_values)
def test_trust_and_receipts_raise_only_protocol_error(value):
    with contextlib.suppress(ProtocolError):
        TrustFile.from_bytes(json.dumps(value).encode())
    trust = TrustFile(unit="u", archive_encryption_key="", archive=Holder(keys=[]), keys={},
                      docks={}, devices={})
    with contextlib.suppress(ProtocolError):
        open_receipt(value, trust)


def test_a_media_file_name_cannot_leave_the_media_folder():
    good = {"file": "a.cseg", "container": "mp4", "codecs": {}, "size": 1, "sha256": "0" * 64,
            "plaintext_size": None, "plaintext_sha256": None, "encryption": {}}
    E.MediaFile.from_dict(good)
    for bad in ("../ledger.jsonl", "/etc/passwd", "a/b", "..", ".hidden", ""):
        try:
            E.MediaFile.from_dict({**good, "file": bad})
        except ProtocolError as e:
            assert "plain file name" in str(e)
        else:
            raise AssertionError(f"{bad!r} accepted")
