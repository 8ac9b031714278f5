"""An identity's presence on the unit's broker: "online", and "offline" as its last will.

:class:`StatusLink` is the one place where a Custody client connects with its
certificate and leaves a retained last will "offline" on
``custody/<unit>/status/<identity>``: it says "online" on every connection and
"offline" when closed, and the broker says "offline" for it when it dies.
The dock's publisher (:mod:`daemon.mqtt.publisher`) is one; :class:`Presence`
is the plain one, for a device (``device/status_report.py``) or a test, whose
``publish`` sends one QoS 1 message and returns the broker's reason code,
waiting at most ``timeout`` for the PUBACK.

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


class StatusLink:
    """A connection whose status topic says "online" while it is up, "offline" after.

    ``identity`` is whose status topic it is (by default the certificate's
    name; the broker's ACL refuses any other). Subclasses add what they publish
    through ``on_connected`` / ``on_disconnected`` / ``_on_publish``.
    """

    def __init__(self, connection: MqttConnection, unit: str, identity: str | None = None):
        self.connection, self.unit = connection, unit
        self.identity = identity or connection.identity
        self.status_topic = topics.status(unit, self.identity)
        self.client = connection.make_client(will=(self.status_topic, topics.OFFLINE.encode()))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.network = NetworkThread(connection, self.client, f"mqtt-{self.identity}")
        self._connected = threading.Event()
        self.refusal: str | None = None  # why the broker refused our connection, if it did

    @property
    def topic(self) -> str:
        return self.status_topic

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def restart_network(self) -> None:
        """A network thread that died (paho issue 894): a new one on the same client."""
        self._connected.clear()
        self.network = NetworkThread(self.connection, self.client, f"mqtt-{self.identity}")
        self.network.start()

    def say_offline(self, timeout: float = 2.0) -> None:
        """The clean goodbye; if it is not acknowledged, the last will says it."""
        if not self._connected.is_set():
            return
        info = self.client.publish(self.status_topic, topics.OFFLINE, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=timeout)

    # --- for subclasses ------------------------------------------------------------

    def on_connected(self, client: mqtt.Client, flags: Any) -> None:
        """Called on the network thread on a connection, before "online" is sent and
        ``connected`` is true (to reset what the last connection left)."""

    def on_disconnected(self, reason_code: Any) -> None:
        """Called on the network thread when the connection is gone."""

    # --- paho callbacks (network thread) ---------------------------------------------

    @guarded
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.refusal = str(reason_code)
            log.error("broker %s:%d refused %s: %s", self.connection.host, self.connection.port,
                      self.connection.identity, reason_code)
            return
        log.info("connected to %s:%d as %s (session present: %s)", self.connection.host,
                 self.connection.port, self.connection.identity, flags.session_present)
        self.on_connected(client, flags)
        client.publish(self.status_topic, topics.ONLINE, qos=1, retain=True)
        self._connected.set()

    @guarded
    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self.on_disconnected(reason_code)

    @guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        pass


class Presence(StatusLink):
    """Online/offline status of one identity, and plain QoS 1 publishing."""

    def __init__(self, connection: MqttConnection, unit: str):
        super().__init__(connection, unit)
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()

    def start(self) -> None:
        self.network.start()

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                timeout: float = 10.0) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0x87 = not authorized)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._acked:
            if not self._acked.wait_for(lambda: info.mid in self._acks, timeout):
                raise PublishTimeout(f"no PUBACK for {topic} within {timeout} s")
            return int(self._acks.pop(info.mid).value)

    def close(self) -> None:
        self.say_offline()
        self.network.stop()

    def __enter__(self) -> Presence:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        with self._acked:
            self._acks[mid] = reason_code
            self._acked.notify_all()
