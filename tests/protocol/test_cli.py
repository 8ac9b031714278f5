"""The ``custody`` command as users run it: exit codes, messages, files."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import av

from hardware.sim.pattern import read_frame_index
from protocol.entries import Interruption
from protocol.store_reader import MEDIA_DIR
from tests.conftest import Unit


def custody(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_verify_intact_store_exits_0_with_a_table(unit: Unit):
    r = custody("verify", unit.store, "--trust", unit.keys / "trust.json")
    assert r.returncode == 0, r.stderr
    assert "verdict: INTACT" in r.stdout
    assert "PC-0042" in r.stdout and "scene" in r.stdout


def test_verify_finds_the_trust_file_beside_the_store(unit: Unit):
    assert custody("verify", unit.store).returncode == 0  # keys/ next to the store


def test_verify_json(unit: Unit):
    r = custody("verify", unit.store, "--json")
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "intact" and doc["device"] == "DEV-0001"
    assert len(doc["recordings"][0]) >= 8


def test_verify_tampered_exits_1_naming_the_finding(unit: Unit):
    f = sorted((unit.store / MEDIA_DIR).iterdir())[0]
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    r = custody("verify", unit.store)
    assert r.returncode == 1
    assert "BROKEN" in r.stdout and "media_hash" in r.stdout and f.name in r.stdout


def test_verify_unexplained_interruption_exits_3(unit: Unit):
    unit.append(Interruption(reason="storage_full", detected_by="storage", cut_utc_ns=0))
    r = custody("verify", unit.store)
    assert r.returncode == 3
    assert "INTACT_UNEXPLAINED_GAPS" in r.stdout and "MISSING" in r.stdout


def test_verify_usage_errors_exit_2_naming_the_path(unit: Unit, tmp_path: Path):
    missing = tmp_path / "nowhere"
    r = custody("verify", missing, "--trust", unit.keys / "trust.json")
    assert r.returncode == 2 and str(missing) in r.stderr
    bad_trust = tmp_path / "trust.json"
    bad_trust.write_text("{not json")
    r = custody("verify", unit.store, "--trust", bad_trust)
    assert r.returncode == 2 and str(bad_trust) in r.stderr
    assert custody("verify").returncode == 2


def test_verify_an_archive_of_several_devices(unit: Unit, other_store: Path, tmp_path: Path):
    archive = tmp_path / "archive"
    (archive / "devices").mkdir(parents=True)
    shutil.copytree(unit.store, archive / "devices" / "DEV-0001")
    shutil.copytree(other_store, archive / "devices" / "DEV-0002")
    (archive / "trust.json").write_bytes((unit.keys / "trust.json").read_bytes())
    r = custody("verify", archive, "--json")
    assert r.returncode == 0, r.stdout
    doc = json.loads(r.stdout)
    assert [d["device"] for d in doc["stores"]] == ["DEV-0001", "DEV-0002"]
    assert doc["verdict"] == "intact" and doc["findings"] == []


def test_export_writes_playable_segments_in_seq_order(unit: Unit, tmp_path: Path):
    out = tmp_path / "out"
    r = custody("export", unit.store, "--key", unit.keys / "archive-secret.key", "--out", out)
    assert r.returncode == 0, r.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["00000004-segment.mp4", "00000005-segment.mp4",
                                       "00000006-segment.mp4"]
    for f in files:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                                "-of", "csv=p=0", f], capture_output=True, text=True, check=True)
        assert probe.stdout.split() == ["h264", "flac"]
    with av.open(str(files[1])) as c:  # the second segment: frames 20..39, in order
        assert [read_frame_index(f) for f in c.decode(video=0)] == list(range(20, 40))


def test_export_refuses_a_tampered_segment_by_name(unit: Unit, tmp_path: Path):
    f = sorted((unit.store / MEDIA_DIR).iterdir())[1]
    data = bytearray(f.read_bytes())
    data[200] ^= 0xFF
    f.write_bytes(data)
    out = tmp_path / "out"
    r = custody("export", unit.store, "--key", unit.keys / "archive-secret.key", "--out", out)
    assert r.returncode == 1
    assert f.name in r.stderr and "REFUSED" in r.stderr
    assert len(list(out.iterdir())) == 2  # the others are still exported


def test_export_with_a_bad_key_file_exits_2(unit: Unit, tmp_path: Path):
    key = tmp_path / "k"
    key.write_text("nope")
    r = custody("export", unit.store, "--key", key, "--out", tmp_path / "o")
    assert r.returncode == 2 and str(key) in r.stderr


def test_provision_writes_private_keys_0600_and_never_replaces_them(tmp_path: Path):
    keys = tmp_path / "keys"
    r = custody("provision", "unit", "--keys", keys, "--unit", "u1", "--dock", "D1")
    assert r.returncode == 0, r.stderr
    r = custody("provision", "device", "--keys", keys, "--device", "X1", "--store",
                tmp_path / "s", "--officer", "PC-1")
    assert r.returncode == 0, r.stderr
    private = [keys / "archive-secret.key", keys / "archive-signing.key",
               keys / "docks" / "D1.key", keys / "devices" / "X1.key"]
    for p in private:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert p.read_bytes().hex() not in r.stdout + r.stderr
    before = [p.read_bytes() for p in private]
    again = custody("provision", "unit", "--keys", keys, "--unit", "u1")
    assert again.returncode == 2 and "already" in again.stderr
    twice = custody("provision", "device", "--keys", keys, "--device", "X1", "--store",
                    tmp_path / "s2")
    assert twice.returncode == 2 and "X1" in twice.stderr
    assert [p.read_bytes() for p in private] == before
    assert custody("verify", tmp_path / "s", "--trust", keys / "trust.json").returncode == 0
