"""The dock's publisher: attestations and alerts through the outbox to the broker.

Nothing is published straight from the caller: :meth:`DockPublisher.attest`
and :meth:`DockPublisher.alert` sign the statement, commit it to the
:class:`~daemon.mqtt.outbox.Outbox` and return; a sender thread publishes
what is pending whenever the broker is connected and marks each message
delivered only on a PUBACK with a success reason code. A refused message
(e.g. "Not authorized": a dock certificate the ACL does not list) stays
pending, is logged as an error, and is tried again later; a message with no
PUBACK within ``ack_timeout_s`` counts as failed, the connection is dropped
and everything pending is sent again on the next one. So after a broker outage
or a dock restart everything is delivered, possibly twice: consumers
deduplicate by the statement's id.

    publisher = DockPublisher(connection, unit="U1", dock="DOCK-01",
                              signer=dock_key.signer(), outbox=Outbox(path))
    publisher.start()
    publisher.attest(attestation)              # -> its id, once it is on disk
    publisher.wait_delivered(attestation.id, timeout=5)
    publisher.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from securesystemslib.signer import Signer

from daemon.mqtt import topics
from daemon.mqtt.client import SUCCESS_MAX, MqttConnection, guarded
from daemon.mqtt.outbox import Outbox
from daemon.mqtt.presence import StatusLink
from daemon.pki import check_name
from protocol.alert import make_alert, sign_alert
from protocol.attestation import Attestation, sign_attestation
from protocol.envelope import encode_json

log = logging.getLogger("custody.mqtt.publisher")

MAX_IN_FLIGHT = 64
RETRY_REFUSED_S = 30.0  # a message the broker refused is tried again after this
_EARLY_ACK_S = 10.0  # how long a PUBACK that came before its publish() returned is kept


class DockPublisher(StatusLink):
    """Publishes a dock's attestations, alerts and status; see the module doc."""

    def __init__(self, connection: MqttConnection, unit: str, dock: str, signer: Signer,
                 outbox: Outbox | Path, ack_timeout_s: float = 10.0,
                 retry_refused_s: float = RETRY_REFUSED_S):
        super().__init__(connection, unit, identity=dock)  # its status: the dock's own
        self.dock, self.signer = dock, signer
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self.ack_timeout_s, self.retry_refused_s = ack_timeout_s, retry_refused_s
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-send-{dock}",
                                        daemon=True)
        self._lock = threading.Lock()  # guards the dicts below; never held inside paho
        self._in_flight: dict[int, tuple[int, str, float]] = {}  # mid -> (row, key, sent at)
        self._early: dict[int, tuple[Any, float]] = {}  # mid -> (reason code, when)
        self._refused: dict[int, float] = {}  # row -> not before (monotonic)
        self._delivered = threading.Condition()
        self._kick = threading.Event()
        self._stop = threading.Event()

    # --- what the dock calls ------------------------------------------------------

    def start(self) -> None:
        self.network.start()
        self._sender.start()

    def attest(self, attestation: Attestation) -> str:
        """Sign and keep the attestation; it goes out retained on its device's topic."""
        if (attestation.unit, attestation.dock) != (self.unit, self.dock):
            raise ValueError(f"attestation of {attestation.unit}/{attestation.dock} given to "
                             f"the publisher of {self.unit}/{self.dock}")
        check_name(attestation.device)  # a topic level: no '/', '+' or '#'
        envelope = sign_attestation(attestation, self.signer)
        self.outbox.put_attestation(topics.attestation(self.unit, attestation.device),
                                    encode_json(envelope), attestation.id, attestation.device,
                                    attestation.last_seq)
        self._kick.set()
        return attestation.id

    def alert(self, kind: str, device: str | None, detail: dict[str, Any],
              utc_ns: int | None = None) -> str:
        """Sign and keep an alert for ``custody/<unit>/alert/<kind>`` (not retained)."""
        if kind not in topics.ALERT_KINDS:  # still sent: an alert is never dropped
            log.warning("alert kind %r is not one of %s", kind, ", ".join(topics.ALERT_KINDS))
        check_name(kind)  # it is a topic level: no '/', '+' or '#'
        # Whatever the caller put in the detail (paths, numbers), as JSON it can be signed.
        plain = json.loads(json.dumps(detail, default=str))
        alert = make_alert(self.unit, self.dock, kind, device, plain,
                           time.time_ns() if utc_ns is None else utc_ns)
        self.outbox.put(topics.alert(self.unit, kind), encode_json(sign_alert(alert, self.signer)),
                        key=alert.id, qos=1, retain=False)
        self._kick.set()
        return alert.id

    def wait_delivered(self, key: str, timeout: float) -> bool:
        """True once the broker has acknowledged ``key`` (in this process or before)."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while True:
                status = self.outbox.status(key)
                if status is not None and status[0] is not None:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._delivered.wait(min(left, 0.5))

    def flush(self, timeout: float) -> bool:
        """True once nothing is pending in the outbox (e.g. before a planned stop)."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while self.outbox.count_pending():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._delivered.wait(min(left, 0.5))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Say "offline", stop the threads and close the outbox (pending rows stay)."""
        self._stop.set()
        self._kick.set()
        self.say_offline(timeout=min(timeout, 2.0))
        self._sender.join(timeout)
        self.network.stop(timeout)
        self.outbox.close()

    def __enter__(self) -> DockPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paho callbacks (network thread) -------------------------------------------

    def on_connected(self, client: mqtt.Client, flags: Any) -> None:
        with self._lock:
            # Everything pending is sent again on this connection; acks of what
            # paho itself re-sends under old ids are then only duplicates.
            self._in_flight.clear()
            self._early.clear()

    @guarded
    def _on_connect(self, *args: Any) -> None:
        super()._on_connect(*args)
        if self.connected:
            self._kick.set()

    def on_disconnected(self, reason_code: Any) -> None:
        if not self._stop.is_set():
            log.warning("disconnected from the broker: %s", reason_code)

    @guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        with self._lock:
            sent = self._in_flight.pop(mid, None)
            if sent is None:  # acked before publish() returned to the sender, or a status
                self._early[mid] = (reason_code, time.monotonic())
                return
        self._settle(sent[0], sent[1], reason_code)

    def _settle(self, row: int, key: str, reason_code: Any) -> None:
        code = int(getattr(reason_code, "value", reason_code))
        if code > SUCCESS_MAX:
            log.error("broker refused %s (%s): %s; kept in the outbox", key, row, reason_code)
            self.outbox.failed(row, str(reason_code), code)
            with self._lock:
                self._refused[row] = time.monotonic() + self.retry_refused_s
            return
        self.outbox.delivered(row, code)
        with self._delivered:
            self._delivered.notify_all()

    # --- the sender thread ----------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(0.25)
            self._kick.clear()
            try:
                self._check_network()
                self._expire()
                if self._connected.is_set():
                    self._send_pending()
            except Exception:  # noqa: BLE001 — the sender must go on; the rows are on disk
                log.exception("sending from the outbox failed")
                self._stop.wait(1.0)

    def _check_network(self) -> None:
        if not self.network.alive and not self._stop.is_set():
            log.error("the MQTT network thread is gone; starting a new one")
            self.restart_network()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [(mid, s) for mid, s in self._in_flight.items()
                    if now - s[2] > self.ack_timeout_s]
            for mid, _ in late:
                del self._in_flight[mid]
            for mid in [m for m, (_, t) in self._early.items() if now - t > _EARLY_ACK_S]:
                del self._early[mid]
        for _, (row, key, _) in late:
            log.error("no PUBACK for %s within %.1f s; reconnecting", key, self.ack_timeout_s)
            self.outbox.failed(row, f"no PUBACK within {self.ack_timeout_s} s")
        if late and self._connected.is_set():
            self._connected.clear()
            self.network.reconnect()

    def _send_pending(self) -> None:
        now = time.monotonic()
        with self._lock:
            busy = {row for row, _, _ in self._in_flight.values()}
            self._refused = {r: t for r, t in self._refused.items() if t > now}
            refused = set(self._refused)
        room = MAX_IN_FLIGHT - len(busy)
        for msg in self.outbox.pending(limit=len(busy) + len(refused) + room):
            if room <= 0 or self._stop.is_set() or not self._connected.is_set():
                return
            if msg.row in busy or msg.row in refused:
                continue
            info = self.client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("publish of %s not sent (%s); will retry", msg.key,
                            mqtt.error_string(info.rc))
                return
            self.outbox.sent(msg.row)
            room -= 1
            with self._lock:
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._in_flight[info.mid] = (msg.row, msg.key, time.monotonic())
            if early is not None:
                self._settle(msg.row, msg.key, early[0])
