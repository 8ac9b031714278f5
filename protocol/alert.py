"""Dock alerts: what the unit must see at once, signed like attestations.

Kinds: ``integrity_failure`` (a broken verdict, a hash mismatch, a short
file), ``unexplained_gap``, ``overdue_handover`` (Art. 10), ``unknown_device``
(a certificate or ledger the unit does not know), ``archive_nearly_full``,
``archive_full`` (the dock refuses uploads), ``checkpoint_refused`` (the
device would not cosign the checkpoint of its log the dock proposed: its
history may have been rewritten in the archive). A newer dock may send others:
they are kept and shown.
The broker's ACL already lets only docks publish alerts; the signature lets a
watcher (or the archive, later) check one without trusting the broker.

    alert = make_alert(unit, dock, "unexplained_gap", "CAM-1", {"gaps": 2}, utc_ns)
    envelope = sign_alert(alert, dock_key.signer())
    alert = open_alert(envelope, trust)         # raises ProtocolError
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Signer

from protocol.entries import Record
from protocol.envelope import decode_json, encode_json, envelope_from_dict, sign_payload
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

ALERT_PAYLOAD_TYPE = "application/vnd.custody.alert+json"
ALERT_KINDS = ("integrity_failure", "unexplained_gap", "overdue_handover", "unknown_device",
               "archive_nearly_full", "archive_full", "checkpoint_refused")


@dataclass
class Alert(Record):
    id: str
    unit: str
    dock: str
    alert: str  # one of ALERT_KINDS (a newer dock may send others: kept, shown)
    device: str | None
    detail: dict[str, Any]
    utc_ns: int  # dock clock
    kind: str = "alert"
    format: int = 1

    def validate(self, where: str) -> None:
        if self.kind != "alert":
            raise ProtocolError(f"{where}.kind: not an alert")
        if self.id != alert_id(self.unit, self.dock, self.alert, self.device, self.detail,
                               self.utc_ns):
            raise ProtocolError(f"{where}.id: not the id of this alert")


def alert_id(unit: str, dock: str, alert: str, device: str | None, detail: dict[str, Any],
             utc_ns: int) -> str:
    text = encode_json([unit, dock, alert, device, detail, utc_ns])
    return hashlib.sha256(b"custody-alert-id/1\n" + text).hexdigest()[:32]


def make_alert(unit: str, dock: str, alert: str, device: str | None, detail: dict[str, Any],
               utc_ns: int) -> Alert:
    return Alert(id=alert_id(unit, dock, alert, device, detail, utc_ns), unit=unit, dock=dock,
                 alert=alert, device=device, detail=detail, utc_ns=utc_ns)


def sign_alert(alert: Alert, dock_signer: Signer) -> dict[str, Any]:
    return sign_payload(encode_json(alert.to_dict()), ALERT_PAYLOAD_TYPE,
                        [dock_signer]).to_dict()


def open_alert(envelope_json: Any, trust: TrustFile) -> Alert:
    """Check an alert's dock signature against the trust file and parse it."""
    envelope = envelope_from_dict(envelope_json, "alert")
    if envelope.payload_type != ALERT_PAYLOAD_TYPE:
        raise ProtocolError(f"alert: payloadType {envelope.payload_type!r}")
    alert = Alert.from_dict(decode_json(envelope.payload, "alert"), "alert")
    if alert.unit != trust.unit:
        raise ProtocolError(f"alert: for unit {alert.unit!r}, the trust file is for "
                            f"{trust.unit!r}")
    holder = trust.docks.get(alert.dock)
    keys = [k for k in (trust.signing_key(i) for i in (holder.keys if holder else []))
            if k is not None]
    if not keys:
        raise ProtocolError(f"alert: dock {alert.dock!r} has no key in the trust file")
    try:
        envelope.verify(keys, 1)
    except VerificationError as e:
        raise ProtocolError(f"alert: no valid signature by dock {alert.dock!r}") from e
    return alert
