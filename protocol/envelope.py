"""Entries as bytes: JSON payloads inside DSSE envelopes, one per ledger line.

The signature covers the payload bytes exactly as stored (DSSE's
pre-authentication encoding, ``PAE``), so no canonical JSON is needed: a reader
keeps the bytes it read, and ``prev`` is the SHA-256 of those exact bytes.
We write payloads as compact, key-sorted UTF-8 JSON only so they are
reproducible, not because verification depends on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.signer import Signature, Signer

from protocol.entries import Entry
from protocol.errors import DuplicateKeyError, ProtocolError

ENTRY_PAYLOAD_TYPE = "application/vnd.custody.entry+json"


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Deeper than any object of the format: refused before anything walks it.
MAX_JSON_DEPTH = 32


def _object(what: str):
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            twice = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise DuplicateKeyError(f"{what}: key {twice!r} appears twice in one object")
        return obj

    return build


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON number")


def decode_json(data: bytes, what: str) -> Any:
    """Strict JSON: UTF-8, no key twice in an object, no NaN/Infinity, bounded depth.

    Raises only :class:`ProtocolError` (:class:`DuplicateKeyError` for a key twice).
    """
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_object(what),
                           parse_constant=_no_constant)
    except ProtocolError:
        raise
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ProtocolError(f"{what}: line {line}: byte {e.start} is not UTF-8") from e
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{what}: line {e.lineno}: not JSON ({e.msg})") from e
    except (ValueError, RecursionError) as e:
        # ValueError: an integer with more digits than Python converts
        raise ProtocolError(f"{what}: not JSON ({e})") from e
    _check_depth(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for c in level if isinstance(c, dict | list)
                 for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return
    raise ProtocolError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")


def envelope_from_dict(data: Any, what: str = "envelope") -> Envelope:
    """A DSSE envelope from its JSON form, checking what securesystemslib assumes."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected an object")
    payload, ptype, sigs = data.get("payload"), data.get("payloadType"), data.get("signatures")
    if not isinstance(payload, str) or not isinstance(ptype, str) or not isinstance(sigs, list):
        raise ProtocolError(f"{what}: needs payload, payloadType and signatures")
    signatures: dict[str, Signature] = {}
    for i, sig in enumerate(sigs):
        if not isinstance(sig, dict) or not isinstance(sig.get("keyid"), str) or not isinstance(
            sig.get("sig"), str
        ):
            raise ProtocolError(f"{what}.signatures[{i}]: needs keyid and sig")
        if sig["keyid"] in signatures:
            raise ProtocolError(f"{what}: two signatures by key {sig['keyid'][:16]}")
        extra = {k: v for k, v in sig.items() if k not in ("keyid", "sig")}
        signatures[sig["keyid"]] = Signature(sig["keyid"], _b64(sig["sig"], what).hex(), extra)
    return Envelope(_b64(payload, what), ptype, signatures)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError(f"{what}: bad base64") from e


def envelope_to_dict(envelope: Envelope) -> dict[str, Any]:
    return envelope.to_dict()


def sign_payload(payload: bytes, payload_type: str, signers: list[Signer]) -> Envelope:
    envelope = Envelope(payload, payload_type, {})
    for signer in signers:
        envelope.sign(signer)
    return envelope


@dataclass(frozen=True)
class SignedEntry:
    """An entry with the exact bytes that were signed and its envelope."""

    entry: Entry
    envelope: Envelope

    @property
    def payload(self) -> bytes:
        return self.envelope.payload

    @property
    def digest(self) -> str:
        """SHA-256 of the payload bytes: what the next entry's ``prev`` names."""
        return hashlib.sha256(self.envelope.payload).hexdigest()

    @property
    def keyids(self) -> list[str]:
        return list(self.envelope.signatures)

    def to_line(self) -> bytes:
        """The ledger line: compact envelope JSON and a newline."""
        return encode_json(envelope_to_dict(self.envelope)) + b"\n"


def sign_entry(entry: Entry, signer: Signer) -> SignedEntry:
    envelope = sign_payload(encode_json(entry.to_dict()), ENTRY_PAYLOAD_TYPE, [signer])
    return SignedEntry(entry, envelope)


def parse_line(line: bytes) -> SignedEntry:
    """Parse one ledger line. Raises only :class:`ProtocolError`. Checks no signature."""
    envelope = envelope_from_dict(decode_json(line, "ledger line"), "ledger line")
    if envelope.payload_type != ENTRY_PAYLOAD_TYPE:
        raise ProtocolError(f"ledger line: payloadType {envelope.payload_type!r} is not an entry")
    entry = Entry.from_dict(decode_json(envelope.payload, "entry payload"))
    return SignedEntry(entry, envelope)


def split_lines(ledger: bytes) -> list[bytes]:
    """A ledger's lines. A last line without its newline is a torn write: kept,
    so the verifier can report it rather than silently drop it."""
    lines = ledger.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
