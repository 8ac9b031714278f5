"""An identity's presence on the unit's broker: "online", and "offline" as its last will.

For a device (or any client that is not the dock's publisher): it connects
with its certificate, leaves a retained last will "offline" on
``custody/<unit>/status/<identity>``, says "online" on every connection and
"offline" when closed. ``publish`` sends one QoS 1 message and returns the
broker's reason code, waiting at most ``timeout`` for the PUBACK.

    with Presence(connection, unit="U1") as presence:
        presence.wait_connected(5)
        code = presence.publish(topics.device_topic("U1", "CAM-1", "battery"), b"81")
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from daemon.mqtt import topics
from daemon.mqtt.client import MqttConnection, NetworkThread, guarded

log = logging.getLogger("custody.mqtt.presence")


class PublishTimeout(TimeoutError):
    """No PUBACK within the time given: the message may or may not have arrived."""


class Presence:
    """Online/offline status of one identity, and plain QoS 1 publishing."""

    def __init__(self, connection: MqttConnection, unit: str):
        self.connection, self.unit = connection, unit
        self.topic = topics.status(unit, connection.identity)
        self.client = connection.make_client(will=(self.topic, topics.OFFLINE.encode()))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.network = NetworkThread(connection, self.client, f"mqtt-{connection.identity}")
        self._connected = threading.Event()
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()

    def start(self) -> None:
        self.network.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                timeout: float = 10.0) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0x87 = not authorized)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._acked:
            if not self._acked.wait_for(lambda: info.mid in self._acks, timeout):
                raise PublishTimeout(f"no PUBACK for {topic} within {timeout} s")
            return int(self._acks.pop(info.mid).value)

    def close(self) -> None:
        if self._connected.is_set():
            with contextlib.suppress(PublishTimeout):
                self.publish(self.topic, topics.OFFLINE.encode(), retain=True, timeout=2.0)
        self.network.stop()

    def __enter__(self) -> Presence:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused %s: %s", self.connection.identity, reason_code)
            return
        client.publish(self.topic, topics.ONLINE, qos=1, retain=True)
        self._connected.set()

    @guarded
    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()

    @guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        with self._acked:
            self._acks[mid] = reason_code
            self._acked.notify_all()
