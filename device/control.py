"""The recorder's local control socket: status and commands over a Unix stream socket.

The recorder agent serves this socket; the serial maintenance console,
``custody sim`` and the tests are its clients. The command vocabulary is not
here: the recorder passes a handler (usually built with :func:`dispatch`).

Protocol: newline-delimited JSON, UTF-8. A request is one object per line,
``{"cmd": "<name>", ...args}``, optionally with an ``"id"`` that the reply
echoes. A reply is one object per line: ``{"ok": true, ...}`` or
``{"ok": false, "error": "<message>"}``.

Access control is the file system: the socket is created owner-only (0600)
in a directory that is created 0700 if missing, so only the recorder's own
user (and root) can connect. The peer's uid and pid (SO_PEERCRED, Linux) are
handed to the handler in :class:`ControlRequest` for the record (e.g. a
``console_action`` entry), not as a second gate.

Recording must never be disturbed by a client: each connection is served on
its own daemon thread with an idle/line deadline, a line-size limit and a send
timeout, connections are capped, and anything the handler raises becomes an
error reply. The handler is the only thing connections share; it may be called
from several connection threads at once, so it must be thread-safe (the
recorder typically hands commands to its own loop).
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import itertools
import json
import logging
import os
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 30.0
SEND_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 16
SOCKET_MODE = 0o600
DIRECTORY_MODE = 0o700

# Never let a vanished peer raise SIGPIPE in the recorder (Python ignores it by
# default, but an embedding process may not).
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_RECV_SIZE = 16 * 1024


class ControlError(Exception):
    """A refused or failed control command; the message is meant for the technician.

    A handler raises it to refuse a command (the server answers with the message
    and does not log a traceback); :class:`ControlClient` raises it for an
    ``ok: false`` reply or when the socket cannot be reached.

    >>> str(ControlError("not recording"))
    'not recording'
    """


@dataclass(frozen=True)
class ControlRequest:
    """One request as the handler sees it: the command, its arguments, and who asked.

    ``peer_uid``/``peer_pid`` come from SO_PEERCRED (None where the platform
    has no such option).

    >>> ControlRequest("status", {}, peer_uid=0, peer_pid=1).cmd
    'status'
    """

    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    peer_uid: int | None = None
    peer_pid: int | None = None


Handler = Callable[[ControlRequest], dict]


def dispatch(table: dict[str, Callable[..., dict]]) -> Handler:
    """A handler that calls ``table[cmd](**args)``.

    Unknown commands and arguments that do not fit the function's signature are
    refused with a :class:`ControlError` naming the command. The signature is
    checked before the call, so a TypeError raised *inside* a command is
    reported as the command's failure, not as bad arguments.

    >>> handler = dispatch({"status": lambda: {"recording": False}})
    >>> handler(ControlRequest("status"))
    {'recording': False}
    >>> try:
    ...     handler(ControlRequest("eject"))
    ... except ControlError as refusal:
    ...     print(refusal)
    unknown command 'eject'; known: status
    """
    signatures = {name: inspect.signature(function) for name, function in table.items()}

    def handle(request: ControlRequest) -> dict:
        function = table.get(request.cmd)
        if function is None:
            known = ", ".join(sorted(table))
            raise ControlError(f"unknown command {request.cmd!r}; known: {known}")
        try:
            bound = signatures[request.cmd].bind(**request.args)
        except TypeError as exc:
            raise ControlError(f"bad arguments for {request.cmd!r}: {exc}") from None
        return function(*bound.args, **bound.kwargs)

    return handle


class _LineTooLong(Exception):
    """A peer sent more than the line limit without a newline."""


class _LineReader:
    """Reads newline-terminated lines from a stream socket, bounded in size and time."""

    def __init__(self, sock: socket.socket, max_line_bytes: int):
        self._sock = sock
        self._max = max_line_bytes
        self._buffer = bytearray()

    def readline(self, timeout: float | None) -> bytes | None:
        """The next line without its newline; None at end of stream.

        Raises TimeoutError if no whole line arrives within ``timeout`` seconds
        (one deadline for the whole line, so a client dribbling a byte at a
        time cannot hold a connection forever) and :class:`_LineTooLong`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                if newline > self._max:
                    raise _LineTooLong
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line
            if len(self._buffer) > self._max:
                raise _LineTooLong
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no complete line in time")
                self._sock.settimeout(remaining)
            chunk = self._sock.recv(_RECV_SIZE)
            if not chunk:
                return None
            self._buffer += chunk


def _encode(message: dict) -> bytes:
    # ensure_ascii keeps every reply on one line whatever the strings hold.
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(uid, pid) of the connected peer, or (None, None) where SO_PEERCRED is missing."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not sys.platform.startswith("linux"):
        return None, None
    ucred = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
    try:
        pid, uid, _gid = ucred.unpack(sock.getsockopt(socket.SOL_SOCKET, option, ucred.size))
    except OSError:
        return None, None
    return uid, pid


class ControlServer:
    """Serves ``handler`` on an owner-only Unix socket at ``path``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "control.sock"
    >>> with ControlServer(path, dispatch({"ping": lambda: {"pong": True}})):
    ...     with ControlClient(path) as client:
    ...         client.call("ping")
    {'ok': True, 'pong': True}
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        idle_timeout: float = IDLE_TIMEOUT_S,
        send_timeout: float = SEND_TIMEOUT_S,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.path = Path(path)
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.max_line_bytes = max_line_bytes
        self.max_connections = max_connections
        self._listener: socket.socket | None = None
        self._socket_identity: tuple[int, int] | None = None  # (st_dev, st_ino) we bound
        self._wake_read, self._wake_write = -1, -1
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._closing = threading.Event()
        self._connection_ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------

    def start(self) -> ControlServer:
        """Bind the socket and start accepting; raises ControlError if the path is taken."""
        if self._listener is not None:
            raise RuntimeError("ControlServer already started")
        self._prepare_directory()
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # On Linux the mode of the socket's inode at bind() becomes the file's
            # mode, so the file is never, even briefly, connectable by others.
            # Elsewhere fchmod may fail: the chmod below then closes the window.
            with contextlib.suppress(OSError):
                os.fchmod(listener.fileno(), SOCKET_MODE)
            listener.bind(str(self.path))
            os.chmod(self.path, SOCKET_MODE)
            info = os.stat(self.path)
            self._socket_identity = (info.st_dev, info.st_ino)
            listener.listen(self.max_connections)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._wake_read, self._wake_write = os.pipe()
        self._closing.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"control-accept:{self.path.name}", daemon=True
        )
        self._accept_thread.start()
        logger.info("control socket listening at %s", self.path)
        return self

    def close(self) -> None:
        """Stop accepting, drop every connection and remove the socket file; returns promptly."""
        if self._listener is None:
            return
        self._closing.set()
        os.write(self._wake_write, b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=1.0)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # shutdown wakes a thread blocked in recv/send on this socket; the
            # thread itself closes it. A thread inside the handler is left to
            # finish: it is a daemon and its reply will just fail to send.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._remove_own_socket()
        logger.info("control socket at %s closed", self.path)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connection_count(self) -> int:
        """How many clients are connected now."""
        with self._lock:
            return len(self._connections)

    # -- socket file -----------------------------------------------------

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            os.chmod(directory, DIRECTORY_MODE)  # mkdir's mode is filtered by the umask

    def _remove_stale_socket(self) -> None:
        """Remove a socket left by a crashed run; refuse to touch a live one or a non-socket."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:
            logger.warning("removing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # A full backlog or a timeout still means somebody is listening.
            raise ControlError(
                f"control socket {self.path} is in use ({exc}); is another recorder running?"
            ) from exc
        finally:
            probe.close()
        raise ControlError(
            f"another server is answering on {self.path}; is another recorder running?"
        )

    def _remove_own_socket(self) -> None:
        # Only unlink the file we bound: a newer server may have replaced it.
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._socket_identity:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    # -- accepting -------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._closing.is_set():
                ready = selector.select()
                if self._closing.is_set():
                    return
                if not any(key.fileobj is listener for key, _ in ready):
                    continue
                try:
                    connection, _ = listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # Out of descriptors: back off instead of spinning.
                        logger.error("control socket cannot accept: %s", exc)
                        self._closing.wait(0.1)
                    continue
                self._admit(connection)

    def _admit(self, connection: socket.socket) -> None:
        with self._lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(connection)
        if full:
            logger.warning("control socket: connection refused, %d open", self.max_connections)
            reply = {"ok": False, "error": f"too many connections ({self.max_connections}); "
                                           "try again later"}
            # Non-blocking: the accept loop must never wait on a client.
            connection.setblocking(False)
            with contextlib.suppress(OSError):
                connection.send(_encode(reply), _SEND_FLAGS)
            connection.close()
            return
        thread = threading.Thread(
            target=self._serve,
            args=(connection,),
            name=f"control-conn-{next(self._connection_ids)}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread: drop this client, keep serving
            logger.exception("control socket: cannot start a connection thread")
            self._forget(connection)

    def _forget(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
        connection.close()

    # -- one connection --------------------------------------------------

    def _serve(self, connection: socket.socket) -> None:
        peer_uid, peer_pid = _peer_credentials(connection)
        reader = _LineReader(connection, self.max_line_bytes)
        try:
            while not self._closing.is_set():
                try:
                    line = reader.readline(self.idle_timeout)
                except TimeoutError:
                    logger.debug("control socket: closing idle connection (pid %s)", peer_pid)
                    return
                except _LineTooLong:
                    self._send(connection, {
                        "ok": False,
                        "error": f"request line longer than {self.max_line_bytes} bytes",
                    })
                    return
                if line is None:
                    return
                if not line.strip():
                    continue  # a technician's stray Enter is not an error
                reply = self._answer(line, peer_uid, peer_pid)
                if not self._send(connection, reply):
                    return
        except OSError:
            return  # peer vanished or close() shut the socket down
        finally:
            self._forget(connection)

    def _answer(self, line: bytes, peer_uid: int | None, peer_pid: int | None) -> dict:
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"malformed JSON: {exc}"}
        if not isinstance(message, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        echo = {"id": message["id"]} if "id" in message else {}
        cmd = message.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            return {"ok": False, "error": 'request needs a "cmd" string', **echo}
        args = {key: value for key, value in message.items() if key not in ("cmd", "id")}
        request = ControlRequest(cmd, args, peer_uid=peer_uid, peer_pid=peer_pid)
        try:
            result = self.handler(request)
        except ControlError as exc:
            return {"ok": False, "error": str(exc), **echo}
        except Exception as exc:
            logger.exception("control command %r failed", cmd)
            return {"ok": False, "error": f"command {cmd!r} failed: {type(exc).__name__}: {exc}",
                    **echo}
        if result is None:
            result = {}
        if not isinstance(result, dict):
            logger.error("control command %r returned %s, not a dict", cmd, type(result).__name__)
            return {"ok": False, "error": f"command {cmd!r} returned no reply object", **echo}
        reply = {"ok": True, **result, **echo}
        try:
            json.dumps(reply)
        except (TypeError, ValueError) as exc:
            logger.error("control command %r returned a reply JSON cannot hold: %s", cmd, exc)
            return {"ok": False, "error": f"command {cmd!r} returned a non-JSON reply", **echo}
        return reply

    def _send(self, connection: socket.socket, reply: dict) -> bool:
        """Send one reply line; False if the peer is gone or not reading."""
        connection.settimeout(self.send_timeout)
        try:
            connection.sendall(_encode(reply), _SEND_FLAGS)
        except OSError:  # includes TimeoutError: a client that never reads is dropped
            return False
        return True


class ControlClient:
    """A connection to a :class:`ControlServer`, kept open between calls.

    If the server restarted since the last call, the dead connection is noticed
    when the request cannot be sent, and the call reconnects once. A request that
    was sent but not answered is never re-sent (it may have been carried out).
    Calls from several threads are serialised.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "control.sock"
    >>> with ControlServer(path, dispatch({"add": lambda a, b: {"sum": a + b}})):
    ...     with ControlClient(path) as client:
    ...         client.call("add", a=2, b=3)["sum"]
    5
    """

    def __init__(self, path: Path, timeout: float = 5.0):
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: _LineReader | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(self, cmd: str, **args: Any) -> dict:
        """Send ``cmd`` with ``args``; the reply (with ``ok: true``) or ControlError."""
        with self._lock:
            request_id = next(self._ids)
            line = _encode({"cmd": cmd, **args, "id": request_id})
            reused = self._sock is not None
            try:
                self._send(line)
            except OSError as exc:
                # A server at its connection cap answers and hangs up before
                # reading: show its reason rather than a broken pipe.
                refusal = self._pending_error()
                self._disconnect()
                if refusal is not None:
                    raise ControlError(refusal) from exc
                if not reused:
                    raise self._unreachable(exc) from exc
                # The server closed our connection (restart or idle timeout)
                # before it could read the request: safe to send it again.
                try:
                    self._send(line)
                except OSError as exc2:
                    self._disconnect()
                    raise self._unreachable(exc2) from exc2
            reply = self._receive(cmd)
        if reply.get("id", request_id) != request_id:
            raise ControlError(f"reply from {self.path} does not match request {request_id}")
        if reply.get("ok") is not True:
            raise ControlError(str(reply.get("error", f"{cmd!r} failed without a message")))
        reply.pop("id", None)
        return reply

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, line: bytes) -> None:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            self._sock, self._reader = sock, _LineReader(sock, sys.maxsize)
        self._sock.settimeout(self.timeout)
        self._sock.sendall(line, _SEND_FLAGS)

    def _receive(self, cmd: str) -> dict:
        assert self._reader is not None
        try:
            line = self._reader.readline(self.timeout)
        except TimeoutError as exc:
            # A late reply would be read as the answer to the next call: drop the connection.
            self._disconnect()
            raise ControlError(
                f"no reply to {cmd!r} from {self.path} within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            self._disconnect()
            raise ControlError(f"connection to {self.path} failed during {cmd!r}: {exc}") from exc
        if line is None:
            self._disconnect()
            raise ControlError(f"{self.path} closed the connection before answering {cmd!r}")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            self._disconnect()
            raise ControlError(f"unreadable reply from {self.path}: {exc}") from exc
        if not isinstance(reply, dict):
            self._disconnect()
            raise ControlError(f"unreadable reply from {self.path}: not a JSON object")
        return reply

    def _pending_error(self) -> str | None:
        """The error of a reply already waiting on a connection we could not write to."""
        if self._reader is None:
            return None
        try:
            line = self._reader.readline(0.1)
            reply = json.loads(line) if line else None
        except (OSError, ValueError):
            return None
        if isinstance(reply, dict) and reply.get("ok") is False:
            return str(reply.get("error"))
        return None

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def _unreachable(self, exc: OSError) -> ControlError:
        if isinstance(exc, FileNotFoundError):
            why = "no such socket (is the recorder running?)"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused (stale socket: is the recorder running?)"
        elif isinstance(exc, PermissionError):
            why = "permission denied (the socket is owner-only)"
        elif isinstance(exc, TimeoutError):
            why = f"timed out after {self.timeout:g} s"
        else:
            why = str(exc)
        return ControlError(f"cannot reach control socket {self.path}: {why}")
