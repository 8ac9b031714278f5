"""The archive's own guarantees: a real full disk, a dock killed before it signed,
incremental range checks and time statements that do not verify."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from daemon.dock.archive import DeviceArchive
from daemon.provision import load_signing_key
from device.offload import DockError
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, RECEIPTS_DIR, read_trust
from protocol.time_statement import TimeStatement, open_time_statement, sign_time_statement
from protocol.verify_range import ChainHead, chain_head, verify_range
from tests.daemon.dockkit import DOCK, MIB, DockThread, dock_config, make_unit, verify_archive


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB filesystem of its own for the archive (tmpfs, mounted by the test)."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_disk_that_fills_up_mid_upload_is_507_and_releases_nothing(tmp_path, small_disk):
    keys, (dev,) = make_unit(tmp_path)
    dock = DockThread(dock_config(keys, small_disk / "archive"))
    try:
        dev.record([6 * MIB])
        offloader = dev.offloader(dock.url, chunk_bytes=256 * 1024).start()
        filler = small_disk / "filler"
        deadline = time.monotonic() + 20
        while offloader.status()["bytes_done"] < MIB:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        # Someone else fills the archive's filesystem while the upload goes on.
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        # The alert is raised as the refusal is decided, the 507 counted as it is
        # answered: wait for both.
        deadline = time.monotonic() + 20
        while not (dock.alerts("archive_full") and dock.server.stats["refused"] >= 1):
            assert time.monotonic() < deadline, (offloader.status(), dock.server.stats)
            time.sleep(0.05)
        assert dev.media_left() == sorted(dev.files)  # nothing released
        filler.unlink()  # room again: the upload resumes and completes
        deadline = time.monotonic() + 30
        while dev.media_left():
            assert time.monotonic() < deadline, offloader.status()
            time.sleep(0.05)
        offloader.close()
        assert verify_archive(small_disk / "archive", dev.name).verdict == "intact"
    finally:
        dock.stop()


def test_dock_killed_after_archiving_signs_the_receipt_at_restart(tmp_path, monkeypatch):
    keys, (dev,) = make_unit(tmp_path)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    dev.record([2 * MIB, 1000])

    def killed(*args, **kwargs):
        raise RuntimeError("killed between the ledger append and the receipt")

    monkeypatch.setattr(DeviceArchive, "_sign_receipt", killed)
    try:
        with pytest.raises(DockError):
            dev.offloader(dock.url).offload_round()
    finally:
        dock.stop()
    monkeypatch.undo()
    archived = tmp_path / "archive" / "devices" / dev.name
    assert split_lines((archived / LEDGER_NAME).read_bytes())  # appended, but
    assert not list((archived / RECEIPTS_DIR).iterdir())  # no receipt signed
    assert dev.media_left() == sorted(dev.files)  # and the device freed nothing
    last_archived = len(split_lines((archived / LEDGER_NAME).read_bytes())) - 1
    dock = DockThread(dock_config(keys, tmp_path / "archive"))  # the restart
    try:
        offloader = dev.offloader(dock.url)
        offloader.offload_round()
        assert dev.media_left() == []  # the receipt signed at restart freed the files
        receipts = [json.loads(base64.b64decode(e.entry.body.receipt["payload"]))
                    for e in map(parse_line, split_lines(_ledger(dev)))
                    if e.entry.kind == "offload_receipt"]
        assert receipts[0]["first_seq"] == 0 and receipts[0]["last_seq"] == last_archived
        seqs = [parse_line(x).entry.seq for x in split_lines((archived / LEDGER_NAME)
                                                             .read_bytes())]
        assert seqs == list(range(len(seqs)))  # nothing archived twice
    finally:
        dock.stop()
    report = verify_archive(tmp_path / "archive", dev.name)
    assert report.verdict == "intact", report.findings


def _ledger(dev) -> bytes:
    return (dev.store / LEDGER_NAME).read_bytes()


def test_verify_range_checks_only_what_is_new_and_continues_the_head(tmp_path):
    keys, (dev, other) = make_unit(tmp_path, devices=2)
    trust = read_trust(keys / "trust.json")
    dev.record([100, 200])
    lines = split_lines(_ledger(dev))
    first = b"".join(x + b"\n" for x in lines[:3])
    rest = b"".join(x + b"\n" for x in lines[3:])
    head = chain_head(first, dev.name)
    assert head.next_seq == 3
    report = verify_range(head, rest, None, trust)
    assert report.ok and report.first_seq == 3 and report.last_seq == len(lines) - 1
    assert set(report.media) == set(dev.files)
    # A range that skips an entry, or starts over, does not continue the head.
    assert not verify_range(head, b"".join(x + b"\n" for x in lines[4:]), None, trust).ok
    assert not verify_range(ChainHead(dev.name), rest, None, trust).ok
    # Another device's entries are not this device's.
    other.record([50])
    assert verify_range(ChainHead(dev.name), _ledger(other), None, trust).errors[0].kind == \
        "foreign_entry"
    # Media that did not arrive whole is named.
    from protocol.verify import MediaDigest

    media = {dev.files[0]: MediaDigest(99, "0" * 64)}
    kinds = {f.kind for f in verify_range(head, rest, media, trust).errors}
    assert kinds == {"media_truncated", "media_missing"}
    # A key the trust file does not list for the device signs nothing.
    stranger = SigningKey.generate()
    forged = parse_line(lines[3])
    from protocol.envelope import sign_entry

    line = sign_entry(forged.entry, stranger.signer()).to_line()
    assert verify_range(head, line, None, trust).errors[0].kind == "untrusted_signature"


def test_time_statements_verify_only_from_a_dock_of_the_unit(tmp_path):
    keys, _ = make_unit(tmp_path)
    trust = read_trust(keys / "trust.json")
    dock_key = load_signing_key(keys / "docks" / f"{DOCK}.key")
    statement = TimeStatement(dock=DOCK, device="DEV-0001", dock_time_ns=10,
                              device_time_ns=1_000_000_010, offset_ns=-1_000_000_000)
    envelope = sign_time_statement(statement, dock_key.signer())
    assert open_time_statement(envelope, trust) == statement
    with pytest.raises(ProtocolError, match="no valid signature"):
        open_time_statement(sign_time_statement(statement, SigningKey.generate().signer()),
                            trust)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["offset_ns"] = 0
    payload["device_time_ns"] = 10
    altered = dict(envelope, payload=base64.b64encode(json.dumps(payload).encode()).decode())
    with pytest.raises(ProtocolError):
        open_time_statement(altered, trust)
    with pytest.raises(ProtocolError, match="offset_ns"):
        TimeStatement.from_dict({**statement.to_dict(), "offset_ns": 5})


def test_archive_media_is_read_only_and_never_replaced(tmp_path):
    keys, (dev,) = make_unit(tmp_path)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    try:
        (name,) = dev.record([5000])
        assert dev.offloader(dock.url).offload_round() is True
        archived = tmp_path / "archive" / "devices" / dev.name / MEDIA_DIR / name
        before = archived.read_bytes()
        assert os.stat(archived).st_mode & 0o777 == 0o444
        # The device (its key stolen) seals other bytes under the archived name.
        (new,) = dev.record([10])
        seg = [parse_line(x) for x in split_lines(_ledger(dev))][-2].entry.body
        (dev.store / MEDIA_DIR / name).write_bytes(b"forged!!!!")
        media = dataclasses.replace(seg.media, file=name)
        dev.host.append(dataclasses.replace(seg, media=media, index=1))
        with pytest.raises(DockError) as e:
            dev.offloader(dock.url).offload_round()
        assert e.value.status == 422
        assert archived.read_bytes() == before
        assert any("archived already" in d["message"] for _, d in dock.alerts())
        assert (dev.store / MEDIA_DIR / new).exists()  # nothing of the range released
    finally:
        dock.stop()
