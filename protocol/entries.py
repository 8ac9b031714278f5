"""Ledger entries: the typed model of what a device signs.

An :class:`Entry` is the payload of one DSSE envelope in a device's ledger. It
has a common header (format, device, seq, prev, kind, time) and a *body* whose
class depends on ``kind``. Every class keeps the fields it does not know in
``unrecognized_fields`` and writes them back unchanged, so an older verifier
can read (and re-serialise) a newer ledger without losing anything.

``from_dict`` / ``to_dict`` convert to plain JSON-able dicts; turning those
into bytes and signing them is :mod:`protocol.envelope`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from protocol.errors import ProtocolError

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64
# A voice note explains its interruption only with at least this much speech,
# as measured by the device's voice-activity detector (device/vad.py).
MIN_SPEECH_SECONDS = 0.5


def explains_interruption(speech_seconds: float) -> bool:
    """The one rule (docs/format.md): does a voice note with this much speech explain?

    The device (whether to prompt again), the detector (``has_speech``) and the
    verifier (explained or not) all ask this, of the value the entry records.

    >>> [explains_interruption(s) for s in (0.5, 0.499, float("nan"))]
    [True, False, False]
    """
    return speech_seconds >= MIN_SPEECH_SECONDS


# "technician": typed in at the serial console (never a reference: clock_synced stays false)
CLOCK_SOURCES = ("never_set", "rtc", "dock", "ntp", "gps", "technician")
INTERRUPTION_REASONS = (
    "battery", "storage_full", "camera_fault", "mic_fault", "power_loss", "crash",
    "weather", "location_change", "other",
)
EXEMPTION_REASONS = ("state_secret", "commercial_secret", "privacy", "emergency", "objective")
MARKER_PHASES = (
    "site", "id_shown_rights_told", "scene", "questioning", "signing", "document_left", "other",
)

# Every integer of the format fits a signed 64-bit integer (nanoseconds until
# the year 2262): a reader that holds them as int64 reads the same values, and
# nothing huge reaches arithmetic or float conversion.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A media file name is a plain name inside the store's media/ folder: no
# separators, no "..", so a hostile ledger cannot point a reader elsewhere.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type hint and convert nested records."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, where)
    if isinstance(hint, type) and issubclass(hint, Record):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        return hint.from_dict(value, where)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        return [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ProtocolError(f"{where}: expected an object")
        args = typing.get_args(hint)
        if args:
            return {k: _check(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return value
    if hint is Any:
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"{where}: expected an integer")
        if not INT_MIN <= value <= INT_MAX:
            raise ProtocolError(f"{where}: integer outside the signed 64-bit range")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ProtocolError(f"{where}: expected a number")
        if not math.isfinite(value) or abs(value) > INT_MAX:
            raise ProtocolError(f"{where}: number out of range")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ProtocolError(f"{where}: expected {hint.__name__}")
        return value
    raise TypeError(f"unsupported field type {hint!r}")  # a bug in this module, not input


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class Record:
    """A JSON object with typed known fields and preserved unknown ones."""

    unrecognized_fields: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    # Fields whose values come from a listed set. A value outside it is kept
    # (a newer device may know more phases or reasons) and reported by the
    # verifier as info, not refused: see :meth:`unlisted_values`.
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {}

    def unlisted_values(self) -> list[tuple[str, str]]:
        """(field, value) for each listed field whose value is not in its set."""
        return [(name, getattr(self, name)) for name, allowed in self.LISTED.items()
                if getattr(self, name) not in allowed]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Self:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ProtocolError(f"{where}: expected an object")
        hints = _type_hints(cls)
        known: dict[str, Any] = {}
        for f in _data_fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProtocolError(f"{where}: missing field {f.name!r}")
                continue
            known[f.name] = _check(data[f.name], hints[f.name], f"{where}.{f.name}")
        names = {f.name for f in _data_fields(cls)}
        extra = {k: v for k, v in data.items() if k not in names}
        record = cls(**known, unrecognized_fields=extra)
        record.validate(where)
        return record

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in _data_fields(type(self))}
        out.update(self.unrecognized_fields)
        return out

    def validate(self, where: str) -> None:
        """Value checks beyond types; subclasses add theirs."""


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving the string annotations costs milliseconds per call: once per class.
    return typing.get_type_hints(cls)


def _data_fields(cls: type) -> list[dataclasses.Field]:
    """The fields that are JSON keys (not ``unrecognized_fields`` nor private caches)."""
    return [
        f for f in dataclasses.fields(cls)
        if f.name != "unrecognized_fields" and not f.name.startswith("_")
    ]


def _hex64(value: str | None, where: str) -> None:
    if value is not None and not _HEX64.fullmatch(value):
        raise ProtocolError(f"{where}: expected 64 lowercase hex digits")


# --- common parts ------------------------------------------------------------


@dataclass
class EntryTime(Record):
    """When an entry was made: wall clock (with how far to trust it) and monotonic."""

    utc_ns: int
    clock_source: str
    clock_synced: bool
    monotonic_ns: int
    boot_id: str
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {"clock_source": CLOCK_SOURCES}


@dataclass
class MediaFile(Record):
    """A sealed media file in the store's media/ folder, as stored (encrypted)."""

    file: str
    container: str  # "mp4" (fragmented)
    codecs: dict[str, str]  # e.g. {"video": "h264", "audio": "flac"}
    size: int  # bytes as stored
    sha256: str  # of the stored (encrypted) bytes
    plaintext_size: int | None  # None when the device could not know (recovered)
    plaintext_sha256: str | None
    encryption: dict[str, Any]  # {"scheme": "custody-seg/1", "recipient": fingerprint}

    def validate(self, where: str) -> None:
        if not _FILE_NAME.fullmatch(self.file) or ".." in self.file:
            raise ProtocolError(f"{where}.file: {self.file!r} is not a plain file name")
        _hex64(self.sha256, f"{where}.sha256")
        _hex64(self.plaintext_sha256, f"{where}.plaintext_sha256")
        if self.size < 0 or (self.plaintext_size is not None and self.plaintext_size < 0):
            raise ProtocolError(f"{where}: sizes must not be negative")


# --- bodies, one class per kind ------------------------------------------------


@dataclass
class Body(Record):
    KIND: ClassVar[str] = ""


@dataclass
class Provisioned(Body):
    """Genesis (seq 0): the device's identity and whom it trusts."""

    KIND: ClassVar[str] = "provisioned"
    unit: str
    device_key: str  # key id of the device's signing key
    archive_key: str  # fingerprint of the archive's X25519 encryption key
    dock_keys: list[str]


@dataclass
class Assigned(Body):
    """The device is assigned to an officer (Art. 6)."""

    KIND: ClassVar[str] = "assigned"
    officer: str
    by: str = ""  # technician or custodian who assigned it


@dataclass
class RecordStart(Body):
    """An officer starts a recording; its id is this entry's seq."""

    KIND: ClassVar[str] = "record_start"
    trigger: str  # "button", "console", ...
    category: str  # recording category, e.g. "scene", "meeting" (configuration)
    officer: str
    pre_record_seconds: float
    pre_record_audio: bool = True


@dataclass
class Segment(Body):
    """A sealed media segment of a recording's span."""

    KIND: ClassVar[str] = "segment"
    recording: int  # seq of the record_start
    span: int  # 0 for the first span, +1 after each resume
    index: int  # 0, 1, 2, … within the recording
    media: MediaFile
    first_capture_utc_ns: int  # first frame (or first audio sample, audio-only)
    last_capture_utc_ns: int  # last frame (or last audio sample)
    frame_period_ns: int  # video frame period (audio-only: the audio block period)
    frames: int
    audio_samples: int
    audio_rate: int
    recovered: bool = False  # sealed after a power cut or crash, at its last whole fragment

    def validate(self, where: str) -> None:
        if self.frame_period_ns <= 0:
            raise ProtocolError(f"{where}.frame_period_ns: must be positive")
        if self.last_capture_utc_ns < self.first_capture_utc_ns:
            raise ProtocolError(f"{where}: last capture before first capture")


@dataclass
class Marker(Body):
    """A key moment of enforcement (Art. 7 phase)."""

    KIND: ClassVar[str] = "marker"
    phase: str
    recording: int | None = None
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {"phase": MARKER_PHASES}


@dataclass
class Interruption(Body):
    """A declared gap: recording stopped for a reason other than the officer's stop."""

    KIND: ClassVar[str] = "interruption"
    reason: str
    detected_by: str  # what noticed it: "battery_gauge", "boot_recovery", "officer", ...
    cut_utc_ns: int  # best known time capture stopped
    recording: int | None = None
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {"reason": INTERRUPTION_REASONS}


@dataclass
class Resume(Body):
    """Capture of an interrupted recording resumes (a new span starts)."""

    KIND: ClassVar[str] = "resume"
    interruption: int  # seq of the interruption
    recording: int


@dataclass
class VoiceNote(Body):
    """The officer's spoken explanation of an interruption."""

    KIND: ClassVar[str] = "voice_note"
    interruption: int
    media: MediaFile
    first_capture_utc_ns: int
    audio_samples: int
    audio_rate: int
    speech_seconds: float  # voice activity found; see explains_interruption

    @property
    def explains(self) -> bool:
        """Enough speech to explain its interruption (:func:`explains_interruption`)."""
        return explains_interruption(self.speech_seconds)


@dataclass
class Exemption(Body):
    """A lawful decision not to record (Art. 5)."""

    KIND: ClassVar[str] = "exemption"
    reason: str
    note: str = ""
    voice_memo: MediaFile | None = None
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {"reason": EXEMPTION_REASONS}


@dataclass
class RecordStop(Body):
    KIND: ClassVar[str] = "record_stop"
    recording: int
    trigger: str  # "button", "console", "battery", ...


@dataclass
class TimeSync(Body):
    """The wall clock was set or jumped; later entries are measured from new_utc_ns."""

    KIND: ClassVar[str] = "time_sync"
    old_utc_ns: int
    new_utc_ns: int
    source: str
    statement: dict[str, Any] | None = None  # dock-signed DSSE envelope, when set by a dock
    LISTED: ClassVar[dict[str, tuple[str, ...]]] = {"source": CLOCK_SOURCES}


@dataclass
class OffloadReceiptEntry(Body):
    """The device records a dock-signed receipt it verified (see protocol.receipt)."""

    KIND: ClassVar[str] = "offload_receipt"
    receipt: dict[str, Any]  # the dock's DSSE envelope, as received


@dataclass
class ConsoleAction(Body):
    KIND: ClassVar[str] = "console_action"
    technician: str
    command: str
    result: str


@dataclass
class KeyRotated(Body):
    """Signed by the old key: from the next entry on, the new key signs."""

    KIND: ClassVar[str] = "key_rotated"
    new_key: str  # key id
    new_public: str  # Ed25519 public key, hex

    def validate(self, where: str) -> None:
        _hex64(self.new_key, f"{where}.new_key")
        _hex64(self.new_public, f"{where}.new_public")


@dataclass
class Overdue(Body):
    """A recording not handed in within the deadline (Art. 10: 24 hours)."""

    KIND: ClassVar[str] = "overdue"
    recording: int
    started_utc_ns: int
    hours: float  # the deadline that passed


@dataclass
class LedgerGap(Body):
    """The device found its ledger shorter than its high-water mark: entries are gone.

    Its ``seq`` comes after the mark (``last_seq`` + 1) and its ``prev`` is
    ``last_head``, so no seq is used twice. ``last_seq`` and ``last_head`` are
    None when the mark itself was gone: how much is missing cannot be said.
    """

    KIND: ClassVar[str] = "ledger_gap"
    first_seq: int  # the first entry missing (the ledger's last entry + 1)
    last_seq: int | None  # the last entry missing: the mark's seq
    last_head: str | None  # SHA-256 of that entry's payload, as the mark says

    def validate(self, where: str) -> None:
        _hex64(self.last_head, f"{where}.last_head")
        if self.last_seq is not None and self.last_seq < self.first_seq:
            raise ProtocolError(f"{where}: last_seq before first_seq")


@dataclass
class UnknownBody(Body):
    """A kind this version does not know: kept as it is."""


BODY_CLASSES: dict[str, type[Body]] = {
    cls.KIND: cls
    for cls in (
        Provisioned, Assigned, RecordStart, Segment, Marker, Interruption, Resume, VoiceNote,
        Exemption, RecordStop, TimeSync, OffloadReceiptEntry, ConsoleAction, KeyRotated,
        Overdue, LedgerGap,
    )
}


@dataclass
class Entry:
    """One ledger entry (the signed payload).

    >>> t = EntryTime(utc_ns=1, clock_source="rtc", clock_synced=True,
    ...               monotonic_ns=5, boot_id="b")
    >>> e = Entry(device="DEV-1", seq=1, prev=GENESIS_PREV, time=t,
    ...           body=Assigned(officer="PC-7"))
    >>> Entry.from_dict(e.to_dict()) == e
    True
    """

    device: str
    seq: int
    prev: str
    time: EntryTime
    body: Body
    kind: str = ""  # filled from the body's class; kept as read for unknown kinds
    format: int = FORMAT_VERSION
    unrecognized_fields: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = self.body.KIND

    _HEADER = ("format", "device", "seq", "prev", "kind", "time", "body")

    @classmethod
    def from_dict(cls, data: Any) -> Entry:
        if not isinstance(data, dict):
            raise ProtocolError("entry: expected an object")
        for name in cls._HEADER:
            if name not in data:
                raise ProtocolError(f"entry: missing field {name!r}")
        fmt = _check(data["format"], int, "entry.format")
        if fmt != FORMAT_VERSION:
            raise ProtocolError(f"entry.format: unsupported version {fmt}")
        kind = _check(data["kind"], str, "entry.kind")
        seq = _check(data["seq"], int, "entry.seq")
        if seq < 0:
            raise ProtocolError("entry.seq: must not be negative")
        prev = _check(data["prev"], str, "entry.prev")
        _hex64(prev, "entry.prev")
        body_cls = BODY_CLASSES.get(kind, UnknownBody)
        return cls(
            format=fmt,
            device=_check(data["device"], str, "entry.device"),
            seq=seq,
            prev=prev,
            kind=kind,
            time=EntryTime.from_dict(data["time"], "entry.time"),
            body=body_cls.from_dict(data["body"], f"entry.body({kind})"),
            unrecognized_fields={k: v for k, v in data.items() if k not in cls._HEADER},
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": self.format,
            "device": self.device,
            "seq": self.seq,
            "prev": self.prev,
            "kind": self.kind,
            "time": self.time.to_dict(),
            "body": self.body.to_dict(),
        }
        out.update(self.unrecognized_fields)
        return out

    def unlisted_values(self) -> list[tuple[str, str]]:
        """Values outside their listed sets, as ("time.clock_source", value), …"""
        return ([(f"time.{k}", v) for k, v in self.time.unlisted_values()]
                + [(f"body.{k}", v) for k, v in self.body.unlisted_values()])

    def media(self) -> list[MediaFile]:
        """The media files this entry seals."""
        body = self.body
        if isinstance(body, Segment | VoiceNote):
            return [body.media]
        if isinstance(body, Exemption) and body.voice_memo is not None:
            return [body.voice_memo]
        return []
