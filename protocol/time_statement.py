"""Time statements: a dock's signed word on how far a device's clock was off.

When a device docks, the dock reads its own clock (``dock_time_ns``) as the
device's reading (``device_time_ns``) arrives and signs both with the offset
between them (``offset_ns = device_time_ns - dock_time_ns``). The device keeps
the statement in its ledger inside a ``time_sync`` entry, so anyone can later
see which dock vouched for the device's time, and by how much it was corrected.

    envelope = sign_time_statement(TimeStatement(...), dock_signer)
    statement = open_time_statement(envelope, trust)   # raises ProtocolError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

TIME_STATEMENT_PAYLOAD_TYPE = "application/vnd.custody.time-statement+json"


@dataclass
class TimeStatement(Record):
    """What a dock measured of a device's wall clock against its own.

    >>> s = TimeStatement(dock="DOCK-1", device="DEV-1", dock_time_ns=10,
    ...                   device_time_ns=13, offset_ns=3)
    >>> TimeStatement.from_dict(s.to_dict()) == s
    True
    """

    dock: str
    device: str
    dock_time_ns: int  # the dock's wall clock, Unix ns, as the reading arrived
    device_time_ns: int  # the device's wall clock, Unix ns, as it sent the reading
    offset_ns: int  # device_time_ns - dock_time_ns: how far ahead the device was
    kind: str = "time_statement"
    format: int = 1

    def validate(self, where: str) -> None:
        if self.kind != "time_statement":
            raise ProtocolError(f"{where}.kind: not a time_statement")
        if self.offset_ns != self.device_time_ns - self.dock_time_ns:
            raise ProtocolError(f"{where}.offset_ns: is not device_time_ns - dock_time_ns")


def sign_time_statement(statement: TimeStatement, dock_signer: Signer) -> dict[str, Any]:
    """The statement as a dock-signed DSSE envelope in JSON form."""
    payload = encode_json(statement.to_dict())
    return sign_payload(payload, TIME_STATEMENT_PAYLOAD_TYPE, [dock_signer]).to_dict()


def open_time_statement(envelope_json: Any, trust: TrustFile) -> TimeStatement:
    """Check a statement's signature by a key of the dock it names and parse it.

    Raises :class:`ProtocolError` if it is malformed, names a dock the trust
    file does not list, or its signature does not verify.
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
