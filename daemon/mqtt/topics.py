"""MQTT topic names of a unit, in one place (publisher, ACL, watcher).

    custody/<unit>/attestation/<device>   dock-signed attestation, QoS 1, retained
    custody/<unit>/alert/<kind>           dock alerts, QoS 1
    custody/<unit>/status/<identity>      "online" / "offline" (last will), retained
    custody/<unit>/device/<device>/...    what a device itself publishes

Topic levels are identities checked by :func:`daemon.pki.check_name`, so they
hold no ``/``, ``+`` or ``#``.
"""

from __future__ import annotations

from protocol.alert import ALERT_KINDS

__all__ = ["ALERT_KINDS"]
ROOT = "custody"
ONLINE, OFFLINE = "online", "offline"


def attestation(unit: str, device: str) -> str:
    return f"{ROOT}/{unit}/attestation/{device}"


def alert(unit: str, kind: str) -> str:
    return f"{ROOT}/{unit}/alert/{kind}"


def status(unit: str, identity: str) -> str:
    return f"{ROOT}/{unit}/status/{identity}"


def device_topic(unit: str, device: str, leaf: str) -> str:
    return f"{ROOT}/{unit}/device/{device}/{leaf}"


def unit_filter(unit: str) -> str:
    """Everything of the unit (what a watcher subscribes to)."""
    return f"{ROOT}/{unit}/#"


def parse(topic: str) -> tuple[str, str, str] | None:
    """(unit, kind, name) of ``custody/<unit>/<kind>/<name>``; None otherwise."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        return None
    return parts[1], parts[2], "/".join(parts[3:])
