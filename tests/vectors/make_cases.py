"""Write the conformance suite, tests/vectors/cases/ (README.md says how to use it).

    .venv/bin/python tests/vectors/make_cases.py

Every byte is reproducible: keys and segment ephemeral keys are derived from
fixed seeds, Ed25519 signatures are deterministic, and each store has its own
scripted clock. Run it again and ``git diff`` shows nothing unless a case changed.

Each case is a function below that builds a small store (or archive) with
protocol/ alone and states, by hand, what a verifier must find. The
expectations are written here, not computed by our verifier: they are the
specification the suite tests, ours included.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol.entries import (
    GENESIS_PREV,
    Assigned,
    Body,
    Entry,
    EntryTime,
    Exemption,
    Interruption,
    KeyRotated,
    Marker,
    MediaFile,
    OffloadReceiptEntry,
    Provisioned,
    RecordStart,
    RecordStop,
    Resume,
    Segment,
    TimeSync,
    UnknownBody,
    VoiceNote,
)
from protocol.envelope import (
    ENTRY_PAYLOAD_TYPE,
    SignedEntry,
    encode_json,
    sign_entry,
    sign_payload,
)
from protocol.keys import ArchiveSecretKey, SigningKey
from protocol.receipt import RECEIPT_PAYLOAD_TYPE, ArchivedMedia, OffloadReceipt, sign_receipt
from protocol.segment_crypto import SegmentEncryptor
from protocol.time_statement import TimeStatement, sign_time_statement
from protocol.trust import Holder, TrustedKey, TrustFile

HERE = Path(__file__).parent
CASES = HERE / "cases"
S = 1_000_000_000
PERIOD = 100_000_000  # 10 frames per second
STEP = 50_000_000  # between two entries
T0 = 1_767_254_400_000_000_000  # 2026-01-01T08:00:00Z
UNIT = "vector-unit"


def _seed(name: str) -> bytes:
    return hashlib.sha256(b"custody conformance vectors: " + name.encode()).digest()


def signing_key(name: str) -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(_seed(name)))


ARCHIVE = ArchiveSecretKey(X25519PrivateKey.from_private_bytes(_seed("archive")))
DOCK = signing_key("dock DOCK-01")
INTRUDER = signing_key("intruder")
KEYS = {"DEV-A": signing_key("device DEV-A"), "DEV-A2": signing_key("device DEV-A rotated"),
        "DEV-B": signing_key("device DEV-B")}


def make_trust() -> TrustFile:
    def entry(k: SigningKey) -> tuple[str, TrustedKey]:
        return k.keyid, TrustedKey(keytype="ed25519", public=k.public_hex)

    archive_sign = signing_key("archive signing")
    keys = dict(entry(k) for k in (*KEYS.values(), DOCK, archive_sign))
    keys[ARCHIVE.fingerprint] = TrustedKey(keytype="x25519", public=ARCHIVE.public_raw.hex())
    return TrustFile(unit=UNIT, archive_encryption_key=ARCHIVE.fingerprint,
                     archive=Holder(keys=[archive_sign.keyid]), keys=keys,
                     docks={"DOCK-01": Holder(keys=[DOCK.keyid])},
                     devices={"DEV-A": Holder(keys=[KEYS["DEV-A"].keyid, KEYS["DEV-A2"].keyid]),
                              "DEV-B": Holder(keys=[KEYS["DEV-B"].keyid])})


TRUST = make_trust()


class Store:
    """A device store being written, with a scripted clock."""

    def __init__(self, root: Path, device: str = "DEV-A", boot: str = "boot-1",
                 utc: int = T0):
        self.root, self.device = root, device
        self.key = KEYS[device]
        self.utc, self.mono, self.boot, self.source = utc, 7 * S, boot, "rtc"
        self.skew = 0  # added to the next entry's wall-clock reading only (read jitter)
        self.entries: list[SignedEntry] = []
        self.lines: list[bytes] = []
        # A span's captures are on the monotonic clock plus the wall clock's
        # offset when the span began, as a recorder stamps them.
        self.capture_end: dict[int, int] = {}  # recording -> last capture, monotonic
        self.span_offset: dict[int, int] = {}  # recording -> its current span's offset
        (root / "media").mkdir(parents=True)
        self.append(Provisioned(unit=UNIT, device_key=self.key.keyid,
                                archive_key=ARCHIVE.fingerprint, dock_keys=[DOCK.keyid]))
        self.append(Assigned(officer="PC-0042", by="TECH-01"))

    def wait(self, ns: int) -> None:
        """Real time passes: both clocks advance."""
        self.utc += ns
        self.mono += ns

    def entry(self, body: Body, kind: str = "") -> Entry:
        self.wait(STEP)
        prev = self.entries[-1].digest if self.entries else GENESIS_PREV
        t = EntryTime(utc_ns=self.utc + self.skew, clock_source=self.source,
                      clock_synced=True, monotonic_ns=self.mono, boot_id=self.boot)
        self.skew = 0
        return Entry(device=self.device, seq=len(self.entries), prev=prev, time=t, body=body,
                     kind=kind)

    def append(self, body: Body, key: SigningKey | None = None, kind: str = "") -> SignedEntry:
        signed = sign_entry(self.entry(body, kind), (key or self.key).signer())
        self.entries.append(signed)
        self.lines.append(signed.to_line())
        return signed

    def seal(self, name: str, plaintext: bytes | None = None,
             ephemeral_seed: str | None = None) -> MediaFile:
        plaintext = plaintext if plaintext is not None else (name.encode() + b" ") * 40
        ephemeral = X25519PrivateKey.from_private_bytes(_seed(ephemeral_seed or
                                                             f"{self.root.name}/{name}"))
        enc = SegmentEncryptor(ARCHIVE.public_raw, _ephemeral=ephemeral)
        data = enc.header + enc.seal(plaintext, final=True)
        (self.root / "media" / name).write_bytes(data)
        return MediaFile(file=name, container="mp4", codecs={"video": "h264", "audio": "flac"},
                         size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         plaintext_size=len(plaintext),
                         plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
                         encryption={"scheme": "custody-seg/1",
                                     "recipient": ARCHIVE.fingerprint})

    def start(self) -> int:
        seq = self.append(RecordStart(trigger="button", category="scene", officer="PC-0042",
                                      pre_record_seconds=0)).entry.seq
        self.capture_end[seq] = self.mono
        self.span_offset[seq] = self.utc - self.mono
        return seq

    def resume(self, rec: int, interruption: int) -> None:
        self.append(Resume(interruption=interruption, recording=rec))
        self.span_offset[rec] = self.utc - self.mono

    def captured(self, rec: int) -> int:
        """The wall-clock time of ``rec``'s last capture, as its span stamps it."""
        return self.capture_end[rec] + self.span_offset[rec]

    def segment(self, rec: int, index: int, frames: int = 10, after_ns: int = PERIOD,
                span: int = 0, media: MediaFile | None = None, **changes: Any) -> SignedEntry:
        """The next segment of ``rec``: its first frame ``after_ns`` after the last one's."""
        first = self.capture_end[rec] + after_ns
        last = first + (frames - 1) * PERIOD
        self.capture_end[rec] = last
        self.wait(max(0, last - self.mono))  # capture happens before its entry is signed
        offset = self.span_offset[rec]
        body = Segment(recording=rec, span=span, index=index,
                       media=media or self.seal(f"r{rec:04d}-{index:03d}.cseg"),
                       first_capture_utc_ns=first + offset, last_capture_utc_ns=last + offset,
                       frame_period_ns=PERIOD, frames=frames, audio_samples=frames * 4800,
                       audio_rate=48_000)
        return self.append(dataclasses.replace(body, **changes))

    def recording(self, segments: int = 2, stop: bool = True) -> int:
        rec = self.start()
        self.append(Marker(phase="site", recording=rec))
        for i in range(segments):
            self.segment(rec, i)
        if stop:
            self.append(RecordStop(recording=rec, trigger="button"))
        return rec

    def interruption(self, rec: int, reason: str = "battery") -> int:
        return self.append(Interruption(reason=reason, detected_by="battery_gauge",
                                        cut_utc_ns=self.captured(rec), recording=rec)).entry.seq

    def voice_note(self, interruption: int, speech: float = 3.0) -> SignedEntry:
        return self.append(VoiceNote(interruption=interruption,
                                     media=self.seal(f"vn-{interruption:04d}.cseg"),
                                     first_capture_utc_ns=self.utc - 4 * S,
                                     audio_samples=48_000 * 4, audio_rate=48_000,
                                     speech_seconds=speech))

    def receipt(self, last_seq: int | None = None, media: list[ArchivedMedia] | None = None,
                key: SigningKey = DOCK, head: str | None = None) -> dict:
        last = self.entries[-1 if last_seq is None else last_seq]
        if media is None:
            media = [ArchivedMedia(file=m.file, sha256=m.sha256)
                     for e in self.entries[:last.entry.seq + 1] for m in e.entry.media()]
        return sign_receipt(OffloadReceipt(dock="DOCK-01", device=self.device, first_seq=0,
                                           last_seq=last.entry.seq, head=head or last.digest,
                                           media=media, archived_utc_ns=self.utc), key.signer())

    def keep_receipt(self, receipt: dict) -> None:
        r = json.loads(base64.b64decode(receipt["payload"]))
        folder = self.root / "receipts"
        folder.mkdir(exist_ok=True)
        name = f"{r['dock']}-{r['first_seq']}-{r['last_seq']}.json"
        (folder / name).write_bytes(encode_json(receipt) + b"\n")

    def save(self, tail: bytes = b"") -> None:
        (self.root / "ledger.jsonl").write_bytes(b"".join(self.lines) + tail)


def resigned_line(entry: Entry, key: SigningKey, payload: bytes | None = None) -> bytes:
    """A ledger line for ``entry`` (or for raw ``payload`` bytes), signed by ``key``."""
    data = payload if payload is not None else encode_json(entry.to_dict())
    return encode_json(sign_payload(data, ENTRY_PAYLOAD_TYPE, [key.signer()]).to_dict()) + b"\n"


# --- the cases -------------------------------------------------------------------------

Expect = dict[str, Any]
CASE_BUILDERS: dict[str, tuple[str, Callable[[Path], Expect]]] = {}


def case(description: str):
    def register(fn: Callable[[Path], Expect]) -> Callable[[Path], Expect]:
        CASE_BUILDERS[fn.__name__] = (description, fn)
        return fn

    return register


def F(kind: str, seq: int | None = None, store: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "seq": seq, **({"store": store} if store else {})}


def intact(*findings: dict) -> Expect:
    return {"verdict": "intact", "exit_code": 0, "findings": list(findings)}


def broken(*findings: dict) -> Expect:
    return {"verdict": "broken", "exit_code": 1, "findings": list(findings)}


def unexplained(*findings: dict) -> Expect:
    return {"verdict": "intact_unexplained_gaps", "exit_code": 3, "findings": list(findings)}


# intact stores

@case("a provisioned, assigned device with one recording of three segments")
def intact_recording(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(3)
    s.save()
    return intact()


@case("two recordings; the report gives the time between them")
def intact_two_recordings(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.wait(30 * S)
    s.recording(1)
    s.save()
    return {**intact(), "between_recordings": [{"after": 2, "before": 6, "seconds": 30.05}]}


@case("the device key rotates (key_rotated, signed by the old key); both keys listed")
def intact_key_rotation(d: Path) -> Expect:
    s = Store(d / "store")
    new = KEYS["DEV-A2"]
    s.append(KeyRotated(new_key=new.keyid, new_public=new.public_hex))
    s.key = new
    s.recording(1)
    s.save()
    return intact()


@case("an exemption and markers of every phase")
def intact_exemption_markers(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    for phase in ("site", "id_shown_rights_told", "scene", "questioning", "signing",
                  "document_left", "other"):
        s.append(Marker(phase=phase, recording=rec))
    s.segment(rec, 0)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.append(Exemption(reason="privacy", note="a minor present",
                       voice_memo=s.seal("memo-0001.cseg")))
    s.save()
    return intact()


@case("an offload_receipt entry records a valid dock receipt of the entries before it")
def intact_embedded_receipt(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.append(OffloadReceiptEntry(receipt=s.receipt()))
    s.save()
    return intact()


@case("a receipt kept in receipts/ covering the whole ledger")
def intact_kept_receipt(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    s.keep_receipt(s.receipt())
    s.save()
    return intact()


@case("media freed on the device against a receipt naming the same SHA-256: offloaded")
def offloaded_against_receipt(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    s.keep_receipt(s.receipt())
    (d / "store" / "media" / "r0002-000.cseg").unlink()
    s.save()
    return intact(F("offloaded", 4))


@case("an interruption explained by a voice note with speech, then resumed")
def interruption_explained(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    cut = s.interruption(rec)
    s.wait(5 * S)
    s.voice_note(cut)
    s.resume(rec, cut)
    s.segment(rec, 1, after_ns=6 * S, span=1)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**intact(), "gaps": [{"recording": rec, "seconds": 5.9}]}


@case("a declared clock step (time_sync) back by 10 s between two recordings")
def time_sync_declared(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    old = s.utc
    s.utc -= 10 * S
    s.append(TimeSync(old_utc_ns=old, new_utc_ns=s.utc, source="ntp"))
    s.recording(1)
    s.save()
    return {**intact(), "time_syncs": 1}


@case("a time_sync whose dock-signed time statement verifies against the trust file")
def time_statement_valid(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    old, offset = s.utc + STEP, 3 * S
    statement = TimeStatement(dock="DOCK-01", device="DEV-A", dock_time_ns=old + offset,
                              device_time_ns=old, offset_ns=offset)
    s.utc += offset
    s.append(TimeSync(old_utc_ns=old, new_utc_ns=old + offset, source="dock",
                      statement=sign_time_statement(statement, DOCK.signer())))
    s.save()
    return {**intact(), "time_syncs": 1}


@case("the boot id changes between recordings (the device was off): nothing to declare")
def boot_between_recordings(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.boot, s.mono = "boot-2", 3 * S
    s.wait(3600 * S)
    s.recording(1)
    s.save()
    return {**intact(), "boots": [{"seq": 0, "boot_id": "boot-1"},
                                  {"seq": 6, "boot_id": "boot-2"}],
            "between_recordings": [{"after": 2, "before": 6, "seconds": 3600.05}]}


@case("a power cut mid-recording: the next boot seals the cut segment (recovered) and "
      "declares the interruption; a voice note explains it")
def boot_declared_by_interruption(d: Path) -> Expect:
    return _entered_at_boot_then_declared(d, recovered=True)


def _entered_at_boot_then_declared(d: Path, recovered: bool) -> Expect:
    """A power cut mid-recording; the next boot enters the last segment (its capture
    all before this boot's first entry: it is that entry), then declares the cut."""
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    s.boot, s.mono = "boot-2", 3 * S
    s.wait(20 * S)
    s.segment(rec, 1, recovered=recovered)
    cut = s.append(Interruption(reason="power_loss", detected_by="boot_recovery",
                                cut_utc_ns=s.captured(rec), recording=rec)).entry.seq
    s.voice_note(cut)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return intact()


@case("validly signed values outside the listed sets (a new marker phase, interruption "
      "reason and clock source) are kept and reported as info")
def unknown_values(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.append(Marker(phase="arrest", recording=rec))
    s.segment(rec, 0)
    cut = s.interruption(rec, reason="tampering_alarm")
    s.voice_note(cut)
    s.source = "galileo"
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**intact(F("unknown_value", 3), F("unknown_value", 5), F("unknown_value", 7)),
            "clock_sources": [{"seq": 0, "to": "rtc"}, {"seq": 7, "to": "galileo"}]}


@case("an entry kind this verifier does not know: kept, reported as info")
def unknown_kind(d: Path) -> Expect:
    s = Store(d / "store")
    s.append(UnknownBody(unrecognized_fields={"note": "from a later format"}),
             kind="weather_report")
    s.recording(1)
    s.save()
    return intact(F("unknown_kind", 2))


@case("the ledger ends in an open recording (no stop, no interruption): a warning")
def open_recording_at_end(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.recording(2, stop=False)
    s.save()
    return intact(F("open_recording", rec))


@case("the last line is torn (no newline, half an entry): a warning, its bytes kept")
def torn_last_line(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    extra = s.append(Marker(phase="other")).to_line()
    s.lines.pop()
    s.save(tail=extra[:len(extra) // 2])
    return intact(F("torn_write"))


@case("the last line is a whole entry without its newline: read, and a warning")
def torn_whole_entry(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    last = s.append(Marker(phase="other"))
    s.lines[-1] = last.to_line().rstrip(b"\n")
    s.save()
    return intact(F("torn_write", last.entry.seq))


@case("a ledger.torn-* file the device moved aside after a power cut is reported")
def torn_file_reported(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    (d / "store" / "ledger.torn-1767254500000000000").write_bytes(b'{"payload":"eyJmb3Jt')
    s.save()
    return intact(F("torn_ledger_file"))


@case("a file in media/ that no entry seals: a warning")
def unsealed_media_file(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.seal("stray.cseg")
    s.save()
    return intact(F("unsealed_media"))


# unexplained

@case("an interruption without a voice note")
def interruption_unexplained(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    cut = s.interruption(rec)
    s.resume(rec, cut)
    s.segment(rec, 1, after_ns=4 * S, span=1)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return unexplained(F("unexplained_interruption", cut))


@case("a voice note with no speech explains nothing")
def silent_voice_note(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    cut = s.interruption(rec)
    note = s.voice_note(cut, speech=0.1).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return unexplained(F("silent_voice_note", note), F("unexplained_interruption", cut))


@case("a declared interruption across which the wall clock was stepped back 19 s: the gap "
      "is measured on the monotonic clock (20 s), not the wall clock (1 s)")
def gap_on_monotonic_clock(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    cut = s.interruption(rec)
    s.wait(20 * S)
    old = s.utc
    s.utc -= 19 * S
    s.append(TimeSync(old_utc_ns=old, new_utc_ns=s.utc, source="ntp"))
    s.resume(rec, cut)
    # The next frame is captured 20.1 s (monotonic) after the last one: 1.1 s on the wall clock.
    s.segment(rec, 1, after_ns=20 * S + PERIOD, span=1)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**unexplained(F("unexplained_interruption", cut)),
            "gaps": [{"recording": rec, "seconds": 20.0}], "time_syncs": 1}


@case("audio-only segments (camera down: 0 frames, the audio block period of 20.833 us) "
      "whose entries' two clock readings jitter by milliseconds: no gap")
def audio_only_with_clock_jitter(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    block = 20_833
    for i, skew in ((1, 3_000_000), (2, -4_000_000), (3, 7_000_000)):
        first = s.capture_end[rec] + (PERIOD if i == 1 else block)
        last = first + 47_999 * block
        s.capture_end[rec] = last
        s.wait(max(0, last - s.mono))
        s.skew = skew
        offset = s.span_offset[rec]
        s.append(Segment(recording=rec, span=0, index=i, media=s.seal(f"a{i}.cseg"),
                         first_capture_utc_ns=first + offset,
                         last_capture_utc_ns=last + offset,
                         frame_period_ns=block, frames=0, audio_samples=48_000,
                         audio_rate=48_000))
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**intact(), "gaps": []}


# broken: the chain and signatures

@case("one entry's payload edited (its signature no longer verifies)")
def edited_entry(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    env = json.loads(s.lines[3])
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["body"]["phase"] = "scene"
    env["payload"] = base64.b64encode(encode_json(payload)).decode()
    s.lines[3] = encode_json(env) + b"\n"
    s.save()
    return broken(F("bad_signature", 3), F("prev_mismatch", 4))


@case("an entry deleted from the middle")
def deleted_entry(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    del s.lines[4]
    s.save()
    return broken(F("missing_entries", 5), F("unsealed_media"))


@case("an entry appears twice")
def replayed_entry(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.lines.insert(4, s.lines[3])
    s.save()
    return broken(F("replayed_entry", 3))


@case("an entry of another device spliced in")
def foreign_entry(d: Path) -> Expect:
    other = Store(d / "other-device", device="DEV-B")
    other.recording(1)
    s = Store(d / "store")
    s.recording(1)
    s.lines.insert(3, other.lines[3])
    s.save()
    shutil.rmtree(d / "other-device")
    return broken(F("foreign_entry", 3))


@case("the whole chain re-signed with a key the trust file does not list")
def chain_resigned(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.lines = [resigned_line(e.entry, INTRUDER) for e in s.entries]
    s.save()
    return broken(*(F("untrusted_signature", i) for i in range(len(s.lines))),
                  F("unsealed_media"))


@case("a forged chain with its own trust.json inside the store: that file is never used")
def trust_file_inside_store(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.lines = [resigned_line(e.entry, INTRUDER) for e in s.entries]
    rogue = make_trust()
    rogue.keys[INTRUDER.keyid] = TrustedKey(keytype="ed25519", public=INTRUDER.public_hex)
    rogue.devices["DEV-A"] = Holder(keys=[INTRUDER.keyid])
    (d / "store" / "trust.json").write_bytes(rogue.to_bytes())
    s.save()
    return broken(F("ignored_trust_file"), F("unsealed_media"),
                  *(F("untrusted_signature", i) for i in range(len(s.lines))))


@case("a payload with a key twice, validly signed: two parsers would read two entries")
def duplicate_key_in_payload(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    e = s.entries[3].entry
    payload = encode_json(e.to_dict())
    payload = payload.replace(b'"phase":"site"', b'"phase":"site","phase":"scene"')
    s.lines[3] = resigned_line(e, s.key, payload)
    s.save()
    return broken(F("duplicate_key"))


@case("a line of bytes that are not UTF-8")
def non_utf8_line(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.lines.insert(3, b"\xff\xfe{\"payload\":\x80}\n")
    s.save()
    return broken(F("malformed_entry"), F("seq_out_of_order", 3))


@case("a validly signed entry with an integer beyond 64 bits")
def huge_integer(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    e = s.entries[-1].entry
    payload = encode_json(e.to_dict()).replace(f'"utc_ns":{e.time.utc_ns}'.encode(),
                                               b'"utc_ns":' + b"9" * 400)
    s.lines[-1] = resigned_line(e, s.key, payload)
    s.save()
    return broken(F("malformed_entry"), F("open_recording", 2))


@case("a validly signed entry nested 5000 levels deep")
def deep_nesting(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    e = s.entries[-1].entry
    payload = encode_json(e.to_dict())[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    s.lines[-1] = resigned_line(e, s.key, payload)
    s.save()
    return broken(F("malformed_entry"), F("open_recording", 2))


# broken: time

@case("the wall clock goes back 10 s within one boot, no time_sync declaring it")
def clock_rollback(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.utc -= 10 * S
    last = s.append(Marker(phase="other")).entry.seq
    s.save()
    return broken(F("clock_rollback", last))


@case("the monotonic clock goes back within one boot")
def monotonic_rollback(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.mono -= 10 * S
    last = s.append(Marker(phase="other")).entry.seq
    s.save()
    return broken(F("monotonic_rollback", last))


@case("the boot id changes in an open recording and capture goes on, no interruption")
def undeclared_boot(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    s.boot, s.mono = "boot-2", 3 * S
    s.append(Marker(phase="site", recording=rec))  # the new boot's first entry...
    seg = s.segment(rec, 1).entry.seq  # ...and capture after it goes on
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("undeclared_boot", seg))


@case("a power cut after a segment was sealed whole but before its entry: the next boot "
      "enters it (not recovered: it is whole), then declares the cut")
def sealed_whole_before_the_cut(d: Path) -> Expect:
    return _entered_at_boot_then_declared(d, recovered=False)


@case("a segment whose last capture is after its own entry was signed")
def capture_after_signing(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    e = s.segment(rec, 0)
    s.entries.pop()
    s.lines.pop()
    last = e.entry.time.utc_ns + 5 * S  # its sound as long as its time: one finding only
    samples = (last - e.entry.body.first_capture_utc_ns + PERIOD) * 48_000 // S
    body = dataclasses.replace(e.entry.body, last_capture_utc_ns=last, audio_samples=samples)
    seq = s.append(body).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("capture_after_signing", seq))


@case("a time statement signed by a key no dock holds")
def time_statement_forged(d: Path) -> Expect:
    s = Store(d / "store")
    old, offset = s.utc + STEP, -2 * S
    statement = TimeStatement(dock="DOCK-01", device="DEV-A", dock_time_ns=old + offset,
                              device_time_ns=old, offset_ns=offset)
    s.utc += offset
    seq = s.append(TimeSync(old_utc_ns=old, new_utc_ns=old + offset, source="dock",
                            statement=sign_time_statement(statement,
                                                          INTRUDER.signer()))).entry.seq
    s.recording(1)
    s.save()
    return {**broken(F("bad_time_statement", seq)), "time_syncs": 1}


@case("a time statement whose offset is not the step the time_sync makes")
def time_statement_wrong_step(d: Path) -> Expect:
    s = Store(d / "store")
    old, offset = s.utc + STEP, 2 * S
    statement = TimeStatement(dock="DOCK-01", device="DEV-A", dock_time_ns=old + offset,
                              device_time_ns=old, offset_ns=offset)
    s.utc += 60 * S
    seq = s.append(TimeSync(old_utc_ns=old, new_utc_ns=old + 60 * S, source="dock",
                            statement=sign_time_statement(statement, DOCK.signer()))).entry.seq
    s.save()
    return {**broken(F("bad_time_statement", seq)), "time_syncs": 1}


# broken: recordings

@case("a gap between segments that no interruption declares")
def undeclared_gap(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    seq = s.segment(rec, 1, after_ns=3 * S).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**broken(F("undeclared_gap", seq)), "gaps": [{"recording": rec, "seconds": 2.9}]}


@case("a segment holding 0.6 s less audio than its time (a hole in its sound) that no "
      "interruption declares")
def undeclared_audio_gap(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    seq = s.segment(rec, 1, audio_samples=10 * 4800 - 6 * 4800).entry.seq
    s.segment(rec, 2)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("undeclared_audio_gap", seq))


@case("a microphone silent for three segments, declared once (mic_fault) after the first "
      "of them: the silence stays declared until a segment holds its sound in full")
def declared_audio_gap(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    s.segment(rec, 1, audio_samples=4 * 4800)
    cut = s.append(Interruption(reason="mic_fault", detected_by="mic_watchdog",
                                cut_utc_ns=s.captured(rec) - 5 * PERIOD,
                                recording=rec)).entry.seq
    s.resume(rec, cut)
    s.segment(rec, 2, audio_samples=0)
    s.segment(rec, 3, audio_samples=3 * 4800)
    s.segment(rec, 4)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return unexplained(F("unexplained_interruption", cut))


@case("the wall clock stepped back 19 s, undeclared, during a 20 s interruption: no "
      "rollback between entries shows, but the monotonic clock measures the hole")
def undeclared_step_hides_no_gap(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    cut = s.interruption(rec)
    s.wait(20 * S)
    s.utc -= 19 * S
    s.resume(rec, cut)
    s.segment(rec, 1, after_ns=20 * S + PERIOD, span=1)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**unexplained(F("unexplained_interruption", cut)),
            "gaps": [{"recording": rec, "seconds": 20.0}]}


@case("the wall clock is stepped back 30 s in the middle of a span (declared): the span's "
      "captures stay on the clock the span began with, so no gap and no capture after "
      "signing")
def clock_step_within_a_span(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    old = s.utc + STEP
    s.utc -= 30 * S
    s.append(TimeSync(old_utc_ns=old, new_utc_ns=s.utc, source="ntp"))
    s.segment(rec, 1)
    s.segment(rec, 2)
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return {**intact(), "gaps": [], "time_syncs": 1}


@case("a segment that starts before the previous one ends")
def overlapping_segments(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0)
    seq = s.segment(rec, 1, after_ns=-5 * PERIOD).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("overlap", seq))


# broken: media

@case("one byte of a sealed segment changed")
def media_byte_changed(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    f = d / "store" / "media" / "r0002-001.cseg"
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(data)
    s.save()
    return broken(F("media_hash", 5))


@case("a sealed segment cut short")
def media_truncated(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    f = d / "store" / "media" / "r0002-000.cseg"
    f.write_bytes(f.read_bytes()[:-10])
    s.save()
    return broken(F("media_truncated", 4))


@case("a sealed segment deleted, no receipt")
def media_deleted(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    (d / "store" / "media" / "r0002-001.cseg").unlink()
    s.save()
    return broken(F("media_missing", 5))


@case("media freed against a receipt that names other bytes for the file")
def offloaded_wrong_hash(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.keep_receipt(s.receipt(media=[ArchivedMedia(file="r0002-000.cseg", sha256="0" * 64)]))
    (d / "store" / "media" / "r0002-000.cseg").unlink()
    s.save()
    return broken(F("media_missing", 4))


@case("media freed against a receipt that ends before the entry that sealed it")
def offloaded_receipt_too_early(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    m = s.entries[4].entry.body.media
    s.keep_receipt(s.receipt(last_seq=3, media=[ArchivedMedia(file=m.file, sha256=m.sha256)]))
    (d / "store" / "media" / m.file).unlink()
    s.save()
    return broken(F("media_missing", 4))


@case("a second segment entry sealing the same media file: footage replayed")
def replayed_media_same_file(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    first = s.segment(rec, 0)
    seq = s.segment(rec, 1, media=first.entry.body.media).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("replayed_media", seq))


@case("the same sealed bytes stored again under a new name and sealed by a new entry")
def replayed_media_copied(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    first = s.segment(rec, 0)
    m = first.entry.body.media
    copy = d / "store" / "media" / "r0002-001.cseg"
    copy.write_bytes((d / "store" / "media" / m.file).read_bytes())
    seq = s.segment(rec, 1, media=dataclasses.replace(m, file=copy.name)).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("replayed_media", seq))


@case("two segments with the same header (ephemeral key): one segment sealed twice")
def replayed_media_same_header(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    s.segment(rec, 0, media=s.seal("r0002-000.cseg", ephemeral_seed="shared"))
    seq = s.segment(rec, 1, media=s.seal("r0002-001.cseg", b"other bytes",
                                         ephemeral_seed="shared")).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.save()
    return broken(F("replayed_media", seq))


@case("a second entry sealing the same file, both freed against a receipt: the ledger "
      "alone shows the replay")
def replayed_media_after_offload(d: Path) -> Expect:
    s = Store(d / "store")
    rec = s.start()
    first = s.segment(rec, 0)
    seq = s.segment(rec, 1, media=first.entry.body.media).entry.seq
    s.append(RecordStop(recording=rec, trigger="button"))
    s.keep_receipt(s.receipt())
    (d / "store" / "media" / first.entry.body.media.file).unlink()
    s.save()
    return broken(F("replayed_media", seq), F("offloaded", seq - 1), F("offloaded", seq))


@case("a media file that is a symbolic link out of the store: never read")
def media_file_is_a_link(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    f = d / "store" / "media" / "r0002-000.cseg"
    f.unlink()
    os.symlink("/etc/hostname", f)
    s.save()
    return broken(F("not_a_regular_file"), F("media_missing", 4))


@case("media/ is a symbolic link to /etc: never followed, nothing in it is listed")
def media_folder_is_a_link(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    shutil.rmtree(d / "store" / "media")
    os.symlink("/etc", d / "store" / "media")
    s.save()
    return broken(F("not_a_directory"), F("media_missing", 4))


# receipts

@case("the ledger's tail cut off after a receipt named its later entries")
def tail_cut(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(2)
    s.keep_receipt(s.receipt())
    s.lines = s.lines[:-2]
    s.save()
    return broken(F("tail_cut", 4), F("open_recording", 2), F("unsealed_media"))


@case("a receipt signed by a key no dock holds")
def forged_receipt(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    s.keep_receipt(s.receipt(key=INTRUDER))
    s.save()
    return broken(F("bad_receipt"))


@case("a receipt file of bytes that are not UTF-8 JSON")
def receipt_not_json(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    (d / "store" / "receipts").mkdir()
    (d / "store" / "receipts" / "DOCK-01-0-5.json").write_bytes(b"\xff\xfe\x00garbage")
    s.save()
    return broken(F("bad_receipt"))


@case("an offload_receipt entry whose receipt does not end before its own entry")
def embedded_receipt_from_the_future(d: Path) -> Expect:
    s = Store(d / "store")
    s.recording(1)
    seq = len(s.entries)
    # A dock-signed receipt naming an entry after the one that records it.
    payload = json.loads(base64.b64decode(s.receipt()["payload"]))
    payload["last_seq"], payload["head"] = seq + 3, "ab" * 32
    future = sign_payload(encode_json(payload), RECEIPT_PAYLOAD_TYPE, [DOCK.signer()]).to_dict()
    s.append(OffloadReceiptEntry(receipt=future))
    s.save()
    return broken(F("receipt_mismatch", seq))


# archives

def archive_of(d: Path, *stores: tuple[str, str]) -> dict[str, Store]:
    """``archive/devices/<folder>/`` for each (folder, device); trust.json at its root."""
    out = {}
    for folder, device in stores:
        s = Store(d / "archive" / "devices" / folder, device=device,
                  boot=f"boot-{folder}")
        s.recording(1)
        out[folder] = s
    (d / "archive" / "trust.json").write_bytes(TRUST.to_bytes())
    return out


@case("an archive of two intact devices")
def archive_intact(d: Path) -> Expect:
    for s in archive_of(d, ("DEV-A", "DEV-A"), ("DEV-B", "DEV-B")).values():
        s.save()
    return {**intact(), "path": "archive"}


@case("an archive with one broken and one unexplained store: the worst verdict wins (1)")
def archive_worst_verdict(d: Path) -> Expect:
    stores = archive_of(d, ("DEV-A", "DEV-A"), ("DEV-B", "DEV-B"))
    a, b = stores["DEV-A"], stores["DEV-B"]
    cut = b.interruption(2)
    a.save()
    b.save()
    f = d / "archive" / "devices" / "DEV-A" / "media" / "r0002-000.cseg"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    return {**broken(F("media_hash", 4, "DEV-A"), F("unexplained_interruption", cut, "DEV-B")),
            "path": "archive"}


@case("a store whose folder is not named by its device id")
def archive_store_misnamed(d: Path) -> Expect:
    for s in archive_of(d, ("DEV-A", "DEV-A"), ("DEV-C", "DEV-B")).values():
        s.save()
    return {**broken(F("store_name_mismatch", None, "DEV-C")), "path": "archive"}


@case("a devices/<id>/ folder without a ledger, and a ledger at the archive's root")
def archive_missing_and_stray_ledger(d: Path) -> Expect:
    stores = archive_of(d, ("DEV-A", "DEV-A"), ("DEV-B", "DEV-B"))
    stores["DEV-A"].save()
    (d / "archive" / "ledger.jsonl").write_bytes(b"".join(stores["DEV-B"].lines))
    return {**broken(F("stray_ledger"), F("ledger_missing")), "path": "archive"}


@case("two stores hold diverging ledgers of one device")
def archive_diverging_ledgers(d: Path) -> Expect:
    stores = archive_of(d, ("DEV-A", "DEV-A"), ("DEV-A-copy", "DEV-A"))
    a, copy = stores["DEV-A"], stores["DEV-A-copy"]
    a.save()
    copy.save()
    return {**broken(F("duplicate_store"), F("diverging_ledgers", 0),
                     F("store_name_mismatch", None, "DEV-A-copy")), "path": "archive"}


def build(name: str) -> None:
    description, fn = CASE_BUILDERS[name]
    d = CASES / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    expect = fn(d)
    path = expect.pop("path", "store")
    if path == "archive":
        # These archives hold no checkpoints of their devices' logs (docs/archive.md):
        # each store with a ledger is a no_checkpoint warning.
        expect["findings"] += [F("no_checkpoint", None, store.name) for store in
                               sorted((d / "archive" / "devices").iterdir())
                               if (store / "ledger.jsonl").exists()]
    if path == "store":
        (d / "trust.json").write_bytes(TRUST.to_bytes())  # beside the store, as published
    doc = {"description": description, "path": path, **expect}
    (d / "expected.json").write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    shutil.rmtree(CASES, ignore_errors=True)
    for name in CASE_BUILDERS:
        build(name)
    (HERE / "archive-secret.key").write_bytes(ARCHIVE.to_pem())
    print(f"wrote {len(CASE_BUILDERS)} cases in {CASES}")


if __name__ == "__main__":
    main()
