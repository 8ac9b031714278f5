"""File tricks: the verifier reads only regular files inside the store, bounded,
never through a link, never blocking — and no input gives a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import store_reader
from protocol.entries import Marker
from protocol.store_reader import MEDIA_DIR, RECEIPTS_DIR, read_store
from protocol.verify import BROKEN, INTACT
from protocol.verify_cli import render
from tests.conftest import DEVICE, Unit


def custody_verify(*args: object) -> subprocess.CompletedProcess:
    custody = Path(sys.executable).parent / "custody"
    return subprocess.run([str(custody), "verify", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def store_findings(unit: Unit) -> dict[str, str]:
    return {f.file: f.kind for f in read_store(unit.store).findings}


def test_a_fifo_in_receipts_is_a_finding_not_a_hang(unit: Unit):
    (unit.store / RECEIPTS_DIR).mkdir()
    os.mkfifo(unit.store / RECEIPTS_DIR / "r1.json")
    r = custody_verify(unit.store)  # would block forever reading the FIFO
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not_a_regular_file" in r.stdout and "receipts/r1.json" in r.stdout


def test_a_fifo_as_the_ledger_is_a_finding_not_a_hang(unit: Unit):
    unit.ledger_path.unlink()
    os.mkfifo(unit.ledger_path)
    r = custody_verify(unit.store)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not_a_regular_file" in r.stdout and "FIFO" in r.stdout


def test_a_device_node_where_a_media_file_belongs_is_never_read(unit: Unit):
    victim = sorted((unit.store / MEDIA_DIR).iterdir())[0]
    victim.unlink()
    os.mknod(victim, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero: endless bytes
    assert store_findings(unit)[f"media/{victim.name}"] == "not_a_regular_file"
    report = unit.verify()
    assert report.verdict == BROKEN
    assert {f.kind for f in report.errors} == {"not_a_regular_file", "media_missing"}


def test_a_media_link_to_etc_is_not_followed_nor_listed(unit: Unit, tmp_path: Path):
    media = unit.store / MEDIA_DIR
    media.rename(tmp_path / "real-media")
    os.symlink("/etc", media)
    r = custody_verify(unit.store)
    assert r.returncode == 1
    assert "not_a_directory" in r.stdout
    assert "passwd" not in r.stdout and "hostname" not in r.stdout  # nothing of /etc shown


def test_a_ledger_that_is_a_link_outside_the_store_is_not_read(unit: Unit, tmp_path: Path):
    outside = tmp_path / "elsewhere.jsonl"
    unit.ledger_path.rename(outside)
    os.symlink(outside, unit.ledger_path)
    contents = read_store(unit.store)
    assert contents.ledger == b""
    assert [(f.file, f.kind) for f in contents.findings] == [("ledger.jsonl",
                                                              "not_a_regular_file")]


def test_a_directory_where_a_media_file_belongs(unit: Unit):
    (unit.store / MEDIA_DIR / "sub.cseg").mkdir()
    assert store_findings(unit)["media/sub.cseg"] == "not_a_regular_file"


def test_files_above_their_bound_are_not_read(unit: Unit):
    huge = unit.store / MEDIA_DIR / "huge.cseg"
    with open(huge, "wb") as f:
        f.truncate(store_reader.MAX_MEDIA_BYTES + 1)  # sparse: hashing it would take minutes
    (unit.store / RECEIPTS_DIR).mkdir()
    with open(unit.store / RECEIPTS_DIR / "big.json", "wb") as f:
        f.truncate(store_reader.MAX_RECEIPT_BYTES + 1)
    found = store_findings(unit)
    assert found["media/huge.cseg"] == "file_too_large"
    assert found["receipts/big.json"] == "file_too_large"


def test_a_store_that_cannot_be_opened_exits_2(tmp_path: Path, unit: Unit):
    r = custody_verify(tmp_path / "nowhere", "--trust", unit.keys / "trust.json")
    assert r.returncode == 2 and "nowhere" in r.stderr


def test_non_utf8_receipt_and_media_names_are_findings_with_the_file(unit: Unit):
    (unit.store / RECEIPTS_DIR).mkdir()
    (unit.store / RECEIPTS_DIR / "r.json").write_bytes(b'{"a":\n"\xff"}')
    os.close(os.open(os.fsencode(unit.store / MEDIA_DIR) + b"/\xff\xfe.cseg",
                     os.O_CREAT | os.O_WRONLY))
    r = custody_verify(unit.store)
    assert r.returncode == 1, r.stderr
    assert "receipts/r.json" in r.stdout and "line 2" in r.stdout
    assert "unsealed_media" in r.stdout and "\\xff\\xfe.cseg" in r.stdout


def test_a_non_utf8_trust_file_exits_2_naming_file_and_line(unit: Unit, tmp_path: Path):
    bad = tmp_path / "trust.json"
    bad.write_bytes(b'{\n"unit": "\xe9"}')
    r = custody_verify(unit.store, "--trust", bad)
    assert r.returncode == 2 and str(bad) in r.stderr and "line 2" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_trust_file_inside_the_store_is_never_used(unit: Unit):
    (unit.store / "trust.json").write_bytes((unit.keys / "trust.json").read_bytes())
    (unit.keys / "trust.json").rename(unit.keys / "moved.json")
    r = custody_verify(unit.store)
    assert r.returncode == 2 and "no trust file beside it" in r.stderr


def test_the_report_names_the_trust_file_and_its_sha256(unit: Unit):
    import hashlib

    trust = unit.keys / "trust.json"
    digest = hashlib.sha256(trust.read_bytes()).hexdigest()
    r = custody_verify(unit.store)
    assert f"trust file: {trust}  sha256 {digest}" in r.stdout
    doc = json.loads(custody_verify(unit.store, "--json").stdout)
    assert doc["trust_file"] == {"path": str(trust), "sha256": digest}


@pytest.mark.parametrize("utc_ns", [0, -(1 << 63), (1 << 63) - 1])
def test_absurd_times_are_reported_not_a_traceback(unit: Unit, utc_ns: int):
    unit.clock.utc_ns = utc_ns - 100_000_000
    unit.append(Marker(phase="other"))
    report = unit.verify()
    text = render(unit.store, report)
    assert "verdict:" in text
    if utc_ns < unit.entries()[-2].entry.time.utc_ns:
        assert "clock_rollback" in {f.kind for f in report.errors}


def test_entries_intact_after_all_that(unit: Unit):
    assert unit.verify().verdict == INTACT


# --- no input gives a traceback ----------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from protocol.envelope import ENTRY_PAYLOAD_TYPE, encode_json, sign_payload  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=12)


@given(junk=st.binary(max_size=300), where=st.integers(0, 9))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
def test_any_bytes_in_the_ledger_give_findings_not_a_traceback(unit: Unit, junk: bytes,
                                                               where: int):
    lines = unit.lines()
    ledger = b"\n".join([*lines[:where], junk, *lines[where:]])
    report = verify_bytes(unit, ledger)
    assert report.verdict in ("broken", "intact")
    render(unit.store, report)


@given(path=st.lists(st.sampled_from(["body", "time", "media", "statement", "receipt"]),
                     max_size=3), value=_json, victim=st.integers(0, 50))
@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
def test_validly_signed_odd_values_give_findings_not_a_traceback(unit: Unit, path, value,
                                                                 victim: int):
    """The device key holder signs anything: still a report, never an exception."""
    entries = unit.entries()
    signed = entries[victim % len(entries)]
    doc = signed.entry.to_dict()
    target = doc
    for key in path:
        if isinstance(target.get(key), dict):
            target = target[key]
    keys = sorted(target)
    target[keys[victim % len(keys)]] = value
    line = encode_json(sign_payload(encode_json(doc), ENTRY_PAYLOAD_TYPE,
                                    [unit.device_key.signer()]).to_dict())
    lines = unit.lines()
    lines[signed.entry.seq] = line
    report = verify_bytes(unit, b"\n".join(lines) + b"\n")
    render(unit.store, report)


def verify_bytes(unit: Unit, ledger: bytes):
    from protocol.verify import verify

    contents = read_store(unit.store)
    return verify(ledger, contents.media, unit.trust)


def test_a_fifo_given_as_receipt_is_refused_not_waited_on(unit: Unit, tmp_path: Path):
    fifo = tmp_path / "receipt.json"
    os.mkfifo(fifo)
    r = custody_verify(unit.store, "--receipt", fifo)
    assert r.returncode == 2 and "FIFO" in r.stderr


def test_a_lone_surrogate_in_a_signed_name_is_printed_escaped(unit: Unit):
    """JSON may escape a lone surrogate ("\\udc80"): a valid string no UTF-8 can hold."""
    last = unit.entries()[-1]
    doc = {**last.entry.to_dict(), "seq": last.entry.seq + 1, "prev": last.digest,
           "kind": "record_start",
           "body": {"trigger": "button", "category": "scene", "officer": "PC-\udc80",
                    "pre_record_seconds": 0}}
    doc["time"] = {**doc["time"], "utc_ns": doc["time"]["utc_ns"] + 1,
                   "monotonic_ns": doc["time"]["monotonic_ns"] + 1}
    payload = json.dumps(doc).encode()  # ASCII, the surrogate as an escape
    line = encode_json(sign_payload(payload, ENTRY_PAYLOAD_TYPE,
                                    [unit.device_key.signer()]).to_dict())
    unit.write_lines([*unit.lines(), line])
    r = custody_verify(unit.store)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0 and "PC-\\udc80" in r.stdout


def test_a_file_beside_an_archive_is_read_by_the_same_rules(tmp_path: Path):
    """The audit log beside an archive: absent is None; a FIFO, a link or an oversized
    file is a StoreError naming the path, never a hang or a read through the link."""
    assert store_reader.read_file_if_present(tmp_path / "audit.jsonl", 100) is None
    (tmp_path / "audit.jsonl").write_bytes(b"x" * 100)
    assert store_reader.read_file_if_present(tmp_path / "audit.jsonl", 100) == b"x" * 100
    with pytest.raises(store_reader.StoreError, match="above the bound"):
        store_reader.read_file_if_present(tmp_path / "audit.jsonl", 99)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("/etc/passwd")
    for name, what in (("fifo", "FIFO"), ("link", "symbolic link")):
        with pytest.raises(store_reader.StoreError, match=f"{name} is a {what}"):
            store_reader.read_file_if_present(tmp_path / name, 1 << 20)


def test_an_archives_checkpoints_and_tombstones_are_read_by_the_same_rules(
        unit: Unit, tmp_path: Path):
    """A link, a FIFO, an oversized file, a folder that is a link, a tombstone that is
    not JSON: each is a finding naming its path (a plain ``open`` would hang on the FIFO
    or read /etc through the link)."""
    archive = tmp_path / "archive"
    shutil.copytree(unit.store, archive / "devices" / DEVICE)
    shutil.copy(unit.keys / store_reader.TRUST_NAME, archive / store_reader.TRUST_NAME)
    checkpoints = archive / "checkpoints" / DEVICE
    checkpoints.mkdir(parents=True)
    (checkpoints / "1.checkpoint").symlink_to("/etc/passwd")
    os.mkfifo(checkpoints / "2.checkpoint")
    with open(checkpoints / "3.checkpoint", "wb") as f:
        f.truncate(store_reader.MAX_SIDE_FILE_BYTES + 1)
    tombstones = archive / "tombstones" / DEVICE
    tombstones.mkdir(parents=True)
    (tombstones / "00000001.json").write_bytes(b"{not json")
    (archive / "tombstones" / "elsewhere").mkdir()
    (archive / "tombstones" / "DEV-OTHER").symlink_to(archive / "tombstones" / "elsewhere")

    r = custody_verify(archive, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    findings = {f["file"]: f["kind"] for store in json.loads(r.stdout)["stores"]
                for f in store["findings"]}
    assert findings[f"checkpoints/{DEVICE}/1.checkpoint"] == "not_a_regular_file"
    assert findings[f"checkpoints/{DEVICE}/2.checkpoint"] == "not_a_regular_file"
    assert findings[f"checkpoints/{DEVICE}/3.checkpoint"] == "file_too_large"
    assert findings[f"tombstones/{DEVICE}/00000001.json"] == "bad_tombstone"

    got, refused = store_reader.read_small_files(archive, ("tombstones", "DEV-OTHER"), ".json")
    assert got == [] and [(f.kind, f.file) for f in refused] == \
        [("not_a_directory", "tombstones/DEV-OTHER")]
