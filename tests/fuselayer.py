"""A FUSE pass-through layer that forgets every write not yet fsynced when the power is cut.

Like LazyFS: a process killed with SIGKILL keeps whatever it wrote in the page
cache, so a kill is not a power cut. Behind this layer, file data written
through the mount is held in memory (per backing inode) until the file is
fsync'd or fdatasync'd; only then does it reach the backing folder, in the
order written. :meth:`LazyLayer.cut` is the power cut: from that instant every
write and fsync fails and everything not yet synced is gone. What the backing
folder holds then is what a medium would hold after the cut.

Metadata (create, mkdir, rename, link, unlink, truncate, and extended
attributes) goes straight to the backing folder, as a journaling filesystem
may commit it before the data it names: a fragment mark can survive a cut
without its bytes, which recovery must (and does) cope with. Extended
attributes are passed through, since the device store relies on them.

    layer = LazyLayer(backing, mount)   # mounts (fuse3 + mfusepy; root or /dev/fuse access)
    ...                                 # a program writes in ``mount``
    layer.cut()                         # power cut: unsynced writes forgotten, later ones fail
    layer.restore()                     # power back: the layer serves the backing folder again
    layer.close()                       # unmount

The layer runs in a process of its own (``python -m tests.fuselayer BACKING
MOUNT SOCKET``), told to cut and restore over a Unix socket.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_UNMOUNT = ("fusermount3", "-u")


@dataclass
class _Unsynced:
    """The writes to one backing inode since its last fsync, in order."""

    writes: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0  # the file's size as the writer sees it

    def read(self, backing: bytes, offset: int, size: int) -> bytes:
        data = bytearray(backing)
        end = offset + size
        for at, chunk in self.writes:
            lo, hi = max(at, offset), min(at + len(chunk), end)
            if lo >= hi:
                continue
            if len(data) < hi - offset:
                data.extend(bytes(hi - offset - len(data)))
            data[lo - offset:hi - offset] = chunk[lo - at:hi - at]
        return bytes(data[: max(0, min(end, self.size) - offset)])


def _operations(backing: Path):
    """The FUSE operations (mfusepy), imported only in the layer's own process."""
    import mfusepy
    from mfusepy import FuseOSError, Operations

    class Lazy(Operations):
        use_ns = True

        def __init__(self) -> None:
            self.root = str(backing)
            self._mutex = threading.RLock()
            self.unsynced: dict[int, _Unsynced] = {}  # backing inode -> writes
            self.inode: dict[int, int] = {}  # open file handle -> backing inode
            self.power = True

        def _path(self, path: str) -> str:
            return self.root + path

        def _alive(self) -> None:
            if not self.power:
                raise FuseOSError(errno.EIO)

        # --- the control socket's commands ---------------------------------------------
        def cut(self) -> None:
            with self._mutex:
                self.power = False
                self.unsynced.clear()

        def restore(self) -> None:
            with self._mutex:
                self.unsynced.clear()
                self.power = True

        # --- metadata: straight through --------------------------------------------------
        def getattr(self, path, fh=None):
            st = os.lstat(self._path(path))
            attrs = {k: getattr(st, k) for k in (
                "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns,
                         st_ctime=st.st_ctime_ns)
            with self._mutex:
                pending = self.unsynced.get(st.st_ino)
                if pending is not None:
                    attrs["st_size"] = pending.size
            return attrs

        def access(self, path, amode):
            if not os.access(self._path(path), amode):
                raise FuseOSError(errno.EACCES)
            return 0

        def readdir(self, path, fh):
            return [".", "..", *os.listdir(self._path(path))]

        def readlink(self, path):
            return os.readlink(self._path(path))

        def mkdir(self, path, mode):
            self._alive()
            return os.mkdir(self._path(path), mode)

        def rmdir(self, path):
            self._alive()
            return os.rmdir(self._path(path))

        def unlink(self, path):
            self._alive()
            return os.unlink(self._path(path))

        def rename(self, old, new):
            self._alive()
            return os.rename(self._path(old), self._path(new))

        def link(self, target, source):
            self._alive()
            return os.link(self._path(source), self._path(target))

        def symlink(self, target, source):
            self._alive()
            return os.symlink(source, self._path(target))

        def chmod(self, path, mode):
            return os.chmod(self._path(path), mode)

        def chown(self, path, uid, gid):
            return os.chown(self._path(path), uid, gid)

        def utimens(self, path, times=None):
            return os.utime(self._path(path), ns=times)

        def statfs(self, path):
            st = os.statvfs(self._path(path))
            return {k: getattr(st, k) for k in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")}

        def setxattr(self, path, name, value, options, position=0):
            self._alive()
            os.setxattr(self._path(path), name, value, options)
            return 0

        def getxattr(self, path, name, position=0):
            try:
                return os.getxattr(self._path(path), name)
            except OSError as e:
                raise FuseOSError(e.errno) from None

        def listxattr(self, path):
            return os.listxattr(self._path(path))

        def removexattr(self, path, name):
            self._alive()
            os.removexattr(self._path(path), name)
            return 0

        # --- data: held until fsync ------------------------------------------------------
        def _opened(self, fd: int) -> int:
            with self._mutex:
                self.inode[fd] = os.fstat(fd).st_ino
            return fd

        def create(self, path, mode, fi=None):
            self._alive()
            fd = os.open(self._path(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
            return self._opened(fd)

        def open(self, path, flags):
            # Offsets come from the kernel: the backing file is never opened O_APPEND.
            flags &= ~(os.O_APPEND | os.O_CREAT | os.O_EXCL)
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            if flags & os.O_TRUNC:
                self._alive()
            with self._mutex:
                fd = self._opened(os.open(self._path(path), flags))
                if flags & os.O_TRUNC:  # what was written before is gone, synced or not
                    self.unsynced.pop(self.inode[fd], None)
                return fd

        def read(self, path, size, offset, fh):
            with self._mutex:
                backing = os.pread(fh, size, offset)
                pending = self.unsynced.get(self.inode[fh])
                return backing if pending is None else pending.read(backing, offset, size)

        def write(self, path, data, offset, fh):
            with self._mutex:
                self._alive()
                ino = self.inode[fh]
                pending = self.unsynced.get(ino)
                if pending is None:
                    pending = self.unsynced[ino] = _Unsynced(size=os.fstat(fh).st_size)
                pending.writes.append((offset, bytes(data)))
                pending.size = max(pending.size, offset + len(data))
                return len(data)

        def truncate(self, path, length, fh=None):
            with self._mutex:
                self._alive()
                os.truncate(self._path(path), length)
                pending = self.unsynced.get(os.stat(self._path(path)).st_ino)
                if pending is not None:
                    pending.writes = [(at, chunk[: max(0, length - at)])
                                      for at, chunk in pending.writes if at < length]
                    pending.size = length
                return 0

        def fsync(self, path, datasync, fh):
            with self._mutex:
                self._alive()
                pending = self.unsynced.pop(self.inode[fh], None)
                if pending is not None:
                    for at, chunk in pending.writes:
                        os.pwrite(fh, chunk, at)
                os.fsync(fh)
                return 0

        def fsyncdir(self, path, datasync, fh):
            self._alive()
            return 0

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            with self._mutex:
                self.inode.pop(fh, None)
            os.close(fh)
            return 0

    return mfusepy, Lazy()


def _serve(backing: Path, mount: Path, control: Path) -> None:
    mfusepy, ops = _operations(backing)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(control))
    server.listen()

    def answer() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                command = conn.recv(64).decode().strip()
                {"cut": ops.cut, "restore": ops.restore}.get(command, lambda: None)()
                conn.sendall(b"ok\n")

    threading.Thread(target=answer, daemon=True).start()
    # No page cache and no cached attributes in the kernel: after a cut, nothing the
    # layer forgot can be read back from the kernel's memory.
    mfusepy.FUSE(ops, str(mount), foreground=True, nothreads=False, fsname="lazylayer",
                 direct_io=True, hard_remove=True, attr_timeout=0, entry_timeout=0,
                 negative_timeout=0)


class LazyLayer:
    """The layer over ``backing``, mounted at ``mount`` while this object lives."""

    def __init__(self, backing: Path, mount: Path, timeout: float = 10):
        self.backing, self.mount = Path(backing), Path(mount)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.control = self.mount.parent / f".{self.mount.name}.lazylayer.sock"
        self.control.unlink(missing_ok=True)
        self._log = open(  # noqa: SIM115 - open while the layer runs; close() closes it
            self.mount.parent / f".{self.mount.name}.lazylayer.log", "wb")
        repo = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuselayer", str(self.backing), str(self.mount),
             str(self.control)], cwd=repo, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mount) and self.control.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the FUSE layer did not mount at {self.mount}; see "
                                   f"{self._log.name}")
            time.sleep(0.02)

    def _tell(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.control))
            conn.sendall(command.encode() + b"\n")
            if conn.recv(8) != b"ok\n":
                raise RuntimeError(f"the FUSE layer did not {command}")

    def cut(self) -> None:
        """The power cut: every write not yet fsynced is gone; writes and fsyncs now fail."""
        self._tell("cut")

    def restore(self) -> None:
        """Power back: an empty page cache, and writes go through again."""
        self._tell("restore")

    def close(self) -> None:
        if os.path.ismount(self.mount):
            subprocess.run([*_UNMOUNT, str(self.mount)], capture_output=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.control.unlink(missing_ok=True)

    def __enter__(self) -> LazyLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
