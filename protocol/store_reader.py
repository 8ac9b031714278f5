"""Reading a device store (or an archive of them) from disk for verification.

This and the CLI modules are protocol/'s only I/O: they turn folders into the
bytes and digests that the pure :func:`protocol.verify.verify` takes.

A *store* is a folder::

    ledger.jsonl     one DSSE envelope per line, append-only
    media/           sealed (encrypted) media files named by the ledger
    receipts/        dock-signed receipts kept beside it (optional), *.json
    ledger.torn-*    lines a power cut tore, moved aside by the device

An *archive* holds ``trust.json`` and ``devices/<device id>/``, one store each.

The reader trusts nothing it finds: every file is opened relative to its
folder without following links (``O_NOFOLLOW``, and never blocking on a FIFO),
must be a regular file and is read only up to a bound. Anything else is a
finding about the store, never a hang or a read outside it. Only a store that
cannot be opened at all raises :class:`StoreError`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.envelope import decode_json
from protocol.errors import ProtocolError
from protocol.findings import Finding
from protocol.media_check import MEDIA_DIR
from protocol.segment_crypto import HEADER_SIZE
from protocol.trust import TrustFile
from protocol.verify import LEDGER_FILE, KeptReceipt, MediaDigest

LEDGER_NAME = LEDGER_FILE
RECEIPTS_DIR = "receipts"
DEVICES_DIR = "devices"
TRUST_NAME = "trust.json"
TORN_PREFIX = "ledger.torn-"
_BUFFER = 1 << 20

# Bounds: far above anything a device writes, far below what would exhaust
# the machine that checks it.
MAX_LEDGER_BYTES = 1 << 30
MAX_MEDIA_BYTES = 16 << 30
MAX_RECEIPT_BYTES = 1 << 20
MAX_TRUST_BYTES = 1 << 20
MAX_SIDE_FILE_BYTES = 1 << 20  # an archive's checkpoints and tombstones

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class StoreError(Exception):
    """A store, archive or trust file that cannot be read; names the path."""


class _Refused(Exception):
    """A file the reader will not read; carries the finding."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class StoreContents:
    path: Path
    ledger: bytes
    media: dict[str, MediaDigest] = field(default_factory=dict)
    receipts: list[Any] = field(default_factory=list)  # KeptReceipt
    findings: list[Finding] = field(default_factory=list)  # what the reader met on disk


@dataclass
class Location:
    """What a path given to ``custody verify`` is: one store, or an archive."""

    path: Path
    archive: bool
    stores: list[Path]
    findings: list[Finding] = field(default_factory=list)  # of the archive as a whole


@dataclass(frozen=True)
class TrustSource:
    """The trust file used, and what identifies it to the reader of a report."""

    trust: TrustFile
    path: Path
    sha256: str

    def describe(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


def shown(name: str) -> str:
    """A file name as it can be printed (bytes that are not UTF-8 escaped)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _open_regular(name: str, dir_fd: int | None, limit: int, where: str) -> int:
    """An fd of a regular file at ``name`` (never a link), at most ``limit`` bytes."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not_a_regular_file", f"{where} is a {_what(st.st_mode)}, not a file; "
                       "not read")
    if st.st_size > limit:
        raise _Refused("file_too_large", f"{where} is {st.st_size} bytes, above the bound of "
                       f"{limit}; not read")
    fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    again = os.fstat(fd)
    if not stat.S_ISREG(again.st_mode) or (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise _Refused("not_a_regular_file", f"{where} changed while being opened; not read")
    return fd


def _read_bounded(fd: int, limit: int, where: str) -> bytes:
    with open(fd, "rb", buffering=0, closefd=True) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _Refused("file_too_large", f"{where} grew above the bound of {limit}; not read")
    return data


def _open_dir(name: str, dir_fd: int | None, where: str) -> int | None:
    """An fd of the folder ``name`` (never through a link); None if it is absent."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise _Refused("not_a_directory", f"{where} is a {_what(st.st_mode)}, not a folder; "
                       "not followed")
    return os.open(name, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=dir_fd)


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as it:
        return sorted(e.name for e in it)


def read_small_files(root: Path, folder: tuple[str, ...], suffix: str,
                     limit: int = MAX_SIDE_FILE_BYTES) -> tuple[list[tuple[str, bytes]],
                                                                list[Finding]]:
    """The ``*suffix`` files of ``root/<folder...>`` (none if it is absent), by name.

    Read by the rules of every store file: no link followed on the way or at
    the end, regular files only (a FIFO is never opened), at most ``limit``
    bytes. What is refused is a finding naming its path below ``root``.
    """
    where = "/".join(shown(part) for part in folder)
    try:
        fd: int | None = os.open(root, _OPEN_DIR)
    except OSError as e:
        raise StoreError(f"{root}: {e.strerror}") from e
    found: list[tuple[str, bytes]] = []
    findings: list[Finding] = []
    try:
        for depth, part in enumerate(folder):
            inner = _open_dir(part, fd, "/".join(folder[:depth + 1]) + "/")
            os.close(fd)
            fd = inner
            if fd is None:
                return found, findings
        for name in _names(fd):
            if not name.endswith(suffix):
                continue
            path = f"{where}/{shown(name)}"
            try:
                found.append((shown(name), _read_bounded(_open_regular(name, fd, limit, path),
                                                         limit, path)))
            except _Refused as e:
                findings.append(Finding(None, e.kind, str(e), file=path))
            except OSError as e:
                findings.append(Finding(None, "unreadable_file", f"{path}: {e.strerror}",
                                        file=path))
    except _Refused as e:
        findings.append(Finding(None, e.kind, str(e), file=where))
    finally:
        if fd is not None:
            os.close(fd)
    return found, findings


# --- locating stores and the trust file --------------------------------------------


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def locate(path: Path) -> Location:
    """The stores at ``path``: itself, or each ``devices/<id>/`` of an archive.

    An archive is checked as a whole: a ``devices/`` entry that is not a real
    folder, one without a ledger, and a ledger at the archive's root are
    findings of the archive.
    """
    devices = path / DEVICES_DIR
    if devices.is_dir() and not devices.is_symlink():
        loc = Location(path, True, [])
        if (path / LEDGER_NAME).exists() or (path / LEDGER_NAME).is_symlink():
            loc.findings.append(Finding(None, "stray_ledger", f"{path / LEDGER_NAME}: a ledger "
                                        "at the archive's root belongs in devices/<id>/; not "
                                        "checked", file=LEDGER_NAME))
        for name in sorted(os.listdir(devices)):
            store = devices / name
            where = f"{DEVICES_DIR}/{shown(name)}"
            if store.is_symlink() or not store.is_dir():
                kind = "symbolic link" if store.is_symlink() else "file"
                loc.findings.append(Finding(None, "not_a_directory", f"{where} is a {kind}, "
                                            "not a store folder; not followed", file=where))
            elif not (store / LEDGER_NAME).exists() and not (store / LEDGER_NAME).is_symlink():
                loc.findings.append(Finding(None, "ledger_missing", f"{where} holds no "
                                            f"{LEDGER_NAME}", file=where))
            else:
                loc.stores.append(store)
        return loc
    if (path / LEDGER_NAME).exists() or (path / LEDGER_NAME).is_symlink():
        return Location(path, False, [path])
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    raise StoreError(f"{path}: not a device store ({LEDGER_NAME}) nor an archive (devices/)")


def find_stores(path: Path) -> list[Path]:
    """The stores at ``path`` (see :func:`locate`); StoreError if there is none."""
    stores = locate(path).stores
    if not stores:
        raise StoreError(f"{path}: an archive with no readable store in {DEVICES_DIR}/")
    return stores


def trust_candidates(path: Path) -> list[Path]:
    """Where a trust file may be found for ``path`` when none is given: beside
    the store or archive, never inside a store (whoever can write the store
    could otherwise write the keys that check it)."""
    path = path.absolute()
    if (path / DEVICES_DIR).is_dir():  # an archive: its trust file sits beside its stores
        return [path / TRUST_NAME]
    out = [path.parent / TRUST_NAME, path.parent / "keys" / TRUST_NAME]
    if path.parent.name == DEVICES_DIR:  # a store inside an archive
        out.insert(0, path.parent.parent / TRUST_NAME)
    return out


def find_trust(path: Path, explicit: Path | None) -> TrustFile:
    """The trust file given, else the first of :func:`trust_candidates` that exists."""
    return find_trust_source(path, explicit).trust


def find_trust_source(path: Path, explicit: Path | None) -> TrustSource:
    """:func:`find_trust`, with the path and SHA-256 of the file it used."""
    if explicit is not None:
        return read_trust_source(explicit)
    for candidate in trust_candidates(path):
        if _is_file(candidate):
            return read_trust_source(candidate)
    tried = ", ".join(map(str, trust_candidates(path)))
    raise StoreError(f"{path}: no trust file beside it ({tried}); pass --trust FILE")


def read_trust_source(path: Path) -> TrustSource:
    try:
        fd = _open_regular(str(path), None, MAX_TRUST_BYTES, str(path))
        data = _read_bounded(fd, MAX_TRUST_BYTES, str(path))
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror}") from e
    except _Refused as e:
        raise StoreError(str(e)) from e
    try:
        trust = TrustFile.from_bytes(data)
    except ProtocolError as e:
        raise StoreError(f"{path}: not a valid trust file: {e}") from e
    return TrustSource(trust, path, hashlib.sha256(data).hexdigest())


def read_file_if_present(path: Path, limit: int) -> bytes | None:
    """A file beside a store or archive (e.g. the audit log), by the reader's rules: a
    regular file, never through a link, at most ``limit`` bytes; None if it is absent.
    Anything else is a StoreError naming the path (a FIFO is refused, not waited on)."""
    try:
        fd = _open_regular(str(path), None, limit, str(path))
        return _read_bounded(fd, limit, str(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror}") from e
    except _Refused as e:
        raise StoreError(str(e)) from e


def read_trust(path: Path) -> TrustFile:
    return read_trust_source(path).trust


def read_receipt_file(path: Path) -> KeptReceipt:
    """A receipt given on the command line: the same rules as one in ``receipts/``."""
    try:
        fd = _open_regular(str(path), None, MAX_RECEIPT_BYTES, str(path))
        return KeptReceipt(str(path), decode_json(_read_bounded(fd, MAX_RECEIPT_BYTES,
                                                                str(path)), str(path)))
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror}") from e
    except (_Refused, ProtocolError) as e:
        raise StoreError(f"unreadable receipt: {e}") from e


# --- hashing and reading a store -----------------------------------------------------


def sha256_file(path: Path, buffer: bytearray | None = None,
                progress: Callable[[int], None] | None = None) -> MediaDigest:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    with open(path, "rb", buffering=0) as f:
        return _sha256_fd(f, buffer, progress, None)


def _sha256_fd(f: Any, buffer: bytearray | None, progress: Callable[[int], None] | None,
               limit: int | None) -> MediaDigest:
    h = hashlib.sha256()
    buf = buffer if buffer is not None else bytearray(_BUFFER)
    view, size, header = memoryview(buf), 0, b""
    while n := f.readinto(buf):
        h.update(view[:n])
        if size < HEADER_SIZE:
            header += bytes(view[:min(n, HEADER_SIZE - size)])
        size += n
        if progress:
            progress(n)
        if limit is not None and size > limit:
            raise _Refused("file_too_large", f"grew above the bound of {limit} bytes")
    return MediaDigest(size, h.hexdigest(), header)


def read_store(path: Path, progress: Callable[[int, int], None] | None = None,
               follow: bool = True) -> StoreContents:
    """Read a store's ledger and receipts and hash its media.

    ``progress(done_bytes, total_bytes)`` is called as media is hashed.
    ``follow=False``: the store's own folder must not be a link either (a
    store inside an archive).
    """
    try:
        store_fd = os.open(path, _OPEN_DIR | (0 if follow else os.O_NOFOLLOW))
    except OSError as e:
        raise StoreError(f"{path}: {e.strerror}") from e
    try:
        return _Reader(path, store_fd, progress).read()
    finally:
        os.close(store_fd)


class _Reader:
    def __init__(self, path: Path, fd: int, progress: Callable[[int, int], None] | None):
        self.path, self.fd, self.progress = path, fd, progress
        self.contents = StoreContents(path, b"")

    def refuse(self, e: _Refused, where: str) -> None:
        self.contents.findings.append(Finding(None, e.kind, str(e), file=where))

    def read(self) -> StoreContents:
        try:
            fd = _open_regular(LEDGER_NAME, self.fd, MAX_LEDGER_BYTES, LEDGER_NAME)
            self.contents.ledger = _read_bounded(fd, MAX_LEDGER_BYTES, LEDGER_NAME)
        except _Refused as e:
            self.refuse(e, LEDGER_NAME)
        except OSError as e:
            raise StoreError(f"{self.path / LEDGER_NAME}: {e.strerror}") from e
        names = _names(self.fd)
        for name in names:
            self.side_file(name)
        self.media()
        self.receipts()
        return self.contents

    def side_file(self, name: str) -> None:
        if name.startswith(TORN_PREFIX):
            try:
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except OSError:
                return
            if stat.S_ISREG(st.st_mode):
                self.contents.findings.append(Finding(None, "torn_ledger_file", f"{shown(name)}: "
                                              f"{st.st_size} bytes a power cut tore from the "
                                              "ledger, kept aside", file=shown(name)))
            else:
                self.contents.findings.append(Finding(
                    None, "not_a_regular_file", f"{shown(name)} is a {_what(st.st_mode)}",
                    file=shown(name)))
        elif name == TRUST_NAME:
            self.contents.findings.append(Finding(None, "ignored_trust_file", f"{TRUST_NAME} "
                                          "inside the store is not used to check it",
                                          file=TRUST_NAME))

    def media(self) -> None:
        try:
            media_fd = _open_dir(MEDIA_DIR, self.fd, MEDIA_DIR + "/")
        except _Refused as e:
            return self.refuse(e, MEDIA_DIR)
        if media_fd is None:
            return None
        try:
            self.hash_all(media_fd)
        finally:
            os.close(media_fd)
        return None

    def hash_all(self, media_fd: int) -> None:
        sizes: dict[str, int] = {}
        for name in _names(media_fd):
            try:
                st = os.stat(name, dir_fd=media_fd, follow_symlinks=False)
            except OSError:
                continue
            sizes[name] = st.st_size if stat.S_ISREG(st.st_mode) else 0
        total, done = sum(sizes.values()), 0
        buf = bytearray(_BUFFER)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if self.progress:
                self.progress(done, total)

        for name in sizes:
            where = f"{MEDIA_DIR}/{shown(name)}"
            try:
                fd = _open_regular(name, media_fd, MAX_MEDIA_BYTES, where)
                with open(fd, "rb", buffering=0, closefd=True) as f:
                    self.contents.media[shown(name)] = _sha256_fd(f, buf, advance,
                                                                  MAX_MEDIA_BYTES)
            except _Refused as e:
                self.refuse(e, where)
            except OSError as e:
                self.contents.findings.append(Finding(None, "unreadable_file",
                                              f"{where}: {e.strerror}", file=where))

    def receipts(self) -> None:
        try:
            receipts_fd = _open_dir(RECEIPTS_DIR, self.fd, RECEIPTS_DIR + "/")
        except _Refused as e:
            return self.refuse(e, RECEIPTS_DIR)
        if receipts_fd is None:
            return None
        try:
            for name in _names(receipts_fd):
                if not name.endswith(".json"):
                    continue
                where = f"{RECEIPTS_DIR}/{shown(name)}"
                try:
                    fd = _open_regular(name, receipts_fd, MAX_RECEIPT_BYTES, where)
                    envelope = decode_json(_read_bounded(fd, MAX_RECEIPT_BYTES, where), where)
                except _Refused as e:
                    self.refuse(e, where)
                    continue
                except ProtocolError as e:
                    self.contents.findings.append(Finding(None, "bad_receipt", str(e),
                                                  file=where))
                    continue
                except OSError as e:
                    self.contents.findings.append(Finding(None, "unreadable_file",
                                                  f"{where}: {e.strerror}", file=where))
                    continue
                self.contents.receipts.append(KeptReceipt(where, envelope))
        finally:
            os.close(receipts_fd)
        return None
