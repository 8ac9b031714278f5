"""Writing files so that what a caller was told is on the medium is, after a power cut.

Every layer writes through these few functions, so each rule is kept once:

- :func:`write_new` — a new file, never over an existing one; under its final
  name it is whole or absent (written and fsynced under a temporary name, then
  hard-linked to the final name, which fails if the name is taken).
- :func:`replace_atomically` — a file replaced whole: temporary name, fsync,
  rename, fsync of the folder. Readers see the old file or the new one.
- :func:`append_durably` — bytes added at the end of a file, fsynced.
- :func:`overwrite_durably` — a small file rewritten in place, for files kept
  in pairs that take turns, where a torn one is tolerated by design and a
  rename per write would cost a folder fsync each time.
- :func:`fsync_dir`, :func:`fsync_file` — make a name, or a file's bytes, durable.
- :func:`remove_temporaries` — at a writer's start, the temporary files a cut
  left behind (never evidence: see its docstring).

A name is durable only once its folder is fsynced, so every function that
creates a name fsyncs the folder before it returns.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_new(folder / "receipt.json", b"{}")
>>> try:
...     write_new(folder / "receipt.json", b"[]")
... except FileExistsError:
...     print("refused")
refused
>>> replace_atomically(folder / "trust.json", b"v2")
>>> append_durably(folder / "log", b"one\\n"), append_durably(folder / "log", b"two\\n")
(0, 4)
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger("custody.durable")

#: Temporary names start with a dot and end with this and a random part, so no
#: ``*.json`` / ``*.checkpoint`` / ``*.seg`` glob of a store ever takes one.
TEMP_MARK = ".tmp-"
_TOKEN_BYTES = 4
#: Exactly the names :func:`_temp_beside` gives: ``.<final name>.tmp-<8 hex digits>``.
TEMP_NAME = re.compile(r"\.(?P<target>.+)" + re.escape(TEMP_MARK)
                       + f"[0-9a-f]{{{2 * _TOKEN_BYTES}}}")


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` (created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make the bytes of an existing file durable (written by someone else, or earlier)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _temp_beside(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new, fsynced file in ``path``'s folder; the caller names it."""
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(_TOKEN_BYTES)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # not narrowed by the umask: the caller's mode is the file's
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` holding ``data``; FileExistsError if the name is taken.

    Never overwrites, and never leaves a partial file under ``path``: a cut
    at any step leaves ``path`` absent or whole (and perhaps a dot-named
    temporary file beside it, which no reader takes for the real one).
    """
    path = Path(path)
    if os.path.lexists(path):  # before writing anything; the link below is the real check
        raise FileExistsError(17, "File exists", str(path))
    tmp = _temp_beside(path, data, mode)
    try:
        os.link(tmp, path)  # fails rather than replace a file created meanwhile
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def replace_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Make ``path`` hold ``data``, replacing any file there whole (never a mix of both)."""
    path = Path(path)
    tmp = _temp_beside(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def append_durably(path: Path, data: bytes, mode: int = 0o644) -> int:
    """Append ``data`` to ``path`` (created if absent) and fsync; returns the offset it starts at.

    A cut during the write may leave part of ``data`` at the end: an
    append-only file's reader must treat an unterminated last record as torn.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        start = os.fstat(fd).st_size
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if start == 0:
        fsync_dir(path.parent)  # perhaps a new name: make it durable too
    return start


def overwrite_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Rewrite ``path`` in place with ``data`` and fsync (its folder too if it was new).

    A cut during the write can tear the file: only for files kept in pairs that
    take turns, whose reader takes the newest one that checks.
    """
    path = Path(path)
    created = not os.path.lexists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def temporary_target(name: str) -> str | None:
    """The final name a temporary file of these helpers was for, or None if ``name``
    is not exactly such a temporary name."""
    m = TEMP_NAME.fullmatch(name)
    return m.group("target") if m else None


def remove_temporaries(folder: Path, targets: Collection[str] | None = None) -> list[Path]:
    """Remove the temporary files a cut left in ``folder``; returns them, each logged.

    Call it where the folder's only writer starts, before it writes. A
    temporary file is never evidence: :func:`write_new` and
    :func:`replace_atomically` write it whole and fsync it *before* giving it
    its final name, so one still there is either a second link to a file that
    has its name already (the cut came between the link and the unlink) or
    bytes no caller was ever told were written, whose caller still holds them
    where they were (a ledger's torn line, a pending file's tail, the previous
    checkpoint). Only regular files whose name is exactly ``TEMP_NAME`` go (and
    with ``targets``, only those for one of those final names); nothing else
    is touched, links are not followed, subfolders are not entered.
    """
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in sorted(names):
        target = temporary_target(name)
        if target is None or (targets is not None and target not in targets):
            continue
        path = folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            log.warning("%s: named like a temporary file but not a regular file; left", path)
            continue
        path.unlink()
        removed.append(path)
        log.warning("removed %s: a temporary file a cut left (%d bytes; %s)", path, st.st_size,
                    "linked under another name too" if st.st_nlink > 1
                    else f"never named {target}")
    if removed:
        fsync_dir(folder)
    return removed
