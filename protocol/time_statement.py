"""The dock's signed time statement: what a ``time_sync`` set by a dock rests on.

When a dock sets a device's wall clock it signs a statement of both clocks
at one instant; the device steps its clock by exactly ``offset_ns`` and
records the statement in its ``time_sync`` entry (``body.statement``). The
verifier checks it against the trust file, so a device cannot claim a dock
set its clock when none did, nor by another amount.

    statement = TimeStatement(dock="DOCK-01", device="DEV-1",
                              dock_time_ns=d, device_time_ns=t, offset_ns=d - t)
    envelope = sign_time_statement(statement, dock_key.signer())   # the dock
    open_time_statement(envelope, trust)                           # anyone
    check_answer(envelope, trust, device, sent_reading)            # the device, first
    check_time_sync(time_sync_body, device, trust)                 # the verifier

Byte layout and rules: docs/format.md, section "Time statements".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record, TimeSync
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

TIME_STATEMENT_PAYLOAD_TYPE = "application/vnd.custody.time-statement+json"
#: From the device's reading sent to the dock to the time_sync that records the
#: answer: older, and the statement is out of date or replayed.
MAX_STATEMENT_AGE_NS = 120 * 1_000_000_000
#: The largest step a dock may make to a device clock that has a reference (RTC,
#: NTP, GNSS, a dock before): beyond it the device records the statement but
#: keeps its clock, and the verifier flags every such offset (docs/format.md, 6a).
MAX_DOCK_STEP_NS = 300 * 1_000_000_000


@dataclass
class TimeStatement(Record):
    """Both wall clocks (UTC ns) at one instant, as the dock measured them."""

    dock: str
    device: str
    dock_time_ns: int  # the dock's clock
    device_time_ns: int  # the device's clock, as it reported it to the dock
    offset_ns: int  # dock_time_ns - device_time_ns: what the device adds to its clock
    kind: str = "time_statement"
    format: int = 1

    def validate(self, where: str) -> None:
        if self.kind != "time_statement":
            raise ProtocolError(f"{where}.kind: not a time_statement")
        if self.offset_ns != self.dock_time_ns - self.device_time_ns:
            raise ProtocolError(f"{where}.offset_ns: is not dock_time_ns - device_time_ns")


def sign_time_statement(statement: TimeStatement, dock_signer: Signer) -> dict[str, Any]:
    """The statement as a dock-signed DSSE envelope in JSON form."""
    payload = encode_json(statement.to_dict())
    return sign_payload(payload, TIME_STATEMENT_PAYLOAD_TYPE, [dock_signer]).to_dict()


def open_time_statement(envelope_json: Any, trust: TrustFile) -> TimeStatement:
    """Check the dock's signature against the trust file and parse the statement.

    Raises :class:`ProtocolError` if malformed, or not signed by a key the
    trust file lists for the dock it names.
    """
    envelope = envelope_from_dict(envelope_json, "time statement")
    if envelope.payload_type != TIME_STATEMENT_PAYLOAD_TYPE:
        raise ProtocolError(f"time statement: payloadType {envelope.payload_type!r}")
    statement = TimeStatement.from_dict(decode_json(envelope.payload, "time statement"),
                                        "time statement")
    holder = trust.docks.get(statement.dock)
    keys = [k for k in (trust.signing_key(i) for i in (holder.keys if holder else []))
            if k is not None]
    if not keys:
        raise ProtocolError(f"time statement: dock {statement.dock!r} has no key in the "
                            "trust file")
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        raise ProtocolError(f"time statement: no valid signature by dock "
                            f"{statement.dock!r}") from e
    return statement


def check_answer(envelope_json: Any, trust: TrustFile, device: str,
                 sent_device_time_ns: int) -> TimeStatement:
    """The device's check of the statement a dock just answered its reading with.

    Signed by a dock of the trust file, for this device, and made for this very
    request (``device_time_ns`` is the reading the device sent), so a statement
    for another device, or an old one replayed, is refused (:class:`ProtocolError`).
    """
    statement = open_time_statement(envelope_json, trust)
    if statement.device != device:
        raise ProtocolError(f"time statement: for device {statement.device!r}, not {device!r}")
    if statement.device_time_ns != sent_device_time_ns:
        raise ProtocolError(f"time statement: made for the reading {statement.device_time_ns}, "
                            f"not the one sent ({sent_device_time_ns}): out of date or "
                            "replayed")
    return statement


def dock_may_step(offset_ns: int, clock_has_reference: bool) -> bool:
    """Whether a dock's offset is applied: always to a clock that was never set from a
    reference, else only up to :data:`MAX_DOCK_STEP_NS`."""
    return not clock_has_reference or abs(offset_ns) <= MAX_DOCK_STEP_NS


def check_time_sync(body: TimeSync, device: str | None, trust: TrustFile) -> TimeStatement:
    """The statement of a ``time_sync`` entry, checked against the step it declares.

    It must be for this device, and the step the entry records must be the
    statement's offset exactly (``new_utc_ns - old_utc_ns == offset_ns``), or none
    at all: the dock measured the offset and found it small enough to leave.
    """
    if body.statement is None:
        raise ProtocolError("time_sync: no statement")
    statement = open_time_statement(body.statement, trust)
    if statement.device != device:
        raise ProtocolError(f"time statement: for device {statement.device!r}")
    if body.new_utc_ns - body.old_utc_ns not in (0, statement.offset_ns):
        raise ProtocolError(f"time statement: offset {statement.offset_ns} ns, but the entry "
                            f"steps the clock {body.new_utc_ns - body.old_utc_ns} ns")
    age = body.old_utc_ns - statement.device_time_ns
    if not 0 <= age <= MAX_STATEMENT_AGE_NS:
        raise ProtocolError(f"time statement: made for the device's reading "
                            f"{age / 1e9:+.3f} s from the entry's (out of date or replayed)")
    return statement
