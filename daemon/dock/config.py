"""The dock's settings: ``custody dock --config FILE`` reads a TOML file.

Every setting is a top-level key with a default (docs/configuration.md, "The
dock"); an unknown key or a bad value raises :class:`DockConfigError` naming
the file and the key. Relative paths are taken from the file's folder.

    >>> DockConfig.from_toml('dock_id = "DOCK-1"\\nlisten_port = 8443').listen_port
    8443
    >>> try:
    ...     DockConfig.from_toml("listen_port = 0.5", source="dock.toml")
    ... except DockConfigError as e:
    ...     print(e)
    dock.toml: listen_port: must be an integer from 0 to 65535, got 0.5
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from daemon.mqtt.client import MqttSettingsError
from daemon.mqtt.settings import MqttSettings

MIB = 1 << 20
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class DockConfigError(ValueError):
    def __init__(self, key: str, problem: str, source: str = ""):
        self.key, self.problem, self.source = key, problem, source
        super().__init__(": ".join(p for p in (source, key, problem) if p))


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(raw: Any) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool) or not low <= raw <= high:
            raise ValueError(f"must be an integer from {low} to {high}, got {raw!r}")
        return raw
    return check


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(raw: Any) -> float:
        if not isinstance(raw, int | float) or isinstance(raw, bool) or not low <= raw <= high:
            raise ValueError(f"must be a number from {low} to {high}, got {raw!r}")
        return float(raw)
    return check


def _ident(raw: Any) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise ValueError(f"must be letters, digits, . _ - (up to 64), got {raw!r}")
    return raw


def _host(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be an IP address, got {raw!r}")
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(f"must be an IP address to listen on, got {raw!r}") from None
    return raw


def _path(raw: Any) -> Path:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"must be a path, got {raw!r}")
    return Path(raw)


@dataclass(frozen=True)
class DockConfig:
    """The dock daemon's validated settings (the parsers are the gate)."""

    dock_id: str = ""
    archive: Path | None = None
    key_file: Path | None = None
    trust_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    crl_file: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    max_uploads: int = 16
    retry_after_s: int = 2
    reserve_bytes: int = 512 * MIB
    max_ledger_bytes: int = 64 * MIB
    clock_threshold_s: float = 1.0
    # [mqtt]: where attestations and alerts go (docs/mqtt.md); unset: the dock only logs them
    mqtt: MqttSettings | None = None
    source: str = field(default="", compare=False, repr=False)

    REQUIRED = ("dock_id", "archive", "key_file", "trust_file", "tls_cert_file",
                "tls_key_file", "tls_ca_file")

    @classmethod
    def from_toml(cls, text: str, source: str = "", base_dir: Path | None = None) -> DockConfig:
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DockConfigError("", f"not valid TOML: {e}", source) from e
        values: dict[str, Any] = {}
        if "mqtt" in table:
            values["mqtt"] = _mqtt(table.pop("mqtt"), source, base_dir)
        for key, raw in table.items():
            setting = SETTINGS.get(key)
            if setting is None:
                close = difflib.get_close_matches(key, SETTINGS, 1)
                hint = f'; did you mean "{close[0]}"?' if close else " (docs/configuration.md)"
                raise DockConfigError(key, "unknown setting" + hint, source)
            try:
                value = setting[0](raw)
            except ValueError as e:
                raise DockConfigError(key, str(e), source) from None
            if isinstance(value, Path) and base_dir is not None and not value.is_absolute():
                value = Path(base_dir) / value
            values[key] = value
        return replace(cls(source=source), **values)

    @classmethod
    def from_file(cls, path: Path) -> DockConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DockConfigError("", f"cannot read settings file: {e}", os.fspath(path)) from e
        return cls.from_toml(text, os.fspath(path), Path(path).parent)

    def require(self) -> None:
        """A running dock needs its identity, archive, keys and certificates."""
        for name in self.REQUIRED:
            if getattr(self, name) in (None, ""):
                raise DockConfigError(name, "required for a dock", self.source)
        for name in ("key_file", "trust_file", "tls_cert_file", "tls_key_file", "tls_ca_file",
                     "crl_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise DockConfigError(name, f"{path}: no such file", self.source)

    def to_toml(self) -> str:
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("source", "mqtt") or value is None:
                continue
            lines.append(f"{f.name} = " + (f'"{value}"' if isinstance(value, str | Path)
                                           else repr(value)))
        if self.mqtt is not None:
            lines.append("\n[mqtt]")
            for f in fields(self.mqtt):
                value = getattr(self.mqtt, f.name)
                lines.append(f"{f.name} = " + (f'"{value}"' if isinstance(value, str | Path)
                                               else repr(value)))
        return "\n".join(lines) + "\n"


def _mqtt(raw: Any, source: str, base_dir: Path | None) -> MqttSettings:
    """The ``[mqtt]`` table; its relative paths, like the others, from the file's folder."""
    if isinstance(raw, dict) and base_dir is not None:
        raw = {k: (str(Path(base_dir) / v) if k in ("ca", "cert", "key", "outbox")
                   and isinstance(v, str) and v and not Path(v).is_absolute() else v)
               for k, v in raw.items()}
    try:
        return MqttSettings.from_table(raw, source=source)
    except MqttSettingsError as e:
        raise DockConfigError("", str(e)) from None


# name -> (checker, meaning); defaults are the DockConfig fields
SETTINGS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "dock_id": (_ident, "The dock's id, as in the trust file; required"),
    "archive": (_path, "The archive folder (devices/, incoming/, quarantine/); required"),
    "key_file": (_path, "The dock's Ed25519 signing key (receipts, time statements, "
                          "checkpoints); required"),
    "trust_file": (_path, "The unit's trust file; required"),
    "tls_cert_file": (_path, "The dock's TLS certificate (tls/docks/<dock>.crt); required"),
    "tls_key_file": (_path, "The dock's TLS key (tls/docks/<dock>.key); required"),
    "tls_ca_file": (_path, "The unit's CA certificate (tls/ca.crt); required"),
    "crl_file": (_path, "The unit's CRL (tls/crl.pem), re-read when it changes; unset: none"),
    "listen_host": (_host, "Address to listen on (the dock link's address)"),
    "listen_port": (_integer(0, 65535), "HTTPS port (0: any free port, logged)"),
    "max_uploads": (_integer(1, 256), "Uploads at once; beyond it 503 + Retry-After"),
    "retry_after_s": (_integer(1, 3600), "The Retry-After a busy dock answers"),
    "reserve_bytes": (_integer(0, 1 << 50), "Free space kept on the archive; below it 507"),
    "max_ledger_bytes": (_integer(4096, 1 << 32), "Largest ledger range taken in one request"),
    "clock_threshold_s": (_number(0.001, 3600), "Set the device's clock when it is off by more"),
}
