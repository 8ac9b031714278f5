"""How every Custody MQTT client connects: v5, TLS with a client certificate, a session.

- MQTT v5 only: under 3.1.1 a publish the ACL denies is still acknowledged as
  a success; under v5 the PUBACK says "Not authorized".
- TLS with the unit's CA and the client's own certificate; the broker takes
  the certificate's CN as the user name, and we use it as the client id, so
  the broker keeps one session per identity.
- A persistent session (``clean_start=False`` with a session expiry), so QoS 1
  messages for a subscriber that was away are kept for it.
- Every callback is guarded: an exception in a paho callback can kill paho's
  network thread silently (paho issue 894). ``NetworkThread`` runs the loop
  itself, restarts it if it ever returns or raises, and says so in the log.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("custody.mqtt")

SUCCESS_MAX = 0x7F  # MQTT v5: reason codes below 0x80 are successes (0x10: no subscribers)

F = TypeVar("F", bound=Callable[..., Any])


class MqttSettingsError(ValueError):
    """A broker URL or TLS file that cannot be used; names it."""


def guarded(fn: F) -> F:
    """A paho callback that logs its exceptions instead of raising them into paho."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 — never let one reach paho's network thread
            log.exception("MQTT callback %s failed", getattr(fn, "__name__", fn))
            return None

    return wrapper  # type: ignore[return-value]


def certificate_cn(path: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as e:
        raise MqttSettingsError(f"{path}: {e.strerror}") from e
    except ValueError as e:
        raise MqttSettingsError(f"{path}: not a PEM certificate") from e
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise MqttSettingsError(f"{path}: the certificate has no CN (the broker's user name)")
    return str(names[0].value)


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtts://HOST:PORT`` -> (host, port). Plain ``mqtt://`` is refused: no identity."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "mqtts":
        raise MqttSettingsError(f"broker {url!r}: use mqtts://HOST:PORT (TLS with client "
                                "certificates is how the broker knows who publishes)")
    try:
        port = parsed.port or 8883
    except ValueError as e:
        raise MqttSettingsError(f"broker {url!r}: bad port") from e
    if not parsed.hostname:
        raise MqttSettingsError(f"broker {url!r}: no host")
    return parsed.hostname, port


@dataclass(frozen=True)
class MqttConnection:
    """Where the broker is and which certificate we present."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    keepalive: int = 20
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
    # A context holding a key that lives only in memory (a device's OTP-wrapped TLS
    # key, device/tls_identity.py); without it, ``cert`` and ``key`` are read as files.
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_url(cls, url: str, ca: Path, cert: Path, key: Path, **kw: Any) -> MqttConnection:
        host, port = parse_broker_url(url)
        for what, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
            if not Path(path).is_file():
                raise MqttSettingsError(f"{what} {path}: no such file")
        return cls(host, port, Path(ca), Path(cert), Path(key), **kw)

    @functools.cached_property
    def identity(self) -> str:
        """Our certificate's CN: the broker's user name for us, and our client id."""
        return certificate_cn(self.cert)

    def make_client(self, will: tuple[str, bytes] | None = None) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.identity,
                             protocol=mqtt.MQTTv5, reconnect_on_failure=True)
        if self.tls_context is not None:
            client.tls_set_context(self.tls_context)
        else:
            client.tls_set(ca_certs=str(self.ca), certfile=str(self.cert), keyfile=str(self.key))
        client.suppress_exceptions = True  # and every callback of ours is guarded as well
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)
        client.enable_logger(log)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        return client

    def connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        return props

    def connect_async(self, client: mqtt.Client) -> None:
        client.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False,
                             properties=self.connect_properties())


class NetworkThread:
    """paho's network loop on a thread of ours, restarted if it ever ends unasked."""

    def __init__(self, connection: MqttConnection, client: mqtt.Client, name: str):
        self.connection, self.client = connection, client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.restarts = 0
        self._asked = False

    def start(self) -> None:
        if self._thread.is_alive():
            return
        self.connection.connect_async(self.client)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.loop_forever(retry_first_connection=True)
            except Exception:  # noqa: BLE001 — logged; the loop is started again
                log.exception("MQTT network loop failed")
            if self._stop.is_set():
                return
            self.restarts += 1
            if self._asked:
                self._asked = False
                log.info("MQTT connection dropped on purpose; connecting again")
            else:
                log.warning("MQTT network loop ended unasked (%d); connecting again",
                            self.restarts)
            self._stop.wait(self.connection.reconnect_min_s)
            try:
                self.connection.connect_async(self.client)
            except Exception:  # noqa: BLE001
                log.exception("MQTT connect_async failed")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def reconnect(self) -> None:
        """Drop the connection (a stuck one): the loop ends and connects again."""
        self._asked = True
        self.client.disconnect()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            log.exception("MQTT disconnect failed")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("MQTT network loop did not end within %.1f s", timeout)
