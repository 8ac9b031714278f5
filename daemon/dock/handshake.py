"""The dock's TLS handshake, watched: a client the unit's CA does not vouch for is seen.

A client certificate from another CA (or none at all) fails the handshake
inside OpenSSL, before aiohttp — and so before the dock's identity check —
ever sees the connection. Someone trying a stolen or home-made certificate at
the dock must still show, so :class:`WatchedTLSSite` accepts plain TCP and
does the handshake itself (``loop.start_tls``): when it fails it knows the
peer's address and OpenSSL's reason, and calls ``on_refused`` with a
:class:`RefusedHandshake`. The certificate the client presented (its subject,
issuer and SHA-256 fingerprint) is taken from the TLS Certificate message as
OpenSSL reads it, through the context's message callback. OpenSSL still does
the chain check and refuses: nothing here decides who is trusted.

    ctx = watched_context()            # an ssl.SSLContext, set up as usual
    site = WatchedTLSSite(runner, "127.0.0.1", 0, ctx, on_refused=print)
    await site.start()

The message callback is CPython's ``SSLContext._msg_callback`` (there since
3.8, undocumented); where it is missing the refusal is still reported, with
the address and the reason only.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("custody.dock.tls")

HANDSHAKE_TIMEOUT_S = 10.0
_HANDSHAKE, _CERTIFICATE = 22, 11  # TLS content type and handshake message type


@dataclass(frozen=True)
class RefusedHandshake:
    """A TLS handshake the dock refused: who knocked, with what, and why."""

    peer: str  # "host:port"
    reason: str  # no_certificate, foreign_ca, bad_certificate
    error: str  # OpenSSL's words
    subject: str | None = None  # of the certificate presented, if one was
    name: str | None = None  # its CN: the identity it claims, unproven
    issuer: str | None = None
    serial: int | None = None
    sha256: str | None = None  # of the certificate's DER

    def detail(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class _Holder:
    """Per connection: the SSLObject made for it (set by :class:`WatchedContext`)."""

    sslobj: ssl.SSLObject | None = None


_CONNECTION: contextvars.ContextVar[_Holder] = contextvars.ContextVar("custody_tls_connection")


class WatchedContext(ssl.SSLContext):
    """An SSLContext that keeps each connection's SSLObject where its handshake can find it."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        obj = super().wrap_bio(*args, **kwargs)
        holder = _CONNECTION.get(None)
        if holder is not None:
            holder.sslobj = obj
        return obj


def _remember_certificate(conn: Any, direction: str, version: Any, content_type: Any,
                          msg_type: Any, data: bytes) -> None:
    """OpenSSL's message callback: keep the first certificate a client sends us."""
    try:
        if direction == "read" and int(content_type) == _HANDSHAKE and \
                int(msg_type) == _CERTIFICATE:
            der = first_certificate(data)
            if der is not None:
                conn.custody_presented = der
    except Exception:  # noqa: BLE001 — never disturb a handshake
        log.debug("could not read a Certificate message", exc_info=True)


def first_certificate(message: bytes) -> bytes | None:
    """The first DER certificate of a TLS 1.3 Certificate handshake message (RFC 8446 4.4.2).

    >>> first_certificate(bytes([11, 0, 0, 4, 0, 0, 0, 0])) is None  # an empty list
    True
    """
    if len(message) < 5 or message[0] != _CERTIFICATE:
        return None
    at = 4 + 1 + message[4]  # header, certificate_request_context
    if len(message) < at + 6:
        return None
    length = int.from_bytes(message[at + 3:at + 6], "big")
    der = message[at + 6:at + 6 + length]
    return der if length and len(der) == length else None


def watched_context() -> WatchedContext:
    """A TLS server context whose refused handshakes :class:`WatchedTLSSite` can describe."""
    ctx = WatchedContext(ssl.PROTOCOL_TLS_SERVER)
    if hasattr(ctx, "_msg_callback"):
        ctx._msg_callback = _remember_certificate
    return ctx


def describe(peer: str, error: BaseException, der: bytes | None) -> RefusedHandshake:
    """What a refused handshake tells: the reason in our words, and the certificate."""
    text = str(getattr(error, "verify_message", "") or error)
    if getattr(error, "reason", "") == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        reason = "no_certificate"
    elif "issuer" in text or "self-signed" in text or "self signed" in text:
        reason = "foreign_ca"
    elif "expired" in text or "not yet valid" in text:
        reason = "expired"
    else:
        reason = "bad_certificate"
    if der is None:
        return RefusedHandshake(peer, reason, text)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return RefusedHandshake(peer, reason, text, sha256=hashlib.sha256(der).hexdigest())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return RefusedHandshake(peer, reason, text, cert.subject.rfc4514_string(),
                            str(names[0].value) if names else None,
                            cert.issuer.rfc4514_string(), cert.serial_number,
                            hashlib.sha256(der).hexdigest())


def _is_certificate_refusal(error: BaseException) -> bool:
    """OpenSSL refused the client's certificate (or its lack of one), not a broken link."""
    return isinstance(error, ssl.SSLCertVerificationError) or getattr(error, "reason", "") in (
        "PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "NO_CERTIFICATE_RETURNED")


class _Held(asyncio.Protocol):
    """What arrives between the end of the handshake and the app protocol's start."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[BaseException | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = (exc,)


class _Gate(asyncio.Protocol):
    """One accepted TCP connection: handshake, then aiohttp's protocol; or a refusal."""

    def __init__(self, site: WatchedTLSSite):
        self.site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits for start_tls
        task = asyncio.get_running_loop().create_task(self.site.upgrade(transport))
        self.site.handshakes.add(task)
        task.add_done_callback(self.site.handshakes.discard)

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


class WatchedTLSSite(web.BaseSite):
    """An aiohttp site on HTTPS whose refused handshakes are reported, not just dropped."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext,
                 on_refused: Callable[[RefusedHandshake], None],
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S):
        super().__init__(runner, ssl_context=ssl_context)
        self.host, self.port = host, port
        self.on_refused, self.handshake_timeout_s = on_refused, handshake_timeout_s
        self.handshakes: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Gate(self), self.host, self.port,
                                                backlog=self._backlog)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self.handshakes):
            task.cancel()
        await super().stop()

    async def upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        peername = transport.get_extra_info("peername") or ("?", 0)
        peer = f"{peername[0]}:{peername[1]}"
        holder = _Holder()
        _CONNECTION.set(holder)  # this task's own context: seen by wrap_bio below
        held = _Held()
        assert self._ssl_context is not None
        try:
            tls = await loop.start_tls(transport, held, self._ssl_context, server_side=True,
                                       ssl_handshake_timeout=self.handshake_timeout_s)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as e:
            transport.close()
            der = getattr(holder.sslobj, "custody_presented", None)
            if _is_certificate_refusal(e):
                self.on_refused(describe(peer, e, der))
            else:  # not TLS, or the link went: nothing to say about a device
                log.info("TLS handshake with %s failed: %s", peer, e)
            return
        if tls is None:  # start_tls gives None when the peer went mid-handshake (a probe)
            transport.close()
            log.info("TLS handshake with %s: the peer closed the connection", peer)
            return
        server = self._runner.server
        assert server is not None
        app = server()
        tls.set_protocol(app)
        app.connection_made(tls)
        for data in held.data:
            app.data_received(data)
        if held.eof:
            app.eof_received()
        if held.lost is not None:
            app.connection_lost(held.lost[0])


class RefusalLimiter:
    """One alert per key (e.g. peer host and certificate) per ``window_s``: a client
    knocking in a loop must not fill the outbox. What was held back is counted."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}

    def admit(self, *key: str) -> int | None:
        """None: hold this one back; else how many like it were held back before it."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) > 4096:  # bounded, whatever the number of knockers
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last else 0
