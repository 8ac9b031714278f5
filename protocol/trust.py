"""The unit's trust file: which keys may sign for which device and dock.

The trust file is public. The custodian distributes it with evidence; a court
checks its SHA-256 against the one the unit publishes. It names:

- the archive's X25519 encryption key (by fingerprint and public bytes),
- the archive's Ed25519 signing keys,
- per dock, the Ed25519 keys that may sign receipts and attestations for it,
- per device, the Ed25519 keys that may sign its ledger (more than one after a
  ``key_rotated`` entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from securesystemslib.signer import SSlibKey

from protocol.entries import Record
from protocol.envelope import decode_json
from protocol.errors import ProtocolError
from protocol.keys import fingerprint, verification_key

TRUST_FORMAT = "custody-trust/1"


@dataclass
class TrustedKey(Record):
    keytype: str  # "ed25519" (signing) or "x25519" (archive encryption)
    public: str  # raw public key, hex

    def validate(self, where: str) -> None:
        if self.keytype not in ("ed25519", "x25519"):
            raise ProtocolError(f"{where}.keytype: {self.keytype!r} is not ed25519 or x25519")
        try:
            raw = bytes.fromhex(self.public)
        except ValueError as e:
            raise ProtocolError(f"{where}.public: not hex") from e
        if len(raw) != 32:
            raise ProtocolError(f"{where}.public: must be 32 bytes")


@dataclass
class Holder(Record):
    """A device, dock or the archive, and the key ids it may sign with."""

    keys: list[str]


@dataclass
class TrustFile(Record):
    """The unit's public trust anchors.

    >>> t = TrustFile.from_bytes(TrustFile(unit="u", archive_encryption_key="",
    ...     archive=Holder(keys=[]), keys={}, docks={}, devices={}).to_bytes())
    >>> t.unit
    'u'
    """

    unit: str
    archive_encryption_key: str  # fingerprint of the X25519 key in ``keys``
    archive: Holder
    keys: dict[str, TrustedKey]  # key id -> key
    docks: dict[str, Holder]
    devices: dict[str, Holder]
    format: str = TRUST_FORMAT
    _cache: dict[str, SSlibKey] = field(default_factory=dict, repr=False, compare=False)

    def validate(self, where: str) -> None:
        if self.format != TRUST_FORMAT:
            raise ProtocolError(f"{where}.format: {self.format!r} is not {TRUST_FORMAT}")
        for keyid, key in self.keys.items():
            if fingerprint(bytes.fromhex(key.public)) != keyid:
                raise ProtocolError(f"{where}.keys.{keyid[:16]}: key id is not its fingerprint")
        for group, holders in (("docks", self.docks), ("devices", self.devices)):
            for name, holder in holders.items():
                for keyid in holder.keys:
                    if keyid not in self.keys or self.keys[keyid].keytype != "ed25519":
                        raise ProtocolError(
                            f"{where}.{group}.{name}: key {keyid[:16]} is not an Ed25519 key here"
                        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustFile:
        return cls.from_dict(decode_json(data, "trust file"), "trust")

    def to_bytes(self) -> bytes:
        # Indented for the people who read it; its SHA-256 names this exact text.
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    def signing_key(self, keyid: str) -> SSlibKey | None:
        key = self.keys.get(keyid)
        if key is None or key.keytype != "ed25519":
            return None
        if keyid not in self._cache:
            self._cache[keyid] = verification_key(key.public)
        return self._cache[keyid]

    def device_keys(self, device: str) -> list[str]:
        holder = self.devices.get(device)
        return list(holder.keys) if holder else []

    def dock_of_key(self, keyid: str) -> str | None:
        for name, holder in self.docks.items():
            if keyid in holder.keys:
                return name
        return None
