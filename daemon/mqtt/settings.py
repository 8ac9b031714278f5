"""The dock's ``[mqtt]`` settings, checked strictly: a bad value names its key.

    [mqtt]
    broker = "mqtts://127.0.0.1:8883"        # required; TLS only
    ca = "/etc/custody/tls/ca.crt"           # required: the unit's CA
    cert = "/etc/custody/tls/DOCK-01.crt"    # required: the dock's certificate (CN = dock id)
    key = "/etc/custody/tls/DOCK-01.key"     # required
    outbox = "/var/lib/custody/outbox.db"    # required: the SQLite outbox
    ack_timeout_s = 10                       # no PUBACK within this: failed, reconnect
    keepalive_s = 20
    session_expiry_s = 604800                # the broker keeps our session this long

    settings = MqttSettings.from_table(config["mqtt"], source="dock.toml")
    publisher = settings.publisher(unit, dock, dock_key.signer())
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from daemon.mqtt.client import MqttConnection, MqttSettingsError, parse_broker_url
from daemon.mqtt.publisher import DockPublisher

_RANGES = {"ack_timeout_s": (0.1, 600.0), "keepalive_s": (5, 3600),
           "session_expiry_s": (60, 2**32 - 1)}


@dataclass(frozen=True)
class MqttSettings:
    broker: str
    ca: Path
    cert: Path
    key: Path
    outbox: Path
    ack_timeout_s: float = 10.0
    keepalive_s: int = 20
    session_expiry_s: int = 7 * 24 * 3600

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str = "",
                   where: str = "mqtt") -> MqttSettings:
        def fail(key: str, problem: str) -> MqttSettingsError:
            return MqttSettingsError(": ".join(p for p in (source, f"{where}.{key}", problem)
                                               if p))

        if not isinstance(table, Mapping):
            raise fail("", "expected a table")
        names = [f.name for f in fields(cls)]
        for key in table:
            if key not in names:
                near = difflib.get_close_matches(key, names, 1)
                raise fail(key, "unknown setting" + (f'; did you mean "{near[0]}"?'
                                                     if near else ""))
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in table:
                if f.default is f.default_factory:  # both MISSING: required
                    raise fail(f.name, "required")
                continue
            value = table[f.name]
            if f.name == "broker":
                if not isinstance(value, str):
                    raise fail(f.name, "expected a string")
                try:
                    parse_broker_url(value)
                except MqttSettingsError as e:
                    raise fail(f.name, str(e)) from e
            elif f.name in ("ca", "cert", "key", "outbox"):
                if not isinstance(value, str) or not value:
                    raise fail(f.name, "expected a path")
                value = Path(value)
                if f.name != "outbox" and not value.is_file():
                    raise fail(f.name, f"{value}: no such file")
            else:
                low, high = _RANGES[f.name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise fail(f.name, "expected a number")
                if not low <= value <= high or (f.type == "int" and value != int(value)):
                    raise fail(f.name, f"must be {'a whole number ' if f.type == 'int' else ''}"
                               f"between {low} and {high}, got {value}")
            values[f.name] = value
        return cls(**values)

    def connection(self) -> MqttConnection:
        return MqttConnection.from_url(self.broker, self.ca, self.cert, self.key,
                                       keepalive=int(self.keepalive_s),
                                       session_expiry_s=int(self.session_expiry_s))

    def publisher(self, unit: str, dock: str, signer: Signer) -> DockPublisher:
        connection = self.connection()
        if connection.identity != dock:
            raise MqttSettingsError(f"mqtt.cert: the certificate is {connection.identity!r}'s, "
                                    f"not dock {dock!r}'s (the broker's ACL goes by it)")
        return DockPublisher(connection, unit, dock, signer, self.outbox,
                             ack_timeout_s=float(self.ack_timeout_s))
