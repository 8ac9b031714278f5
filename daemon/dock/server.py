"""The dock's offload server: HTTPS with client certificates, resumable uploads.

Every request is under ``/v1/devices/<device>/`` and must come with a client
certificate from the unit's CA whose CN is that device, enrolled in the trust
file and not on the CRL; otherwise it is refused (403) and an
``unknown_device`` alert raised; a certificate from another CA, or none, fails
the TLS handshake, and that is an ``unknown_device`` alert too, with the
peer's address and the certificate presented (``daemon/dock/handshake.py``).
The calls, in the order a device makes them (docs/offload.md)::

    POST  time                  {"device_time_ns"} -> signed time statement, set_clock
    GET   state                 where the archive ends (next_seq, head), latest receipt
    PUT   ledger/<first_seq>    the new ledger lines -> the media files to send
    HEAD  media/<file>          Upload-Offset: how much of the file the dock holds
    PATCH media/<file>          Upload-Offset: n; the next bytes (one chunk per request)
    POST  commit/<first_seq>    archive, re-read, sign -> the receipt; index, sign a checkpoint
    GET   checkpoint?from=<n>   the newest checkpoint of the device's log, consistency proof
                                from the size n of the one the device holds
    PUT   checkpoint/<size>     the device's cosignature on it (the note, cosigned) -> kept
    POST  checkpoint/<size>/refusal  {"reason"}: the device will not cosign; an alert

Uploads resume as in the IETF resumable-upload draft: a dropped link costs at
most the chunk in flight. Bodies are streamed (``iter_chunked``), so memory
stays bounded whatever the file size. More than ``max_uploads`` at once: 503
with Retry-After; no room in the archive: 507.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from daemon.dock.archive import (
    Conflict,
    DeviceArchive,
    Refused,
    copy_trust,
    remove_archive_temporaries,
)
from daemon.dock.checkpoints import CheckpointConflict, DockCheckpoints
from daemon.dock.config import DockConfig
from daemon.dock.handshake import RefusalLimiter, RefusedHandshake, WatchedTLSSite, watched_context
from daemon.events import UNKNOWN_DEVICE, DockEvents, GuardedEvents, LoggingEvents
from protocol.keys import SigningKey
from protocol.store_reader import read_trust
from protocol.time_statement import TimeStatement, sign_time_statement

log = logging.getLogger("custody.dock")

PREFIX = "/v1/devices/{device}"
_READ = 1 << 18  # bytes taken from the socket at a time
_BUFFER = 1 << 20  # per connection: what aiohttp reads ahead before pausing the socket
_WRITE = 1 << 20  # bytes handed to the disk at a time


def server_tls(config: DockConfig) -> ssl.SSLContext:
    """TLS 1.3 only; a client certificate from the unit's CA is required (a refused
    handshake is seen: daemon/dock/handshake.py)."""
    ctx = watched_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    ctx.load_verify_locations(cafile=config.tls_ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _Revocations:
    """The CRL's serial numbers, re-read whenever the file changes."""

    def __init__(self, path: Path | None):
        self.path, self.mtime, self.serials = path, None, frozenset()

    def revoked(self, serial: int) -> bool:
        if self.path is not None:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self.mtime:
                crl = x509.load_pem_x509_crl(self.path.read_bytes())
                self.serials = frozenset(r.serial_number for r in crl)
                self.mtime = mtime
        return serial in self.serials


class DockServer:
    """The offload service of one dock.

    >>> # server = DockServer(DockConfig.from_file("dock.toml"))
    >>> # await server.start(); ...; await server.stop()
    """

    def __init__(self, config: DockConfig, events: DockEvents | None = None):
        config.require()
        self.config = config
        self.events: DockEvents = GuardedEvents(events or LoggingEvents())
        self.trust = read_trust(config.trust_file)
        if config.dock_id not in self.trust.docks:
            raise ValueError(f"dock {config.dock_id!r} is not in {config.trust_file}")
        self.key = SigningKey.from_pem(Path(config.key_file).read_bytes())
        if self.key.keyid not in self.trust.docks[config.dock_id].keys:
            raise ValueError(f"{config.key_file}: not a key of dock {config.dock_id!r} in the "
                             "trust file")
        self.root = Path(config.archive)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_archive_temporaries(self.root)  # what a cut left of unfinished writes
        copy_trust(self.root, config.trust_file)
        self.revocations = _Revocations(config.crl_file)
        self.checkpoints = DockCheckpoints(self.root, config.dock_id, self.key, self.events)
        self.refusals = RefusalLimiter()
        self.devices: dict[str, DeviceArchive] = {}
        self.uploads_active = 0
        self.writers: dict[tuple[str, str], asyncio.Task] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.stats = {"uploads": 0, "bytes": 0, "offloads": 0, "refused": 0}

    # --- running -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._identity],
                              client_max_size=self.config.max_ledger_bytes)
        app.add_routes([
            web.post(PREFIX + "/time", self.time),
            web.get(PREFIX + "/state", self.state),
            web.put(PREFIX + "/ledger/{first_seq:\\d+}", self.ledger),
            web.head(PREFIX + "/media/{name}", self.media_offset),
            web.patch(PREFIX + "/media/{name}", self.media_upload),
            web.post(PREFIX + "/commit/{first_seq:\\d+}", self.commit),
            web.get(PREFIX + "/checkpoint", self.checkpoint),
            web.put(PREFIX + "/checkpoint/{size:\\d+}", self.cosigned),
            web.post(PREFIX + "/checkpoint/{size:\\d+}/refusal", self.checkpoint_refused),
        ])
        return app

    async def start(self) -> int:
        # A deeper read buffer than aiohttp's 64 KiB: fewer pauses of each socket.
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                    read_bufsize=_BUFFER)
        await self.runner.setup()
        site = WatchedTLSSite(self.runner, self.config.listen_host, self.config.listen_port,
                              server_tls(self.config), on_refused=self._refused_handshake)
        await site.start()
        self.port = self.runner.addresses[0][1]
        log.info("dock %s listening on https://%s:%d/, archive %s", self.config.dock_id,
                 self.config.listen_host, self.port, self.root)
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.checkpoints.close()

    # --- who is asking --------------------------------------------------------------------

    @web.middleware
    async def _identity(self, request: web.Request, handler: Any) -> web.StreamResponse:
        device = request.match_info.get("device")
        if device is None:
            return web.json_response({"error": "no such resource"}, status=404)
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport \
            else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der is None:
            return self._refuse_identity(device, "no_certificate", "no client certificate")
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if names else ""
        if self.revocations.revoked(cert.serial_number):
            return self._refuse_identity(name, "revoked", "its certificate is revoked")
        if name not in self.trust.devices:
            return self._refuse_identity(name, "not_enrolled", "not a device of this unit")
        if name != device:
            return self._refuse_identity(name, "impersonation",
                                         f"certificate of {name!r} used for {device!r}")
        try:
            return await handler(request)
        except Refused as e:
            self.stats["refused"] += 1
            headers = {}
            if "offset" in e.extra:
                headers["Upload-Offset"] = str(e.extra["offset"])
            log.warning("%s %s: %d %s", device, request.path, e.status, e)
            return web.json_response({"error": str(e), **e.extra}, status=e.status,
                                     headers=headers)

    def _refuse_identity(self, device: str, reason: str, message: str) -> web.Response:
        self.stats["refused"] += 1
        log.warning("refused %s: %s", device or "a certificate with no name", message)
        held_back = self.refusals.admit(device, reason)  # a device retrying: one a minute
        if held_back is not None:
            detail = {"device": device or None, "reason": reason, "message": message,
                      "dock": self.config.dock_id}
            if held_back:
                detail["held_back"] = held_back
            self.events.alert(UNKNOWN_DEVICE, detail)
        return web.json_response({"error": f"refused: {message}"}, status=403)

    def _refused_handshake(self, refused: RefusedHandshake) -> None:
        """A client the unit's CA does not vouch for (or with no certificate) knocked."""
        self.stats["refused"] += 1
        held_back = self.refusals.admit(refused.peer.rsplit(":", 1)[0],
                                        refused.sha256 or refused.reason)
        log.warning("refused TLS handshake from %s: %s (%s)%s", refused.peer, refused.reason,
                    refused.error, f"; certificate {refused.subject} sha256 {refused.sha256}"
                    if refused.sha256 else "")
        if held_back is None:
            return  # the same knock again within the window: logged, not alerted
        detail = {"device": None, **refused.detail(), "message": "TLS handshake refused",
                  "dock": self.config.dock_id}
        if held_back:
            detail["held_back"] = held_back
        self.events.alert(UNKNOWN_DEVICE, detail)

    def archive_of(self, device: str) -> DeviceArchive:
        if device not in self.devices:
            self.devices[device] = DeviceArchive(
                self.root, device, self.trust, self.config.dock_id, self.key, self.events,
                self.config.reserve_bytes)
        return self.devices[device]

    # --- the calls --------------------------------------------------------------------------

    async def time(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        try:
            body = await request.json()
            device_time = body["device_time_ns"]
            if not isinstance(device_time, int) or isinstance(device_time, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise Refused("expected {\"device_time_ns\": integer}") from None
        dock_time = time.time_ns()
        offset = dock_time - device_time  # what the device adds to its clock
        statement = TimeStatement(dock=self.config.dock_id, device=device,
                                  dock_time_ns=dock_time, device_time_ns=device_time,
                                  offset_ns=offset)
        self.archive_of(device).clock_offset_ns = offset
        set_clock = abs(offset) > self.config.clock_threshold_s * 1e9
        log.info("%s: clock offset %+.3f s%s", device, offset / 1e9,
                 "; setting it" if set_clock else "")
        return web.json_response({"statement": sign_time_statement(statement, self.key.signer()),
                                  "dock_time_ns": time.time_ns(), "set_clock": set_clock})

    async def state(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        state = await asyncio.to_thread(self.archive_of(device).state)
        state.update(await asyncio.to_thread(self.checkpoints.status, device,
                                             int(state["next_seq"])))
        return web.json_response(state)

    async def ledger(self, request: web.Request) -> web.Response:
        archive = self.archive_of(request.match_info["device"])
        lines = await request.read()
        result = await asyncio.to_thread(archive.stage, int(request.match_info["first_seq"]),
                                         lines)
        log.info("%s: staged entries %d..%d, %d files to receive", archive.device,
                 result["first_seq"], result["last_seq"], len(result["media"]))
        return web.json_response(result)

    def _file_name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
            device = request.match_info["device"]
            self.events.alert("integrity_failure", {"device": device, "reason": "bad_file_name",
                                                    "message": f"file name {name!r}"})
            raise Refused(f"{name!r} is not a plain file name")
        return name

    async def media_offset(self, request: web.Request) -> web.Response:
        archive = self.archive_of(request.match_info["device"])
        offset, size, done = await asyncio.to_thread(archive.offset, self._file_name(request))
        headers = {"Upload-Offset": str(offset), "Upload-Length": str(size),
                   "Upload-Complete": "?1" if done else "?0", "Cache-Control": "no-store"}
        return web.Response(status=204, headers=headers)

    async def media_upload(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        name = self._file_name(request)
        archive = self.archive_of(device)
        try:
            offset = int(request.headers["Upload-Offset"])
        except (KeyError, ValueError):
            raise Refused("Upload-Offset header required") from None
        # A new request for the same file takes over from one whose link dropped.
        previous = self.writers.get((device, name))
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        if self.uploads_active >= self.config.max_uploads:
            return web.json_response({"error": "busy"}, status=503,
                                     headers={"Retry-After": str(self.config.retry_after_s)})
        task = asyncio.current_task()
        assert task is not None
        self.writers[(device, name)] = task
        self.uploads_active += 1
        try:
            upload = await asyncio.to_thread(archive.open_upload, name, offset,
                                             request.content_length)
            received, done = await self._receive(request, archive, upload)
        finally:
            self.uploads_active -= 1
            if self.writers.get((device, name)) is task:
                del self.writers[(device, name)]
        return web.Response(status=204, headers={
            "Upload-Offset": str(received), "Upload-Complete": "?1" if done else "?0"})

    async def _receive(self, request: web.Request, archive: DeviceArchive,
                       upload: Any) -> tuple[int, bool]:
        fd = os.open(upload.part, os.O_WRONLY | os.O_APPEND)
        try:
            pending: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_chunked(_READ):
                pending.append(chunk)
                size += len(chunk)
                if size >= _WRITE:
                    await asyncio.to_thread(archive.write, upload, fd, b"".join(pending))
                    self.stats["bytes"] += size
                    pending, size = [], 0
            if pending:
                await asyncio.to_thread(archive.write, upload, fd, b"".join(pending))
                self.stats["bytes"] += size
            return await asyncio.to_thread(archive.finish_upload, upload, fd)
        finally:
            os.close(fd)

    async def commit(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        archive = self.archive_of(device)
        report = await asyncio.to_thread(archive.commit, int(request.match_info["first_seq"]))
        self.stats["offloads"] += 1
        rate = report.media_bytes / max(report.seconds, 1e-6) / 2**20
        log.info("%s: archived entries %d..%d, %d files, %.1f MiB at %.1f MiB/s; receipt signed",
                 device, report.first_seq, report.last_seq, len(report.media),
                 report.media_bytes / 2**20, rate)
        self.events.on_offloaded(device, archive.store, report)  # guarded: never undoes it
        # Indexed for the custodian, and a checkpoint for the device to cosign; a dock that
        # will not sign (its copy was changed) has raised an alert: the receipt stands.
        size = await asyncio.to_thread(self.checkpoints.after_commit, device)
        return web.json_response({"receipt": report.receipt, "checkpoint_size": size})

    # --- the cosigned checkpoint (docs/archive.md, ADR 0040) --------------------------------

    async def checkpoint(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        raw = request.query.get("from", "0")
        if not raw.isdigit():
            raise Refused(f"from={raw!r}: the size of the checkpoint the device holds")
        try:
            note, proof = await asyncio.to_thread(self.checkpoints.proposal, device, int(raw))
        except CheckpointConflict as e:
            raise Conflict(str(e)) from None
        return web.json_response({"checkpoint": note.decode(),
                                  "proof": [base64.b64encode(h).decode() for h in proof]})

    async def cosigned(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        note = await request.read()
        try:
            await asyncio.to_thread(self.checkpoints.accept, device, note,
                                    int(request.match_info["size"]))
        except CheckpointConflict as e:
            raise Conflict(str(e)) from None
        return web.Response(status=204)

    async def checkpoint_refused(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        try:
            body = await request.json()
            reason, note = body["reason"], body.get("checkpoint")
            if not isinstance(reason, str) or not isinstance(note, str | None):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise Refused('expected {"reason": text, "checkpoint": note or null}') from None
        await asyncio.to_thread(self.checkpoints.refused, device,
                                note.encode() if note else None, reason)
        return web.Response(status=204)
