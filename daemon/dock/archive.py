"""The dock's archive: staging what a device sends, verifying it, archiving it write-once.

Layout (``archive/`` in the dock's settings)::

    trust.json                        the unit's trust file, so `custody verify` finds it
    devices/<id>/ledger.jsonl         the device's ledger as far as archived (same layout
    devices/<id>/media/               as a device store: `custody verify` works on it)
    devices/<id>/receipts/            every receipt the dock signed for the device
    incoming/<id>/ledger-<seq>.jsonl  a range the device announced, its ledger checked
    incoming/<id>/media/<file>.part   an upload under way (resumed from its size)
    incoming/<id>/media/<file>        an upload complete and matching its sealed SHA-256
    quarantine/<id>/<utc>-<what>      bad copies, kept as evidence, never over a good one

A range goes through :meth:`DeviceArchive.stage` (ledger lines checked against
the archived head with :func:`protocol.verify_range.verify_range`), the
uploads of the media it seals, then :meth:`DeviceArchive.commit`: media
fsynced, renamed into ``media/`` and made read-only, the ledger lines
appended and fsynced, everything re-read from the medium and compared, and
only then a receipt signed. A dock killed at any point leaves either the old
state or a state the next :meth:`DeviceArchive.state` finishes (a receipt for
entries already appended is signed after the same re-read).

Methods block (disk, hashing): the server calls them from worker threads,
one device at a time (each :class:`DeviceArchive` has its own lock).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.dock.divergence import find_divergence
from daemon.events import ARCHIVE_FULL, INTEGRITY_FAILURE, DockEvents, OffloadReport
from hardware.host.durable import (
    append_durably,
    fsync_dir,
    fsync_file,
    remove_temporaries,
    replace_atomically,
)
from protocol.envelope import parse_line, split_lines
from protocol.keys import SigningKey
from protocol.receipt import ArchivedMedia, OffloadReceipt, sign_receipt
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, RECEIPTS_DIR, TRUST_NAME, sha256_file
from protocol.trust import TrustFile
from protocol.verify import MediaDigest
from protocol.verify_range import ChainHead, RangeReport, chain_head, verify_range

log = logging.getLogger("custody.dock.archive")

READ_ONLY = 0o444


class Refused(Exception):
    """The dock refuses a request; ``status`` is the HTTP status that says so."""

    status = 400

    def __init__(self, message: str, **extra: Any):
        super().__init__(message)
        self.extra = extra


class NotFound(Refused):
    status = 404


class Conflict(Refused):
    status = 409  # e.g. an upload offset that is not where the dock's copy ends


class TooLong(Refused):
    status = 413


class Rejected(Refused):
    status = 422  # verification failed: alert raised, bad copy quarantined


class ArchiveFull(Refused):
    status = 507


def hash_from_medium(path: Path) -> MediaDigest:
    """Size and SHA-256 of a file as the medium holds it, not as the page cache does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop cached pages: read back
    finally:
        os.close(fd)
    return sha256_file(path)


def _identity(path: Path) -> tuple[int, ...]:
    """What changes if a file is replaced or written to (not its link count or ctime)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Upload:
    """A media upload under way: its part file and how much it holds."""

    part: Path
    size: int  # as sealed
    sha256: str
    offset: int = 0


class DeviceArchive:
    """One device's archived store, its staged range and its uploads."""

    def __init__(self, root: Path, device: str, trust: TrustFile, dock: str, key: SigningKey,
                 events: DockEvents, reserve_bytes: int):
        self.root, self.device, self.trust, self.dock = root, device, trust, dock
        self.key, self.events, self.reserve_bytes = key, events, reserve_bytes
        self.store = root / "devices" / device
        self.incoming = root / "incoming" / device
        self.quarantine = root / "quarantine" / device
        self.lock = threading.Lock()
        for folder in (self.store / MEDIA_DIR, self.store / RECEIPTS_DIR,
                       self.incoming / MEDIA_DIR):
            folder.mkdir(parents=True, exist_ok=True)
        ledger = self.store / LEDGER_NAME
        self.head = chain_head(ledger.read_bytes() if ledger.exists() else b"", device)
        self.staged: RangeReport | None = None
        self.staged_lines = b""
        self.staged_at = 0.0
        self.uploads: dict[str, _Upload] = {}
        self.reread: dict[str, tuple[int, ...]] = {}  # file -> identity when read back
        self.clock_offset_ns: int | None = None
        self.divergences: set[tuple[str, int]] = set()  # alerted already (reason, seq)
        self._restage()

    # --- where things stand --------------------------------------------------------------

    def _restage(self) -> None:
        """After a restart: take up the staged range again, if it still continues the head."""
        path = self.incoming / f"ledger-{self.head.next_seq}.jsonl"
        if path.exists():
            try:
                self._set_staged(path.read_bytes())
                self._finish_parts()
            except Refused as e:
                log.warning("%s: staged range %s dropped: %s", self.device, path.name, e)

    def _finish_parts(self) -> None:
        """Part files that hold every byte: the dock died after the last chunk, before
        it checked the file. No device would send more, so it is checked now."""
        assert self.staged is not None
        for name, ref in sorted(self.staged.media.items()):
            part = self.incoming / MEDIA_DIR / f"{name}.part"
            if not part.exists() or part.stat().st_size != ref.size:
                continue
            os.chmod(part, READ_ONLY)
            if hash_from_medium(part) != MediaDigest(ref.size, ref.sha256):
                self._reject(f"{name}.part", part, None,
                             f"{name} does not match its sealed SHA-256", "media_hash")
            done = self.incoming / MEDIA_DIR / name
            os.replace(part, done)
            fsync_dir(self.incoming / MEDIA_DIR)
            self.reread[name] = _identity(done)
            log.warning("%s: %s complete before a restart, checked now", self.device, name)

    def _receipt_paths(self) -> list[Path]:
        return sorted((self.store / RECEIPTS_DIR).glob("*.json"))

    def latest_receipt(self) -> dict[str, Any] | None:
        paths = self._receipt_paths()
        return json.loads(paths[-1].read_bytes()) if paths else None

    def _receipted_up_to(self) -> int:
        paths = self._receipt_paths()
        return int(paths[-1].stem.split("-")[1]) if paths else -1

    def state(self) -> dict[str, Any]:
        """What the device needs to know before it sends: where the archive ends."""
        with self.lock:
            self._finish_receipt()
            return {"device": self.device, "next_seq": self.head.next_seq,
                    "head": self.head.digest, "receipt": self.latest_receipt(),
                    "staged": None if self.staged is None else {
                        "first_seq": self.staged.first_seq, "last_seq": self.staged.last_seq}}

    # --- the ledger range -------------------------------------------------------------------

    def stage(self, first_seq: int, lines: bytes) -> dict[str, Any]:
        """Check a range of ledger lines and stage it; says what media to send."""
        with self.lock:
            if first_seq < self.head.next_seq:
                self._check_overlap(first_seq, lines)
            if first_seq != self.head.next_seq:
                raise Conflict(f"the archive continues at entry {self.head.next_seq}",
                               next_seq=self.head.next_seq)
            self._set_staged(lines)
            try:
                replace_atomically(self.incoming / f"ledger-{first_seq}.jsonl", lines)
            except OSError as e:
                if e.errno == errno.ENOSPC:  # a full disk is 507 and an alert, not a 500
                    self._full(LEDGER_NAME, len(lines))
                raise
            assert self.staged is not None
            for f in self.staged.findings:
                if f.kind == "ledger_gap":  # archived as declared, and the unit told
                    self.events.alert(INTEGRITY_FAILURE, {"device": self.device,
                                                          "reason": "ledger_gap",
                                                          "message": f.message})
            return self._staged_view()

    def _check_overlap(self, first_seq: int, lines: bytes) -> None:
        """A range starting inside the archive: refused and alerted if it parts from
        the archived copy (daemon/dock/divergence.py); the archive is only read."""
        archived = split_lines((self.store / LEDGER_NAME).read_bytes())
        found = find_divergence(archived, first_seq, lines, self.device, self.trust)
        if found is None:
            return
        seen = (found.reason, found.seq)
        if seen in self.divergences:  # the device asks again: refused, alerted once
            raise Rejected(f"{found.reason}: {found.message}; nothing is released",
                           reason=found.reason)
        self.divergences.add(seen)
        self._reject(f"ledger-{first_seq}.diverged.jsonl", lines, None, found.message,
                     found.reason)

    def _set_staged(self, lines: bytes) -> None:
        report = verify_range(self.head, lines, None, self.trust)
        if not report.ok:
            self._reject(f"ledger-{report.first_seq}.jsonl", lines, report)
        for name, ref in report.media.items():
            archived = self.store / MEDIA_DIR / name
            if archived.exists() and not self._archived_matches(archived, ref.size, ref.sha256):
                # A name the archive holds already, with other bytes: never over it.
                self._reject(f"ledger-{report.first_seq}.jsonl", lines, report,
                             f"{name} is archived already with other content")
        self.staged, self.staged_lines, self.staged_at = report, lines, time.monotonic()
        for name in list(self.uploads):
            ref = report.media.get(name)
            if ref is None or ref.sha256 != self.uploads[name].sha256:
                del self.uploads[name]

    def _archived_matches(self, path: Path, size: int, sha256: str) -> bool:
        got = sha256_file(path)
        return got.size == size and got.sha256 == sha256

    def _staged_view(self) -> dict[str, Any]:
        assert self.staged is not None
        media = []
        for name, ref in sorted(self.staged.media.items()):
            media.append({"file": name, "size": ref.size, "offset": self._offset(name)[0]})
        return {"first_seq": self.staged.first_seq, "last_seq": self.staged.last_seq,
                "media": media,
                "warnings": [f.message for f in self.staged.findings if f.severity != "error"]}

    def _reject(self, what: str, data: bytes | Path, report: RangeReport | None,
                reason: str | None = None, kind: str | None = None) -> None:
        kept = self._quarantine(what, data)
        finding = report.errors[0] if report is not None and report.errors else None
        reason = reason or (finding.message if finding else "verification failed")
        kind = kind or (finding.kind if finding else "rejected")
        self.events.alert(INTEGRITY_FAILURE, {"device": self.device, "reason": kind,
                                              "message": reason, "quarantined": str(kept)})
        raise Rejected(f"{kind}: {reason}; nothing is released", reason=kind)

    def _quarantine(self, what: str, data: bytes | Path) -> Path:
        self.quarantine.mkdir(parents=True, exist_ok=True)
        target = self.quarantine / f"{time.time_ns()}-{what}"
        if isinstance(data, Path):
            os.replace(data, target)
        else:
            target.write_bytes(data)
        os.chmod(target, READ_ONLY)
        fsync_dir(self.quarantine)
        return target

    # --- media uploads ------------------------------------------------------------------------

    def _ref(self, name: str):
        if self.staged is None or name not in self.staged.media:
            raise NotFound(f"{name!r} is not sealed by the range staged for {self.device}")
        return self.staged.media[name]

    def _offset(self, name: str) -> tuple[int, bool]:
        """How much of a file the dock holds, and whether it is complete."""
        ref = self._ref(name)
        if (self.incoming / MEDIA_DIR / name).exists() or (self.store / MEDIA_DIR / name).exists():
            return ref.size, True
        part = self.incoming / MEDIA_DIR / f"{name}.part"
        return (part.stat().st_size if part.exists() else 0), False

    def offset(self, name: str) -> tuple[int, int, bool]:
        with self.lock:
            offset, done = self._offset(name)
            return offset, self._ref(name).size, done

    def open_upload(self, name: str, offset: int, length: int | None) -> _Upload:
        """Check a PATCH before its body is read; returns the upload to write to."""
        with self.lock:
            ref = self._ref(name)
            have, done = self._offset(name)
            if done:
                raise Conflict(f"{name} is complete", offset=have)
            if offset != have:
                raise Conflict(f"{name}: the dock holds {have} bytes, not {offset}", offset=have)
            part = self.incoming / MEDIA_DIR / f"{name}.part"
            if length is not None and offset + length > ref.size:
                self._too_long(name, part, offset + length, ref.size)
            if shutil.disk_usage(self.root).free - (ref.size - offset) < self.reserve_bytes:
                self._full(name, ref.size - offset)
            upload = self.uploads.get(name)
            if upload is None or upload.offset != have:  # the part file is the truth
                upload = _Upload(part, ref.size, ref.sha256, have)
                self.uploads[name] = upload
            part.touch()
            return upload

    def _too_long(self, name: str, part: Path, got: int, size: int) -> None:
        self.uploads.pop(name, None)
        what = f"{name}.part"
        kept = self._quarantine(what, part) if part.exists() else None
        self.events.alert(INTEGRITY_FAILURE, {
            "device": self.device, "reason": "upload_too_long", "file": name,
            "message": f"{got} bytes sent for a file sealed as {size}",
            "quarantined": str(kept) if kept else None})
        raise TooLong(f"{name}: {got} bytes for a file sealed as {size}; nothing is released")

    def _full(self, name: str, needed: int) -> None:
        self.events.alert(ARCHIVE_FULL, {"device": self.device, "file": name,
                                         "needed_bytes": needed,
                                         "free_bytes": shutil.disk_usage(self.root).free})
        raise ArchiveFull(f"the archive has no room for {name} ({needed} bytes)")

    def write(self, upload: _Upload, fd: int, data: bytes) -> None:
        """Append a chunk to an open upload (enforcing its sealed size)."""
        if upload.offset + len(data) > upload.size:
            with self.lock:
                self._too_long(upload.part.name[:-5], upload.part, upload.offset + len(data),
                               upload.size)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            upload.offset = -1  # how much reached the file: its size says, next time
            if e.errno == errno.ENOSPC:
                with self.lock:
                    self._full(upload.part.name[:-5], upload.size - upload.offset)
            raise
        upload.offset += len(data)

    def finish_upload(self, upload: _Upload, fd: int) -> tuple[int, bool]:
        """After a PATCH body: make it durable; a complete file is checked against its seal.

        The caller closes ``fd``.
        """
        name = upload.part.name[:-5]
        try:
            os.fsync(fd)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                with self.lock:
                    self._full(name, upload.size - upload.offset)
            raise
        if upload.offset < upload.size:
            return upload.offset, False
        # Checked by reading it back from the medium (page cache dropped), now, while
        # other uploads go on: one hash both of what arrived and of what the disk holds.
        os.chmod(upload.part, READ_ONLY)
        with self.lock:
            self.uploads.pop(name, None)
        if hash_from_medium(upload.part) != MediaDigest(upload.size, upload.sha256):
            with self.lock:
                self._reject(f"{name}.part", upload.part, None,
                             f"{name} does not match its sealed SHA-256", "media_hash")
        with self.lock:
            done = self.incoming / MEDIA_DIR / name
            os.replace(upload.part, done)
            fsync_dir(self.incoming / MEDIA_DIR)
            self.reread[name] = _identity(done)
        log.info("%s: received %s (%d bytes)", self.device, name, upload.size)
        return upload.size, True

    # --- commit ------------------------------------------------------------------------------

    def commit(self, first_seq: int) -> OffloadReport:
        """Archive the staged range and sign its receipt (see the module doc)."""
        with self.lock:
            report = self.staged
            if report is None or report.first_seq != first_seq:
                raise Conflict(f"no range staged from entry {first_seq}",
                               next_seq=self.head.next_seq)
            media_dir = self.store / MEDIA_DIR
            for name, ref in report.media.items():
                if not (self.incoming / MEDIA_DIR / name).exists() and \
                        not (media_dir / name).exists():
                    offset, _ = self._offset(name)
                    self._reject(f"ledger-{first_seq}.jsonl", self.staged_lines, report,
                                 f"{name} is short: {offset} of {ref.size} bytes arrived",
                                 "media_truncated")
            if shutil.disk_usage(self.root).free < len(self.staged_lines) + 65536:
                self._full(LEDGER_NAME, len(self.staged_lines))
            try:
                for name in sorted(report.media):
                    src, dst = self.incoming / MEDIA_DIR / name, media_dir / name
                    if dst.exists():  # archived before a restart; checked when staged
                        if src.exists():
                            self._quarantine(f"{name}.duplicate", src)
                        continue
                    if self.reread.get(name) != _identity(src):  # from before a restart
                        fsync_file(src)
                        os.chmod(src, READ_ONLY)
                    os.link(src, dst)  # never replaces: a name already there fails
                    os.unlink(src)
                fsync_dir(media_dir)
                self._check_on_medium(report)
                for name in report.media:
                    self.reread.pop(name, None)
                self._append_ledger(self.staged_lines)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    self._full(LEDGER_NAME, len(self.staged_lines))
                raise
            self.head = report.end
            seconds = time.monotonic() - self.staged_at
            staged_path = self.incoming / f"ledger-{first_seq}.jsonl"
            self.staged, self.staged_lines = None, b""
            envelope = self._sign_receipt(report.first_seq, report.last_seq, report.end.digest,
                                          report.media)
            staged_path.unlink(missing_ok=True)
        offload = OffloadReport(
            dock=self.dock, device=self.device, first_seq=report.first_seq,
            last_seq=report.last_seq, head=report.end.digest, media=sorted(report.media),
            media_bytes=sum(m.size for m in report.media.values()), seconds=seconds,
            archived_utc_ns=time.time_ns(), receipt=envelope,
            clock_offset_ns=self.clock_offset_ns,
            findings=[{"seq": f.seq, "kind": f.kind, "message": f.message}
                      for f in report.findings])
        return offload

    def _check_on_medium(self, report: RangeReport) -> None:
        """Every archived file of the range re-read from the medium before any receipt.

        A file re-read when its upload completed (fsynced, read-only, then read
        back with the page cache dropped) is not read again if it is still the
        same file: same inode, size and modification time.
        """
        for name, ref in sorted(report.media.items()):
            path = self.store / MEDIA_DIR / name
            if name in self.reread and self.reread[name] == _identity(path):
                continue
            got = hash_from_medium(path)
            if got != MediaDigest(ref.size, ref.sha256):
                self._reject(f"{name}.reread", self.store / MEDIA_DIR / name, report,
                             f"{name} read back from the archive medium does not match its "
                             "seal", "archive_medium")

    def _append_ledger(self, lines: bytes) -> None:
        path = self.store / LEDGER_NAME
        if path.exists():
            os.chmod(path, 0o644)
        before = append_durably(path, lines)
        os.chmod(path, READ_ONLY)
        with open(path, "rb") as f:  # read back what the medium holds
            os.posix_fadvise(f.fileno(), before, 0, os.POSIX_FADV_DONTNEED)
            f.seek(before)
            if f.read() != lines:
                raise OSError(errno.EIO, f"{path}: appended lines do not read back")

    def _sign_receipt(self, first: int, last: int, head: str, media: dict) -> dict[str, Any]:
        receipt = OffloadReceipt(
            dock=self.dock, device=self.device, first_seq=first, last_seq=last, head=head,
            media=[ArchivedMedia(file=n, sha256=m.sha256) for n, m in sorted(media.items())],
            archived_utc_ns=time.time_ns())
        envelope = sign_receipt(receipt, self.key.signer())
        replace_atomically(self.store / RECEIPTS_DIR / f"{first:010d}-{last:010d}.json",
                           json.dumps(envelope, sort_keys=True).encode(), READ_ONLY)
        return envelope

    def _finish_receipt(self) -> None:
        """Entries appended but no receipt yet (a dock killed in between): sign it now."""
        done = self._receipted_up_to()
        last = self.head.next_seq - 1
        if done >= last:
            return
        lines = [signed for signed in (parse_line(line) for line in split_lines(
            (self.store / LEDGER_NAME).read_bytes())) if signed.entry.seq > done]
        media = {m.file: m for signed in lines for m in signed.entry.media()}
        report = RangeReport(ChainHead(self.device, done + 1), self.head, len(lines), media)
        self._check_on_medium(report)
        self._sign_receipt(done + 1, last, self.head.digest, media)
        log.warning("%s: receipt for entries %d..%d signed after a restart", self.device,
                    done + 1, last)


#: The folders of an archive the dock writes through hardware/host/durable.py's
#: temporary names ("*" is each device's own folder). Not tombstones/: the dock
#: never writes there (``custody archive`` does).
TEMPORARY_FOLDERS = (".", "devices/*", f"devices/*/{RECEIPTS_DIR}", "incoming/*",
                     "checkpoints/*")


def remove_archive_temporaries(root: Path) -> list[Path]:
    """At the dock's start, before it writes: the temporary files a cut left in the
    archive (never evidence; ``remove_temporaries``). Folders that are links are
    not entered; nothing but those exact temporary names is touched."""
    removed = []
    for pattern in TEMPORARY_FOLDERS:
        for folder in sorted(Path(root).glob(pattern)) if "*" in pattern else [Path(root)]:
            if _real_folder(folder, Path(root)):
                removed += remove_temporaries(folder)
    return removed


def _real_folder(folder: Path, root: Path) -> bool:
    """A folder below ``root`` reached through no link (a link to elsewhere is not
    the archive's to clean)."""
    path = root
    for part in folder.relative_to(root).parts:
        path = path / part
        if path.is_symlink():
            return False
    return path.is_dir()


def copy_trust(root: Path, trust_file: Path) -> None:
    """Keep the unit's trust file in the archive, so `custody verify ARCHIVE` finds it."""
    data = Path(trust_file).read_bytes()
    target = root / TRUST_NAME
    if not target.exists() or target.read_bytes() != data:
        replace_atomically(target, data)
