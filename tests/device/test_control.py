"""The recorder's control socket over real Unix sockets: what the console and sim rely on."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.control import (
    MAX_CONNECTIONS,
    MAX_LINE_BYTES,
    ControlClient,
    ControlError,
    ControlRequest,
    ControlServer,
    dispatch,
)
from tests.device.conftest import wait_for

PROMPT_S = 0.5  # what "does not delay another client" means here


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte limit of a Unix socket path.
    directory = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def path(socket_dir: Path) -> Path:
    return socket_dir / "control.sock"


class Recorder:
    """A stand-in for the recorder's command table, with a command that blocks on demand."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.requests: list[ControlRequest] = []

    def handler(self, request: ControlRequest) -> dict:
        self.requests.append(request)
        if request.cmd == "whoami":
            return {"uid": request.peer_uid, "pid": request.peer_pid}
        return dispatch({
            "add": lambda a, b: {"sum": a + b},
            "echo": lambda **args: {"args": args},
            "big": lambda size: {"data": "x" * size},
            "boom": self.boom,
            "inner_type_error": lambda: {"n": len(5)},  # type: ignore[arg-type]
            "stall": self.stall,
        })(request)

    def boom(self) -> dict:
        raise RuntimeError("camera driver exploded")

    def stall(self) -> dict:
        self.entered.set()
        self.release.wait(5)
        return {"stalled": True}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.release.set()


@pytest.fixture
def server(path: Path, recorder: Recorder) -> Iterator[ControlServer]:
    with ControlServer(path, recorder.handler) as server:
        yield server


def raw_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.connect(str(path))
    return sock


def read_reply(sock: socket.socket) -> dict | None:
    """One reply line from a raw socket; None if the server hung up first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None if not data else json.loads(data)
        data += chunk
    return json.loads(data)


def exchange(sock: socket.socket, line: bytes) -> dict | None:
    sock.sendall(line)
    return read_reply(sock)


def test_round_trip_on_one_reused_connection(server: ControlServer, path: Path) -> None:
    with ControlClient(path) as client:
        assert client.call("add", a=2, b=3) == {"ok": True, "sum": 5}
        assert client.call("echo", officer="PC-0042", n=[1, 2]) == {
            "ok": True, "args": {"officer": "PC-0042", "n": [1, 2]},
        }
    assert server.connection_count <= 1


def test_reply_echoes_the_request_id(server: ControlServer, path: Path) -> None:
    with raw_connect(path) as sock:
        assert exchange(sock, b'{"cmd": "add", "a": 1, "b": 2, "id": "r7"}\n') == {
            "ok": True, "sum": 3, "id": "r7",
        }
        # ...and the id is not passed to the command as an argument.
        assert exchange(sock, b'{"cmd": "echo", "id": 8}\n') == {"ok": True, "args": {}, "id": 8}


def test_socket_is_owner_only_even_with_a_permissive_umask(
    socket_dir: Path, recorder: Recorder
) -> None:
    path = socket_dir / "run" / "custody" / "control.sock"
    old_umask = os.umask(0)
    try:
        server = ControlServer(path, recorder.handler).start()
    finally:
        os.umask(old_umask)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    finally:
        server.close()


def test_stale_socket_from_a_crashed_run_is_replaced(path: Path, recorder: Recorder) -> None:
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()  # the file stays behind, as after a crash
    assert path.exists()
    with ControlServer(path, recorder.handler), ControlClient(path) as client:
        assert client.call("add", a=1, b=1)["sum"] == 2


def test_a_live_server_is_not_replaced(server: ControlServer, path: Path,
                                       recorder: Recorder) -> None:
    with pytest.raises(ControlError, match="another server is answering"):
        ControlServer(path, recorder.handler).start()
    with ControlClient(path) as client:  # the first server is unharmed
        assert client.call("add", a=1, b=2)["sum"] == 3


def test_a_file_that_is_not_a_socket_is_left_alone(path: Path, recorder: Recorder) -> None:
    path.write_text("technician's notes")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(path, recorder.handler).start()
    assert path.read_text() == "technician's notes"


def test_malformed_lines_are_answered_and_the_connection_stays_usable(
    server: ControlServer, path: Path
) -> None:
    with raw_connect(path) as sock:
        for bad, message in [
            (b"status please\n", "malformed JSON"),
            (b"\xff\xfe\n", "malformed JSON"),
            (b"[1, 2]\n", "JSON object"),
            (b'{"a": 1}\n', '"cmd"'),
            (b'{"cmd": 5, "id": 3}\n', '"cmd"'),
        ]:
            reply = exchange(sock, bad)
            assert reply is not None and reply["ok"] is False, bad
            assert message in reply["error"]
        assert exchange(sock, b'{"cmd": "nope", "id": 4}\n') == {
            "ok": False, "id": 4,
            "error": "unknown command 'nope'; known: add, big, boom, echo, inner_type_error, stall",
        }
        assert exchange(sock, b'\n{"cmd": "add", "a": 4, "b": 5}\r\n') == {"ok": True, "sum": 9}


def test_oversize_line_is_refused_and_the_connection_closed(
    server: ControlServer, path: Path
) -> None:
    with raw_connect(path) as sock:
        # The server may hang up before we finish sending; its reply is still queued.
        with contextlib.suppress(BrokenPipeError):
            sock.sendall(b'{"cmd": "echo", "pad": "' + b"x" * (MAX_LINE_BYTES + 10))
        reply = read_reply(sock)
        assert reply is not None and reply["ok"] is False
        assert str(MAX_LINE_BYTES) in reply["error"]
        assert sock.recv(1) == b""
    with ControlClient(path) as client:
        # The server hangs up while the client is still sending: the client
        # reports the server's reason, not a broken pipe.
        with pytest.raises(ControlError, match=f"longer than {MAX_LINE_BYTES} bytes"):
            client.call("echo", pad="x" * 1_000_000)
        assert client.call("add", a=1, b=1)["sum"] == 2
    # A line just under the limit is fine.
    with ControlClient(path) as client:
        pad = "x" * (MAX_LINE_BYTES - 100)
        assert client.call("echo", pad=pad)["args"]["pad"] == pad


def test_handler_exception_becomes_an_error_reply_and_is_logged(
    server: ControlServer, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="device.control")
    with ControlClient(path) as client:
        with pytest.raises(ControlError, match="'boom' failed: RuntimeError: camera driver"):
            client.call("boom")
        assert client.call("add", a=2, b=2)["sum"] == 4  # same connection, still served
    assert any(r.exc_info and "boom" in r.getMessage() for r in caplog.records)


def test_dispatch_names_the_command_on_bad_arguments(server: ControlServer, path: Path) -> None:
    with ControlClient(path) as client:
        with pytest.raises(ControlError, match="bad arguments for 'add'.*'b'"):
            client.call("add", a=1)
        with pytest.raises(ControlError, match="bad arguments for 'add'.*'c'"):
            client.call("add", a=1, b=2, c=3)
        # A TypeError *inside* a command is its failure, not the caller's mistake.
        with pytest.raises(ControlError, match="'inner_type_error' failed: TypeError"):
            client.call("inner_type_error")


def test_stuck_and_misbehaving_clients_do_not_delay_another_client(
    server: ControlServer, path: Path, recorder: Recorder
) -> None:
    silent = raw_connect(path)                      # connects, never sends
    half = raw_connect(path)
    half.sendall(b'{"cmd": "add", "a"')             # half a line, then nothing
    flooder = raw_connect(path)
    flooder.setblocking(False)
    flood_line = b'{"cmd": "big", "size": 60000}\n'
    try:                                            # requests, replies never read
        while True:
            flooder.send(flood_line * 16)
    except BlockingIOError:
        pass
    stalled = ControlClient(path, timeout=5)        # a command stuck in the handler
    stall_thread = threading.Thread(target=lambda: stalled.call("stall"), daemon=True)
    stall_thread.start()
    assert recorder.entered.wait(2)
    hang_up = raw_connect(path)                     # asks for a big reply, leaves
    hang_up.sendall(b'{"cmd": "big", "size": 2000000}\n')
    hang_up.close()
    try:
        started = time.monotonic()
        with ControlClient(path) as client:
            assert client.call("add", a=20, b=22)["sum"] == 42
        assert time.monotonic() - started < PROMPT_S
    finally:
        recorder.release.set()
        stall_thread.join(2)
        stalled.close()
        for sock in (silent, half, flooder):
            sock.close()


def test_disconnecting_mid_reply_frees_the_connection(
    server: ControlServer, path: Path
) -> None:
    sock = raw_connect(path)
    sock.sendall(b'{"cmd": "big", "size": 4000000}\n')
    sock.recv(10)  # the reply has started
    sock.close()
    assert wait_for(lambda: server.connection_count == 0)


def test_idle_and_dribbling_clients_are_disconnected(path: Path, recorder: Recorder) -> None:
    with ControlServer(path, recorder.handler, idle_timeout=0.2) as server:
        idle = raw_connect(path)
        dribbler = raw_connect(path)
        started = time.monotonic()
        sent = 0
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            # A byte at a time, each gap well inside the idle timeout: the line's
            # deadline, not the gap, must cut it off.
            while time.monotonic() - started < 2.0:
                dribbler.sendall(b"{")
                sent += 1
                time.sleep(0.03)
        assert sent > 3
        assert time.monotonic() - started < 1.0
        assert idle.recv(1) == b""
        assert wait_for(lambda: server.connection_count == 0)
        idle.close()
        dribbler.close()


def test_connections_beyond_the_cap_are_refused_with_a_reason(
    server: ControlServer, path: Path
) -> None:
    held = [raw_connect(path) for _ in range(MAX_CONNECTIONS)]
    try:
        assert wait_for(lambda: server.connection_count == MAX_CONNECTIONS)
        with pytest.raises(ControlError, match="too many connections"):
            ControlClient(path).call("add", a=1, b=1)
        held.pop().close()
        assert wait_for(lambda: server.connection_count == MAX_CONNECTIONS - 1)
        with ControlClient(path) as client:
            assert client.call("add", a=1, b=1)["sum"] == 2
    finally:
        for sock in held:
            sock.close()


def test_client_error_names_the_path_when_no_server(path: Path) -> None:
    with pytest.raises(ControlError, match=f"{path}.*no such socket"):
        ControlClient(path).call("status")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a stale socket: nobody listening
    dead.close()
    with pytest.raises(ControlError, match=f"{path}.*refused"):
        ControlClient(path).call("status")


def test_client_times_out_naming_the_path_and_recovers(
    server: ControlServer, path: Path, recorder: Recorder
) -> None:
    with ControlClient(path, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(ControlError, match=f"no reply to 'stall' from {path}"):
            client.call("stall")
        assert time.monotonic() - started < 1.0
        recorder.release.set()
        # The late 'stall' reply must not be taken as the answer to this call.
        assert client.call("add", a=1, b=2) == {"ok": True, "sum": 3}


def test_client_reconnects_once_after_the_server_restarts(path: Path, recorder: Recorder) -> None:
    client = ControlClient(path)
    with ControlServer(path, recorder.handler):
        assert client.call("add", a=1, b=1)["sum"] == 2
    with ControlServer(path, recorder.handler):
        assert client.call("add", a=2, b=2)["sum"] == 4
    client.close()


def test_close_removes_the_socket_and_returns_fast(path: Path, recorder: Recorder) -> None:
    server = ControlServer(path, recorder.handler).start()
    stuck = raw_connect(path)
    stalled = ControlClient(path)
    stall_errors: list[ControlError] = []

    def call_stall() -> None:
        try:
            stalled.call("stall")
        except ControlError as exc:
            stall_errors.append(exc)

    thread = threading.Thread(target=call_stall, daemon=True)
    thread.start()
    assert recorder.entered.wait(2)
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 1.0
    assert not path.exists()
    assert stuck.recv(1) == b""  # connections are closed, not left hanging
    recorder.release.set()
    thread.join(2)
    assert "closed the connection before answering 'stall'" in str(stall_errors[0])
    stuck.close()
    stalled.close()
    with pytest.raises(ControlError, match="no such socket"):
        ControlClient(path).call("add", a=1, b=1)


def test_handler_sees_the_peer_credentials(server: ControlServer, path: Path) -> None:
    with ControlClient(path) as client:
        assert client.call("whoami") == {"ok": True, "uid": os.getuid(), "pid": os.getpid()}
