"""The archive's web view for the custodian, the unit head and the auditor.

    custody archive web --archive DIR [--key ARCHIVE_SECRET_KEY] [--port N]

Log-in with a role (daemon/archive/users.py); every page view is written to
the audit log with who saw what. Pages: search (case, party, officer, device,
category, recording and storage dates) and the two queues (not classified;
handed over late), a recording's page (a timeline of the shift: segments as
bars, declared gaps with their reason and voice note, unexplained gaps in red,
markers, exemptions; the verification verdict; playback with Range requests;
its audit trail), exemptions for the unit head to acknowledge, and the audit
log. Served on 127.0.0.1 by default; put it behind the dock's TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from daemon.archive.archive import Archive, ArchiveError, signed_entries
from daemon.archive.audit import AuditError, verify_audit
from daemon.archive.index import Query
from daemon.archive.package import export_recording
from daemon.archive.users import User, Users
from protocol.archive_check_cli import read_extras
from protocol.archive_device_check import check_archived_device
from protocol.entries import Segment, VoiceNote
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import decrypt_segment
from protocol.verify import ContinuityReport, verify

SESSION_COOKIE = "custody_session"
SESSION_SECONDS = 8 * 3600
_STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:70em} table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:.2em .6em;text-align:left}
nav a{margin-right:1em} .timeline{position:relative;height:3.2em;background:#eee;margin:1em 0}
.timeline div{position:absolute;top:.6em;height:1.4em}
.segment{background:#3a7;border-right:2px solid #fff;box-sizing:border-box}
.gap-declared{background:#fc3} .gap-unexplained{background:#d22}
.marker{width:2px;background:#026;top:0!important;height:3.2em!important}
.exemption{width:4px;background:#a0a;top:0!important;height:3.2em!important}
.verdict-intact{color:#161} .verdict-broken{color:#b00} .verdict-intact_unexplained_gaps{color:#a60}
"""


@dataclass
class Session:
    user: User
    csrf: str
    expires: float
    played: set


SESSION = web.RequestKey("session", Session)
FORM = web.RequestKey("form", object)


def _utc(ns: int | None) -> str:
    return "-" if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).strftime(
        "%Y-%m-%d %H:%M:%S")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _date_ns(text: str | None, end: bool = False) -> int | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9) + (86_400 * 10**9 if end and len(text) == 10 else 0)


class WebView:
    def __init__(self, archive: Archive, users: Users, secret: ArchiveSecretKey | None,
                 cache: Path):
        self.archive, self.users, self.secret, self.cache = archive, users, secret, cache
        self.sessions: dict[str, Session] = {}
        self._reports: dict[tuple, tuple[ContinuityReport, list]] = {}
        self.lock = asyncio.Lock()  # one archive (SQLite connection) for all requests

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([
            web.get("/login", self.login_page), web.post("/login", self.login),
            web.post("/logout", self.logout), web.get("/", self.search),
            web.get("/queue/not-classified", self.queue_unclassified),
            web.get("/queue/late", self.queue_late),
            web.get("/recording/{device}/{seq:\\d+}", self.recording),
            web.post("/recording/{device}/{seq:\\d+}/annotate", self.annotate),
            web.get("/media/{device}/{seq:\\d+}", self.media),
            web.post("/recording/{device}/{seq:\\d+}/export", self.export),
            web.get("/exemptions", self.exemptions),
            web.post("/exemptions/{device}/{seq:\\d+}/acknowledge", self.acknowledge),
            web.get("/audit", self.audit_page),
        ])
        return app

    # --- sessions -------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path == "/login":
            return await handler(request)
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None or session.expires < time.time():
            raise web.HTTPFound("/login")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
                raise web.HTTPForbidden(text="stale form; reload the page")
            request[FORM] = form
        return await handler(request)

    def _need(self, request: web.Request, permission: str) -> User:
        user = request[SESSION].user
        if not user.may(permission):
            self.archive.audit.append(user.who, "view", request.path, denied=permission)
            raise web.HTTPForbidden(text=f"a {user.role} may not {permission}")
        return user

    async def login_page(self, request: web.Request) -> web.Response:
        failed = "<p class=error>Wrong name or password.</p>" if "failed" in request.query else ""
        return self._html("Log in", f"""{failed}<form method=post action=/login>
<label>Name <input name=name id=name></label>
<label>Password <input name=password id=password type=password></label>
<button id=login>Log in</button></form>""", None)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        name = str(form.get("name", ""))
        user = await asyncio.to_thread(self.users.login, name, str(form.get("password", "")))
        if user is None:
            self.archive.audit.append(f"unknown:{name[:40] or '-'}", "login", None, ok=False)
            raise web.HTTPFound("/login?failed")
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(user, secrets.token_urlsafe(16),
                                       time.time() + SESSION_SECONDS, set())
        self.archive.audit.append(user.who, "login", None, ok=True)
        response = web.HTTPFound("/")
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        raise web.HTTPFound("/login")

    # --- pages ----------------------------------------------------------------

    def _html(self, title: str, body: str, session: Session | None) -> web.Response:
        nav = ""
        if session is not None:
            u = session.user
            links = ['<a href="/">Search</a>', '<a href="/queue/not-classified">Not classified'
                     '</a>', '<a href="/queue/late">Handed over late</a>',
                     '<a href="/exemptions">Exemptions</a>']
            if u.may("audit"):
                links.append('<a href="/audit">Audit log</a>')
            nav = (f"<nav>{''.join(links)} <span id=user>{_e(u.name)} ({_e(u.role)})</span>"
                   f"<form method=post action=/logout style=display:inline>"
                   f"<input type=hidden name=csrf value={_e(session.csrf)}>"
                   "<button>Log out</button></form></nav>")
        return web.Response(content_type="text/html", text=(
            f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{nav}<h1>{_e(title)}</h1>{body}"
            "</body></html>"))

    def _table(self, rows) -> str:
        out = ["<table id=results><tr><th>recording</th><th>officer</th><th>category</th>"
               "<th>recorded</th><th>stored</th><th>segments</th></tr>"]
        for r in rows:
            flag = " <b>late</b>" if r.late else ""
            out.append(f"<tr><td><a href=\"/recording/{_e(r.device)}/{r.recording}\">"
                       f"{_e(r.id)}</a></td><td>{_e(r.officer)}</td><td>{_e(r.category)}</td>"
                       f"<td>{_utc(r.start_utc_ns)}</td><td>{_utc(r.stored_utc_ns)}{flag}</td>"
                       f"<td>{r.segments}</td></tr>")
        out.append(f"</table><p id=count>{len(rows)} recordings</p>")
        return "".join(out)

    async def search(self, request: web.Request) -> web.Response:
        user = self._need(request, "search")
        p = request.query
        fields = ("case", "party", "officer", "device", "category")
        dates = ("recorded_from", "recorded_to", "stored_from", "stored_to")
        form = "".join(f"<label>{f} <input name={f} id=q-{f} value=\"{_e(p.get(f, ''))}\">"
                       "</label> " for f in fields)
        form += "".join(f"<label>{f.replace('_', ' ')} <input type=date name={f} "
                        f"value=\"{_e(p.get(f, ''))}\"></label> " for f in dates)
        body = f"<form method=get action=/ id=search>{form}<button id=go>Search</button></form>"
        if any(p.get(f) for f in fields + dates):
            try:
                q = Query(**{f: p.get(f) or None for f in fields},
                          recorded_from_ns=_date_ns(p.get("recorded_from")),
                          recorded_to_ns=_date_ns(p.get("recorded_to"), end=True),
                          stored_from_ns=_date_ns(p.get("stored_from")),
                          stored_to_ns=_date_ns(p.get("stored_to"), end=True))
            except ValueError:
                raise web.HTTPBadRequest(text="dates are YYYY-MM-DD") from None
            async with self.lock:
                rows = self.archive.search(q, user.who)
            body += self._table(rows)
        else:
            self.archive.audit.append(user.who, "view", "/")
        return self._html("Search the archive", body, request[SESSION])

    async def _queue(self, request: web.Request, q: Query, title: str) -> web.Response:
        user = self._need(request, "search")
        async with self.lock:
            rows = self.archive.search(q, user.who)
        return self._html(title, self._table(rows), request[SESSION])

    async def queue_unclassified(self, request: web.Request) -> web.Response:
        return await self._queue(request, Query(not_classified=True), "Not classified")

    async def queue_late(self, request: web.Request) -> web.Response:
        return await self._queue(request, Query(late=True), "Handed over late (> 24 h)")

    def _device_report(self, device: str) -> tuple[ContinuityReport, list]:
        store = self.archive.store
        ledger = store.ledger(device)
        names = store.media_names(device)
        key = (device, hashlib.sha256(ledger).hexdigest(), tuple(names))
        if key not in self._reports:
            media = {n: store.media_digest(device, n) for n in names}
            report = verify(ledger, media, self.archive.trust)
            checkpoints, tombstones, unread = read_extras(self.archive.root, device)
            check = check_archived_device(device, ledger, media, checkpoints, tombstones,
                                          self.archive.trust)
            self._reports[key] = (report, unread + check.findings)
        return self._reports[key]

    async def recording(self, request: web.Request) -> web.Response:
        user = self._need(request, "view")
        device, seq = request.match_info["device"], int(request.match_info["seq"])
        rec_id = f"{device}/{seq}"
        async with self.lock:
            try:
                view = self.archive.view(rec_id, user.who)
            except ArchiveError as e:
                raise web.HTTPNotFound(text=str(e)) from e
            report, archive_findings = await asyncio.to_thread(self._device_report, device)
        row, session = view.row, request[SESSION]
        segments = [s.entry for s in view.entries if isinstance(s.entry.body, Segment)]
        start = min([row.start_utc_ns] + [e.body.first_capture_utc_ns for e in segments])
        end = max([row.stop_utc_ns or row.start_utc_ns]
                  + [e.body.last_capture_utc_ns + e.body.frame_period_ns for e in segments])
        span = max(end - start, 1)

        def bar(cls: str, a: int, b: int, label: str, extra: str = "") -> str:
            left = 100 * (a - start) / span
            width = min(max(100 * (b - a) / span, 0.3), 100 - left)
            return (f"<div class=\"{cls}\" style=\"left:{left:.3f}%;width:{width:.3f}%\" "
                    f"title=\"{_e(label)}\" {extra}></div>")

        bars = [bar("segment", e.body.first_capture_utc_ns, e.body.last_capture_utc_ns
                    + e.body.frame_period_ns, f"segment {e.seq}", f"data-seq={e.seq}")
                for e in segments]
        gap_rows = []
        for g in report.gaps:
            if g.recording != row.recording:
                continue
            ok = g.declared and g.explained
            cls = "gap-declared" if ok else "gap-unexplained"
            reason = g.reason or "undeclared"
            bars.append(bar(cls, g.start_utc_ns, g.start_utc_ns + int(g.seconds * 1e9),
                            f"gap {g.seconds:.1f} s: {reason}"))
            note = (f"<a href=\"/media/{_e(device)}/{g.voice_note}\">voice note</a>"
                    if g.voice_note is not None else "<b>no voice note</b>")
            gap_rows.append(f"<li class={cls}>{_utc(g.start_utc_ns)}: {g.seconds:.1f} s, "
                            f"{_e(reason)} — {note}</li>")
        for m in report.markers:
            if m["recording"] == row.recording:
                bars.append(bar("marker", m["utc_ns"], m["utc_ns"], f"marker {m['phase']}"))
        for x in report.exemptions:
            if start <= x["utc_ns"] <= end:
                bars.append(bar("exemption", x["utc_ns"], x["utc_ns"], f"exemption "
                                f"{x['reason']}"))
        errors = [f for f in archive_findings if f.severity == "error"]
        verdict = "broken" if errors else report.verdict
        findings = "".join(f"<li>{_e(f.severity)} {_e(f.kind)}: {_e(f.message)}</li>"
                           for f in [*report.findings, *archive_findings]
                           if f.severity in ("error", "unexplained", "warning"))
        annotations = "".join(f"<li>{_e(a.kind)}: {_e(a.value)} <small>({_e(a.who)}, "
                              f"{_utc(a.utc_ns)})</small></li>" for a in view.annotations)
        trail = "".join(f"<tr><td>{_utc(r.utc_ns)}</td><td>{_e(r.who)}</td><td>{_e(r.action)}"
                        "</td></tr>" for r in view.audit)
        player = ""
        if user.may("play") and segments and self.secret is not None:
            options = "".join(f"<option value=\"/media/{_e(device)}/{e.seq}\">segment {e.seq} "
                              f"({_utc(e.body.first_capture_utc_ns)})</option>" for e in segments)
            player = (f"<h2>Playback</h2><select id=clip onchange=\"document.getElementById("
                      f"'player').src=this.value\">{options}</select><br>"
                      f"<video id=player controls preload=metadata width=640 "
                      f"src=\"/media/{_e(device)}/{segments[0].seq}\"></video>")
        form = ""
        if user.may("annotate"):
            form = (f"<form method=post action=\"/recording/{_e(device)}/{seq}/annotate\" "
                    f"id=annotate><input type=hidden name=csrf value={_e(session.csrf)}>"
                    "<select name=kind id=kind><option>case</option><option>party</option>"
                    "<option>note</option></select> <input name=value id=value> "
                    "<button id=add>Add annotation</button></form>")
        if user.may("export") and self.secret is not None:
            form += (f"<form method=post action=\"/recording/{_e(device)}/{seq}/export\" "
                     f"id=export><input type=hidden name=csrf value={_e(session.csrf)}>"
                     "<button id=export-button>Download evidence package (zip)</button></form>")
        body = f"""<p>Officer <b id=officer>{_e(row.officer)}</b>, category {_e(row.category)},
device {_e(device)}; recorded {_utc(row.start_utc_ns)} – {_utc(row.stop_utc_ns)}, stored
{_utc(row.stored_utc_ns)}{' (<b>late</b>)' if row.late else ''}.
Retention until {_utc(view.retention_until_ns)}{'; <b>on legal hold</b>' if view.on_hold else ''}.
</p><p>Verification: <b id=verdict class="verdict-{_e(verdict)}">{_e(verdict.upper())}</b></p>
<ul>{findings}</ul><h2>Timeline</h2><div class=timeline id=timeline>{''.join(bars)}</div>
<p><small>{_utc(start)} – {_utc(end)}; green: segments, yellow: declared gaps, red:
unexplained gaps, blue: markers, purple: exemptions</small></p><ul id=gaps>{''.join(gap_rows)}
</ul>{player}<h2>Annotations</h2><ul id=annotations>{annotations}</ul>{form}
<h2>Audit trail</h2><table id=trail>{trail}</table>"""
        return self._html(f"Recording {rec_id}", body, session)

    async def annotate(self, request: web.Request) -> web.Response:
        user = self._need(request, "annotate")
        device, seq = request.match_info["device"], int(request.match_info["seq"])
        form = request[FORM]
        async with self.lock:
            try:
                self.archive.annotate(f"{device}/{seq}", str(form.get("kind", "")),
                                      str(form.get("value", "")), user.who)
            except ArchiveError as e:
                raise web.HTTPBadRequest(text=str(e)) from e
        raise web.HTTPFound(f"/recording/{device}/{seq}")

    async def media(self, request: web.Request) -> web.StreamResponse:
        """The decrypted media of one entry, with Range support (seeking)."""
        user = self._need(request, "play")
        if self.secret is None:
            raise web.HTTPNotFound(text="this web view has no archive key: no playback")
        device, seq = request.match_info["device"], int(request.match_info["seq"])
        entries = [s for s in signed_entries(self.archive.store.ledger(device))
                   if s.entry.seq == seq and isinstance(s.entry.body, Segment | VoiceNote)]
        if not entries:
            raise web.HTTPNotFound(text="no such media")
        ref = entries[0].entry.body.media
        path = self.cache / f"{device}-{seq}.mp4"
        if not path.is_file():
            sealed = await asyncio.to_thread(self.archive.store.read_media, device, ref.file)
            plain = await asyncio.to_thread(decrypt_segment, sealed, self.secret)
            if ref.plaintext_sha256 and hashlib.sha256(
                    plain.plaintext).hexdigest() != ref.plaintext_sha256:
                raise web.HTTPConflict(text="the media does not match its signed hash")
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(plain.plaintext)
            tmp.replace(path)
        session = request[SESSION]
        if (device, seq) not in session.played:  # once per session, not per Range request
            session.played.add((device, seq))
            self.archive.audit.append(user.who, "view", self._recording_of(device, seq),
                                      play=ref.file)
        return web.FileResponse(path, headers={"Content-Type": "video/mp4",
                                               "Cache-Control": "private, no-store"})

    async def export(self, request: web.Request) -> web.StreamResponse:
        """The recording's evidence package (docs/archive.md) as a zip download."""
        user = self._need(request, "export")
        if self.secret is None:
            raise web.HTTPNotFound(text="this web view has no archive key: no export")
        device, seq = request.match_info["device"], int(request.match_info["seq"])
        rec_id = f"{device}/{seq}"
        folder = Path(tempfile.mkdtemp(dir=self.cache))
        async with self.lock:
            try:
                await asyncio.to_thread(export_recording, self.archive, rec_id,
                                        folder / "package", user.who, self.secret)
            except ArchiveError as e:
                raise web.HTTPConflict(text=str(e)) from e
        name = f"evidence-{device}-{seq}"
        archive = await asyncio.to_thread(shutil.make_archive, str(folder / name), "zip",
                                          folder / "package")
        return web.FileResponse(archive, headers={
            "Content-Type": "application/zip", "Cache-Control": "private, no-store",
            "Content-Disposition": f'attachment; filename="{name}.zip"'})

    def _recording_of(self, device: str, seq: int) -> str:
        for row in self.archive.index.search(Query(device=device, limit=10_000)):
            if seq in row.entries:
                return row.id
        return f"{device}/{seq}"

    def _acknowledged(self) -> dict[str, tuple[str, int]]:
        return {r.object: (r.who, r.utc_ns) for r in self.archive.audit.records()
                if r.action == "acknowledge"}

    async def exemptions(self, request: web.Request) -> web.Response:
        user = self._need(request, "view")
        session = request[SESSION]
        rows = []
        async with self.lock:
            self.archive.audit.append(user.who, "view", "/exemptions")
            acknowledged = self._acknowledged()
            for device in self.archive.store.devices():
                report, _ = await asyncio.to_thread(self._device_report, device)
                for x in report.exemptions:
                    key = f"{device}/{x['seq']}"
                    if key in acknowledged:
                        who, at = acknowledged[key]
                        state = f"acknowledged by {_e(who)} at {_utc(at)}"
                    elif user.may("acknowledge"):
                        state = (f"<form method=post action=\"/exemptions/{_e(device)}/"
                                 f"{x['seq']}/acknowledge\"><input type=hidden name=csrf "
                                 f"value={_e(session.csrf)}><button class=ack>Acknowledge"
                                 "</button></form>")
                    else:
                        state = "<b>not yet acknowledged</b>"
                    rows.append(f"<tr><td>{_e(key)}</td><td>{_utc(x['utc_ns'])}</td><td>"
                                f"{_e(x['reason'])}</td><td>{_e(x['note'])}</td><td>{state}"
                                "</td></tr>")
        body = ("<p>Lawful decisions not to record (Art. 5), for the unit head.</p>"
                "<table id=exemptions><tr><th>entry</th><th>time</th><th>reason</th>"
                f"<th>note</th><th></th></tr>{''.join(rows)}</table>")
        return self._html("Exemptions", body, session)

    async def acknowledge(self, request: web.Request) -> web.Response:
        user = self._need(request, "acknowledge")
        key = f"{request.match_info['device']}/{request.match_info['seq']}"
        async with self.lock:
            if key not in self._acknowledged():
                self.archive.audit.append(user.who, "acknowledge", key)
        raise web.HTTPFound("/exemptions")

    async def audit_page(self, request: web.Request) -> web.Response:
        user = self._need(request, "audit")
        async with self.lock:
            self.archive.audit.append(user.who, "view", "/audit")
            try:
                state = f"chain intact: {verify_audit(self.archive.audit.path)} records"
            except AuditError as e:
                state = f"<b>chain BROKEN</b>: {_e(e)}"
            records = list(self.archive.audit.records())[-200:]
        rows = "".join(f"<tr><td>{r.seq}</td><td>{_utc(r.utc_ns)}</td><td>{_e(r.who)}</td>"
                       f"<td>{_e(r.action)}</td><td>{_e(r.object or '')}</td></tr>"
                       for r in reversed(records))
        body = (f"<p id=chain>{state}</p><table id=audit><tr><th>seq</th><th>time</th>"
                f"<th>who</th><th>action</th><th>object</th></tr>{rows}</table>")
        return self._html("Audit log", body, request[SESSION])


async def serve(view: WebView, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(view.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
