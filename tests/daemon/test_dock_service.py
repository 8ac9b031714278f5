"""`custody dock` as systemd runs it: settings checked by key, killed mid-transfer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.dock.config import DockConfig, DockConfigError
from device.offload import DockError
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR
from tests.daemon.dockkit import MIB, dock_config, make_unit, verify_archive


def start_dock(config_path: Path, log: Path) -> tuple[subprocess.Popen, int]:
    out = open(log, "ab")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen([sys.executable, "-m", "custody_cli", "dock", "--config",
                             str(config_path)], stdout=subprocess.PIPE, stderr=out,
                            start_new_session=True)
    line = proc.stdout.readline().decode()  # "listening HOST PORT"
    assert line.startswith("listening"), f"dock did not start: {log.read_text()}"
    return proc, int(line.split()[2])


def test_bad_setting_exits_naming_the_key(tmp_path):
    path = tmp_path / "dock.toml"
    path.write_text('dock_id = "DOCK-01"\nmax_uploads = 0\n')
    result = subprocess.run([sys.executable, "-m", "custody_cli", "dock", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "max_uploads" in result.stderr
    with pytest.raises(DockConfigError, match="listen_prot.*did you mean"):
        DockConfig.from_toml("listen_prot = 1")
    with pytest.raises(DockConfigError, match="archive: required"):
        DockConfig.from_toml('dock_id = "D"').require()


def test_dock_killed_mid_transfer_loses_nothing_duplicates_nothing(tmp_path):
    keys, (dev,) = make_unit(tmp_path)
    archive = tmp_path / "archive"
    config = dock_config(keys, archive)
    path = tmp_path / "dock.toml"
    path.write_text(config.to_toml())
    names = dev.record([24 * MIB, 3 * MIB])
    proc, port = start_dock(path, tmp_path / "dock.log")
    offloader = dev.offloader(f"https://127.0.0.1:{port}", chunk_bytes=1 * MIB).start()
    try:
        deadline = time.monotonic() + 30
        while offloader.status()["bytes_done"] < 6 * MIB:
            assert time.monotonic() < deadline, offloader.status()
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the dock dies mid-transfer
        proc.wait()
        time.sleep(1.0)
        # Nothing freed without a receipt; the device keeps trying.
        assert dev.media_left() == sorted(names)
        assert offloader.status()["state"] in ("waiting", "offloading")
        config = config.__class__(**{**config.__dict__, "listen_port": port})
        path.write_text(config.to_toml())
        proc, _ = start_dock(path, tmp_path / "dock.log")
        deadline = time.monotonic() + 60
        while dev.media_left():
            assert time.monotonic() < deadline, offloader.status()
            time.sleep(0.05)
    finally:
        offloader.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    report = verify_archive(archive, dev.name)
    assert report.verdict == "intact", [f.message for f in report.findings]
    archived = split_lines((archive / "devices" / dev.name / LEDGER_NAME).read_bytes())
    seqs = [parse_line(line).entry.seq for line in archived]
    assert seqs == list(range(len(seqs)))  # nothing twice, nothing skipped
    assert sorted(p.name for p in (archive / "devices" / dev.name / MEDIA_DIR).iterdir()) == \
        sorted(names)
    # The resumed upload did not start over: at most a chunk or so was sent twice.
    assert offloader.status()["bytes_sent"] <= 27 * MIB + 2 * MIB
    assert proc.returncode == 0


def test_offloader_never_frees_when_the_dock_is_gone(tmp_path):
    keys, (dev,) = make_unit(tmp_path)
    dev.record([1000])
    with pytest.raises(DockError):
        dev.offloader("https://127.0.0.1:9").offload_round()
    assert dev.media_left() == sorted(dev.files)


def test_dock_tells_systemd_it_is_ready_and_pings_the_watchdog(tmp_path):
    import socket

    keys, _ = make_unit(tmp_path)
    path = tmp_path / "dock.toml"
    path.write_text(dock_config(keys, tmp_path / "archive").to_toml())
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "custody_cli", "dock", "--config",
                             str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        messages = []
        while sum(m.count("WATCHDOG=1") for m in messages) < 3:
            messages.append(notify.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert messages.index(next(m for m in messages if "READY=1" in m)) < \
            messages.index(next(m for m in messages if "WATCHDOG=1" in m))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        while "STOPPING=1" not in notify.recv(4096).decode():
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        notify.close()
