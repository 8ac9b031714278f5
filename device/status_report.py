"""The device's status on the unit's broker: state, battery, storage, offload progress.

A :class:`StatusReporter` publishes, retained at QoS 1, a small JSON object on
``custody/<unit>/status/<device>`` (MQTT v5, TLS with the device's own TLS
certificate; the broker's ACL lets it publish only under its own id). Its last
will, left with the broker at every connection, is the word ``offline``: a
device that dies, loses its link or is switched off shows as offline to every
watcher, without saying so itself.

It never holds up capture or sealing: a sampler thread reads the recorder's
status every ``interval_s`` and offers it to a bounded queue (a full queue
drops its *oldest* status: only the latest matters); a sender thread publishes
from that queue only while connected, one message in flight, waiting at most
``ack_timeout_s`` for each PUBACK. A broker that is down, slow or refusing
costs the recorder nothing.

    reporter = StatusReporter(connection, unit="U1", source=agent_status, interval_s=10)
    reporter.start()
    ...
    reporter.close()  # "offline", cleanly

The MQTT link itself (connection, last will, "online"/"offline") is the unit's
one implementation in ``daemon/mqtt/presence.py``, which the dock uses too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from daemon.mqtt.client import SUCCESS_MAX, MqttConnection, MqttSettingsError
from daemon.mqtt.presence import Presence, PublishTimeout
from device.config import ConfigError
from device.tls_identity import load_client_identity

log = logging.getLogger("custody.status")

QUEUE_SIZE = 8
OFFLOAD_KEYS = ("state", "files_done", "files_total", "bytes_done", "bytes_total",
                "rate_bytes_per_s", "last_receipt_seq", "last_error")


def status_message(device: str, status: dict[str, Any], utc_ns: int) -> dict[str, Any]:
    """What a watcher needs of the recorder's full status (``custody recorder``'s ``status``).

    >>> status_message("CAM-1", {"state": "standby", "free_bytes": 5}, 7)["storage"]
    {'free_bytes': 5}
    """
    battery = status.get("battery") or {}
    offload = status.get("offload")
    return {
        "status": "online", "device": device, "utc_ns": utc_ns,
        "state": status.get("state"), "recording": status.get("recording"),
        "officer": status.get("officer"),
        "battery": {k: battery.get(k) for k in ("percent", "minutes_left", "charging")},
        "storage": {"free_bytes": status.get("free_bytes")},
        "overdue": bool(status.get("overdue")), "docked": status.get("docked"),
        "offload": None if offload is None else {k: offload.get(k) for k in OFFLOAD_KEYS},
    }


class StatusReporter:
    """The device's retained status with a last will "offline"; see the module doc."""

    def __init__(self, connection: MqttConnection, unit: str,
                 source: Callable[[], dict[str, Any]], interval_s: float = 10.0,
                 queue_size: int = QUEUE_SIZE, ack_timeout_s: float = 5.0,
                 clock: Callable[[], int] = time.time_ns):
        self.presence = Presence(connection, unit)
        self.device = connection.identity
        self.source, self.interval_s, self.clock = source, interval_s, clock
        self.ack_timeout_s = ack_timeout_s
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_size)
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_loop, name="status-sample",
                                          daemon=True),
                         threading.Thread(target=self._send_loop, name="status-send",
                                          daemon=True)]
        self.published = self.dropped = self.refused = self.timeouts = 0
        self.last_code: int | None = None

    @property
    def topic(self) -> str:
        return self.presence.status_topic

    def start(self) -> StatusReporter:
        self.presence.start()
        for t in self._threads:
            t.start()
        return self

    def offer(self, status: dict[str, Any]) -> None:
        """Queue a status to publish; never blocks (a full queue drops its oldest)."""
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(status)
            self._ready.notify()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        self.presence.close()

    # --- threads ------------------------------------------------------------------

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.offer(status_message(self.device, self.source(), self.clock()))
            except Exception:  # noqa: BLE001 — a status that cannot be read is skipped
                log.exception("reading the device status failed")
            self._stop.wait(self.interval_s)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            if not self.presence.wait_connected(0.5):
                continue  # meanwhile the queue keeps the newest few
            with self._ready:
                if not self._queue:
                    self._ready.wait(0.5)
                if not self._queue or self._stop.is_set():
                    continue
                status = self._queue.popleft()
            self._publish(status)

    def _publish(self, status: dict[str, Any]) -> None:
        payload = json.dumps(status, sort_keys=True, default=str).encode()
        try:
            code = self.presence.publish(self.topic, payload, retain=True,
                                         timeout=self.ack_timeout_s)
        except PublishTimeout:
            self.timeouts += 1
            log.warning("no PUBACK for the status within %.1f s", self.ack_timeout_s)
            return
        except (RuntimeError, ValueError) as e:  # paho: not connected any more
            log.warning("status not published: %s", e)
            return
        self.last_code = code
        if code > SUCCESS_MAX:
            self.refused += 1
            log.error("the broker refused the status on %s (reason code 0x%02x)", self.topic,
                      code)
        else:
            self.published += 1


def status_connection(config: Any, tls_key: bytes | None = None) -> MqttConnection | None:
    """The broker link the recorder's settings describe (``mqtt_broker`` and the device's
    TLS files), checked now so a bad value stops the recorder naming its key; None: no MQTT.
    ``tls_key`` is the device's TLS key unwrapped in memory (ADR 0046): the key file on
    the card is then never read as a key."""
    if not config.mqtt_broker:
        return None
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        if getattr(config, key) is None:
            raise ConfigError(key, "must be set with mqtt_broker", config.source)
    try:
        connection = MqttConnection.from_url(config.mqtt_broker, config.tls_ca_file,
                                             config.tls_cert_file, config.tls_key_file)
        identity = connection.identity
    except MqttSettingsError as e:
        raise ConfigError("mqtt_broker", str(e), config.source) from None
    if tls_key is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.tls_ca_file))
        load_client_identity(ctx, config.tls_cert_file, tls_key)
        connection = dataclasses.replace(connection, tls_context=ctx)
    if identity != config.device_id:
        raise ConfigError("tls_cert_file", f"the certificate is {identity!r}'s, not device "
                          f"{config.device_id!r}'s (the broker's ACL goes by it)", config.source)
    return connection
