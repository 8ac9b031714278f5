"""Watching a unit: every attestation checked against the trust file, one row per device.

:class:`UnitBoard` is the state, fed one MQTT message at a time and testable
without a broker; :class:`Watcher` subscribes to the unit's topics (MQTT v5,
TLS, a persistent session under the watcher's certificate name) and feeds it.

What the board accepts: an attestation whose DSSE signature verifies with a
key the trust file lists for the dock it names, on the topic of the device it
is about; alerts signed the same way; status words. Everything else — not
JSON, wrong type, bad signature, another unit, a device the topic does not
name — is logged and ignored, and shows in ``refused``. Attestations and
alerts are deduplicated by id (the dock may deliver one twice).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from daemon.mqtt import topics
from daemon.mqtt.client import MqttConnection, NetworkThread, guarded
from protocol.alert import Alert, open_alert
from protocol.attestation import Attestation, check_attestation
from protocol.errors import ProtocolError
from protocol.trust import TrustFile

log = logging.getLogger("custody.mqtt.watch")

ACCEPTED, DUPLICATE, REFUSED, STATUS, IGNORED = (
    "accepted", "duplicate", "refused", "status", "ignored")


@dataclass
class DeviceRow:
    device: str
    attestation: Attestation | None = None
    alerts: Counter[str] = field(default_factory=Counter)
    status: str | None = None  # online / offline
    details: dict[str, Any] = field(default_factory=dict)  # its latest JSON status

    @property
    def status_cell(self) -> str:
        """``online standby 81%``: the word, and while online what the device last said."""
        if self.status != topics.ONLINE or not self.details:
            return self.status or "-"
        parts = [self.status, str(self.details.get("state") or "")]
        battery = self.details.get("battery") or {}
        if isinstance(battery, dict) and isinstance(battery.get("percent"), int | float):
            parts.append(f"{battery['percent']:.0f}%")
        offload = self.details.get("offload") or {}
        if isinstance(offload, dict) and offload.get("state") == "offloading":
            parts.append(f"offload {offload.get('files_done')}/{offload.get('files_total')}")
        return " ".join(p for p in parts if p)

    @property
    def cells(self) -> list[str]:
        att = self.attestation
        alerts = ", ".join(f"{k}×{n}" if n > 1 else k for k, n in sorted(self.alerts.items()))
        if att is None:
            return [self.device, "-", "-", "-", "-", "-", alerts or "-", self.status_cell]
        unexplained = len(att.unexplained_gaps)
        return [self.device, _utc(att.archived_utc_ns), att.dock, att.verdict,
                f"{len(att.gaps)} ({unexplained} unexplained)" if att.gaps else "0",
                str(len(att.overdue)), alerts or "-", self.status_cell]


HEADERS = ["DEVICE", "LAST DOCKING (UTC)", "DOCK", "VERDICT", "GAPS", "OVERDUE", "ALERTS",
           "STATUS"]


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class UnitBoard:
    """What a watcher knows of its unit, from the messages it accepted."""

    def __init__(self, trust: TrustFile):
        self.trust, self.unit = trust, trust.unit
        self.devices: dict[str, DeviceRow] = {}
        self.status: dict[str, str] = {}  # identity (dock, device) -> online / offline
        self.seen: set[str] = set()  # attestation and alert ids
        self.alerts: list[Alert] = []
        self.refused: list[tuple[str, str]] = []  # (topic, why)
        self.accepted = 0
        self.duplicates = 0

    def row(self, device: str) -> DeviceRow:
        return self.devices.setdefault(device, DeviceRow(device))

    def receive(self, topic: str, payload: bytes) -> str:
        where = topics.parse(topic)
        if where is None or where[0] != self.unit:
            return IGNORED
        _, kind, name = where
        if kind == "status":
            return self._status(topic, name, payload)
        if kind not in ("attestation", "alert"):
            return IGNORED
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return self._refuse(topic, f"not JSON ({e.__class__.__name__})")
        if kind == "attestation":
            return self._attestation(topic, name, data)
        return self._alert(topic, name, data)

    def _refuse(self, topic: str, why: str) -> str:
        log.warning("ignored the message on %s: %s", topic, why)
        self.refused.append((topic, why))
        return REFUSED

    def _status(self, topic: str, name: str, payload: bytes) -> str:
        """A word (``online`` / ``offline``, the last will), or a device's JSON status
        whose ``status`` is ``online`` (device/status_report.py). Unsigned: the broker's
        ACL is what says it came from ``name``."""
        text = payload.decode("utf-8", "replace").strip()
        details: dict[str, Any] = {}
        if text.startswith("{"):
            try:
                details = json.loads(text)
            except (ValueError, RecursionError):
                return self._refuse(topic, "status: not JSON")
            if not isinstance(details, dict):
                return self._refuse(topic, "status: not a JSON object")
            text = str(details.get("status"))
        if text not in (topics.ONLINE, topics.OFFLINE):
            return self._refuse(topic, f"status {text[:20]!r} is not online/offline")
        self.status[name] = text
        if name in self.trust.devices:
            row = self.row(name)
            row.status = text
            if details:
                row.details = details
        return STATUS

    def _attestation(self, topic: str, device: str, data: Any) -> str:
        check = check_attestation(data, self.trust)
        att = check.attestation
        if att is None:
            return self._refuse(topic, check.problem or "refused")
        if att.device != device:
            return self._refuse(topic, f"attestation of {att.device!r} on the topic of "
                                f"{device!r}")
        if att.id in self.seen:
            self.duplicates += 1
            return DUPLICATE
        self.seen.add(att.id)
        row = self.row(device)
        # A retained attestation may arrive after a newer one: keep the latest range.
        if row.attestation is None or att.last_seq >= row.attestation.last_seq:
            row.attestation = att
        self.accepted += 1
        return ACCEPTED

    def _alert(self, topic: str, kind: str, data: Any) -> str:
        try:
            alert = open_alert(data, self.trust)
        except ProtocolError as e:
            return self._refuse(topic, str(e))
        if alert.alert != kind:
            return self._refuse(topic, f"alert {alert.alert!r} on the topic of {kind!r}")
        if alert.id in self.seen:
            self.duplicates += 1
            return DUPLICATE
        self.seen.add(alert.id)
        self.alerts.append(alert)
        self.row(alert.device or "(unit)").alerts[kind] += 1
        self.accepted += 1
        return ACCEPTED

    def table(self) -> str:
        rows = [HEADERS] + [self.devices[d].cells for d in sorted(self.devices)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        docks = [f"{d} {self.status[d]}" for d in sorted(self.status) if d in self.trust.docks]
        if docks:
            lines.append("docks: " + ", ".join(docks))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit,
                "devices": {d: {"attestation": r.attestation.to_dict() if r.attestation else None,
                                "alerts": dict(r.alerts), "status": r.status,
                                "details": r.details}
                            for d, r in sorted(self.devices.items())},
                "refused": [{"topic": t, "why": w} for t, w in self.refused]}


class Watcher:
    """Subscribes to ``custody/<unit>/#`` and feeds a :class:`UnitBoard`."""

    def __init__(self, connection: MqttConnection, board: UnitBoard, on_change: Any = None):
        self.connection, self.board, self.on_change = connection, board, on_change
        self.client = connection.make_client()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.network = NetworkThread(connection, self.client, "mqtt-watch")
        self.changed = threading.Condition()
        self.subscribed = threading.Event()
        self.messages = 0
        self.refusal: str | None = None  # why the broker refused us, if it did

    def start(self) -> None:
        self.network.start()

    def stop(self) -> None:
        self.network.stop()

    @guarded
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.refusal = str(reason_code)
            log.error("broker refused %s: %s", self.connection.identity, reason_code)
            return
        client.subscribe(topics.unit_filter(self.board.unit), qos=1)
        self.subscribed.set()

    @guarded
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.messages += 1
            outcome = self.board.receive(message.topic, message.payload)
            self.changed.notify_all()
        if outcome in (ACCEPTED, STATUS, REFUSED) and self.on_change is not None:
            self.on_change(outcome, message.topic)
