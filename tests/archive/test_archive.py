"""The archive: index and search, annotations beside the originals, retention,
holds, deletion with tombstones, the audit log, checkpoints and cosignatures."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.archive.archive import ArchiveError, DeletionRefused
from daemon.archive.audit import AuditError, verify_audit
from daemon.archive.index import Query
from daemon.archive.retention import RetentionConfigError, RetentionPolicy
from daemon.archive.tlog import LogError
from protocol.entries import Marker
from protocol.envelope import sign_entry
from protocol.tombstone import Tombstone, sign_tombstone
from tests.archive.conftest import DAY_NS, ArchiveSetup
from tests.conftest import DEVICE, OFFICER

REC = f"{DEVICE}/2"  # the fixture's recording: provisioned 0, assigned 1, record_start 2


def custody(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def verify_archive(root: Path) -> tuple[int, dict]:
    """The archive's verdict, with the findings of the archive and of every store in it."""
    r = custody("verify", root, "--json")
    assert r.stdout, r.stderr
    report = json.loads(r.stdout)
    report["findings"] += [f for store in report["stores"] for f in store["findings"]]
    return r.returncode, report


def originals(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "devices").rglob("*")) if p.is_file()}


def test_recordings_are_indexed_by_device_officer_category_and_dates(setup: ArchiveSetup):
    a = setup.archive
    row = a.index.get(REC)
    assert (row.device, row.officer, row.category, row.segments) == (DEVICE, OFFICER, "scene", 3)
    assert row.stop_utc_ns > row.start_utc_ns and row.stored_utc_ns >= row.stop_utc_ns
    assert len(row.files) == 3
    who = "custodian:LI"
    assert [r.id for r in a.search(Query(officer=OFFICER), who)] == [REC]
    assert [r.id for r in a.search(Query(device=DEVICE, category="scene"), who)] == [REC]
    assert a.search(Query(officer="PC-9999"), who) == []
    assert a.search(Query(recorded_from_ns=row.start_utc_ns + 1), who) == []
    assert [r.id for r in a.search(Query(stored_to_ns=row.stored_utc_ns + 1), who)] == [REC]
    assert [r.id for r in a.search(Query(not_classified=True), who)] == [REC]
    assert a.search(Query(late=True), who) == []


def test_annotations_are_searchable_and_never_touch_the_originals(setup: ArchiveSetup):
    a, before = setup.archive, originals(setup.root)
    a.annotate(REC, "case", "Inspection of Müller Bakery GmbH, file 2026/117", "custodian:LI")
    a.annotate(REC, "party", "Müller Bakery GmbH", "custodian:LI")
    who = "custodian:LI"
    assert [r.id for r in a.search(Query(case="müller 2026/117"), who)] == [REC]
    assert [r.id for r in a.search(Query(party="bakery"), who)] == [REC]
    assert a.search(Query(party="inspection"), who) == []  # only in the case name
    assert [r.id for r in a.search(Query(text='bakery" OR "x'), who)] == []  # no query syntax
    assert a.search(Query(not_classified=True), who) == []
    a.annotate(REC, "category", "meeting", "custodian:LI")
    assert a.index.get(REC).category == "meeting" and a.index.get(REC).device_category == "scene"
    assert originals(setup.root) == before
    with pytest.raises(ArchiveError, match="not a recording id"):
        a.annotate("nonsense", "case", "x", who)
    with pytest.raises(ArchiveError, match="no such recording"):
        a.annotate(f"{DEVICE}/99", "case", "x", who)


def test_a_deletion_before_its_time_is_refused_and_audited(setup: ArchiveSetup):
    a, before = setup.archive, originals(setup.root)
    with pytest.raises(DeletionRefused, match="retention runs until"):
        a.delete(REC, "custodian:LI", "no longer needed", setup.archive_key)
    assert originals(setup.root) == before
    last = list(a.audit.records())[-1]
    assert (last.action, last.object, last.who) == ("delete", REC, "custodian:LI")
    assert "retention runs until" in last.details["refused"]


def test_a_hold_stops_deletion_after_retention_and_a_release_allows_it(setup: ArchiveSetup):
    a = setup.archive
    a.hold(REC, "unit-head:WANG", "complaint 17 pending")
    setup.clock.utc_ns += 3651 * DAY_NS
    with pytest.raises(DeletionRefused, match="legal hold"):
        a.delete(REC, "custodian:LI", "retention over", setup.archive_key)
    with pytest.raises(ArchiveError, match="say why"):
        a.release(REC, "unit-head:WANG", " ")
    a.release(REC, "unit-head:WANG", "complaint 17 closed")
    tombstone = a.delete(REC, "custodian:LI", "retention over", setup.archive_key)
    assert tombstone.deleted_by == "custodian:LI" and len(tombstone.media) == 3
    assert not list((setup.store / "media").iterdir())
    assert (setup.store / "ledger.jsonl").read_bytes() == setup.unit.ledger_path.read_bytes()
    with pytest.raises(DeletionRefused, match="already deleted"):
        a.delete(REC, "custodian:LI", "again", setup.archive_key)
    code, report = verify_archive(setup.root)
    assert code == 0, report
    assert [f["kind"] for f in report["findings"]].count("deleted") == 3


def test_tombstones_are_verified_and_a_file_lost_without_one_breaks_the_archive(
        setup: ArchiveSetup):
    code, report = verify_archive(setup.root)
    assert code == 0, report
    victim = sorted((setup.store / "media").iterdir())[0]
    victim.unlink()
    code, report = verify_archive(setup.root)
    assert code == 1
    assert "archive_media_missing" in [f["kind"] for f in report["findings"]]
    # A tombstone signed by the dock's key (not an archive key) accounts for nothing.
    entries = setup.unit.entries()
    media = [m for e in entries for m in e.entry.media() if m.file == victim.name]
    from protocol.receipt import ArchivedMedia
    forged = Tombstone(unit="test-unit", device=DEVICE, recording=2, deleted_by="x", reason="y",
                       media=[ArchivedMedia(file=victim.name, sha256=media[0].sha256)],
                       deleted_utc_ns=1, retention_until_utc_ns=0, category="scene")
    path = setup.root / "tombstones" / DEVICE / "00000002.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(sign_tombstone(forged, setup.unit.dock_key.signer())))
    code, report = verify_archive(setup.root)
    kinds = [f["kind"] for f in report["findings"]]
    assert code == 1 and "bad_tombstone" in kinds and "archive_media_missing" in kinds


def test_unclassified_recordings_keep_the_longest_retention() -> None:
    policy = RetentionPolicy.from_toml("""
[categories.scene]
retention_days = 365
[categories.meeting]
retention_days = 3650
[categories.hearing]
retention = "paper_files"
""")
    assert policy.until_ns("scene", 0, None) == 365 * DAY_NS
    assert policy.until_ns("patrol", 0, None) == 3650 * DAY_NS  # not configured: the longest
    assert policy.until_ns("hearing", 0, None) is None
    assert policy.until_ns("hearing", 0, 42) == 42
    for bad, key in (("[categories.x]\nretention_days = 0", "categories.x.retention_days"),
                     ("[categories.x]\nretention = 'forever'", "categories.x.retention"),
                     ("[categories.x]\nretention_days = 5\nkeep = 1", "categories.x.keep"),
                     ("x = 1", "categories.NAME")):
        with pytest.raises(RetentionConfigError, match=key.replace(".", r"\.")):
            RetentionPolicy.from_toml(bad)


def test_paper_files_category_needs_its_disposal_date(setup: ArchiveSetup):
    a = setup.archive
    a.annotate(REC, "category", "meeting", "custodian:LI")  # default: as the paper files
    setup.clock.utc_ns += 20000 * DAY_NS
    with pytest.raises(DeletionRefused, match="paper files"):
        a.delete(REC, "custodian:LI", "done", setup.archive_key)
    a.set_paper_files_until(REC, setup.clock.utc_ns + DAY_NS, "custodian:LI")
    with pytest.raises(DeletionRefused, match="retention runs until"):
        a.delete(REC, "custodian:LI", "done", setup.archive_key)
    setup.clock.utc_ns += 2 * DAY_NS
    a.delete(REC, "custodian:LI", "paper file disposed of", setup.archive_key)


def test_every_action_is_in_the_audit_log_and_its_chain_verifies(setup: ArchiveSetup):
    a, who = setup.archive, "custodian:LI"
    a.search(Query(officer=OFFICER), who)
    a.view(REC, "auditor:ZHAO")
    a.annotate(REC, "case", "case 1", who)
    a.hold(REC, who, "court order")
    with pytest.raises(DeletionRefused):
        a.delete(REC, who, "test", setup.archive_key)
    records = list(a.audit.records())
    assert [(r.action, r.who) for r in records] == [
        ("write", "dock:DOCK-01"), ("search", who), ("view", "auditor:ZHAO"),
        ("annotate", who), ("hold", who), ("delete", who)]
    assert records[1].details == {"query": {"officer": OFFICER}, "results": 1}
    assert verify_audit(a.audit.path) == 6
    assert [r.action for r in a.view(REC, who).audit] == ["view", "annotate", "hold", "delete",
                                                         "view"]
    lines = a.audit.path.read_bytes().split(b"\n")
    edited = lines[2].replace(b"auditor:ZHAO", b"auditor:NONE")
    a.audit.path.write_bytes(b"\n".join([*lines[:2], edited, *lines[3:]]))
    with pytest.raises(AuditError, match=":4: does not link"):
        verify_audit(a.audit.path)
    a.audit.path.write_bytes(b"\n".join([*lines[:2], *lines[3:]]))  # a record removed
    with pytest.raises(AuditError, match=":3: does not link"):
        verify_audit(a.audit.path)


def test_checkpoints_are_cosigned_and_verified(setup: ArchiveSetup):
    setup.unit.record(segments=1)
    setup.dock()
    files = setup.archive.log(DEVICE).checkpoint_files()
    assert len(files) == 2
    code, report = verify_archive(setup.root)
    assert code == 0, report
    kinds = {f["kind"] for f in report["findings"]}
    assert not kinds & {"not_cosigned", "no_checkpoint", "bad_checkpoint"}


def test_a_rewritten_device_history_is_caught_by_the_cosigned_checkpoint(setup: ArchiveSetup):
    """Someone with the device's key re-signs the ledger with one marker's phase
    changed: the ledger alone verifies, the checkpoint the device cosigned does not."""
    key = setup.unit.device_key
    entries = [s.entry for s in setup.unit.entries()]
    lines, prev = [], "0" * 64
    for e in entries:
        if isinstance(e.body, Marker) and e.body.phase == "questioning":
            e = dataclasses.replace(e, body=Marker(phase="other", recording=e.body.recording))
        signed = sign_entry(dataclasses.replace(e, prev=prev), key.signer())
        lines.append(signed.to_line())
        prev = signed.digest
    (setup.store / "ledger.jsonl").write_bytes(b"".join(lines))
    for receipt in (setup.store / "receipts").iterdir():
        receipt.unlink()  # the receipts would also give it away; the log alone must
    r = custody("verify", setup.store, "--trust", setup.root / "trust.json", "--json")
    assert r.returncode == 0, r.stdout  # as a store, the forgery verifies
    code, report = verify_archive(setup.root)
    assert code == 1
    finding = next(f for f in report["findings"] if f["kind"] == "ledger_rewritten")
    assert "the archive and the device signed" in finding["message"]
    # Entries removed: the log fixed more than are left.
    (setup.store / "ledger.jsonl").write_bytes(b"".join(lines[:-2]))
    code, report = verify_archive(setup.root)
    assert code == 1 and "ledger_truncated" in {f["kind"] for f in report["findings"]}
    with pytest.raises(LogError, match="rewritten history"):
        setup.archive.log(DEVICE).sign(setup.archive_key)


def test_a_checkpoint_without_the_devices_cosignature_is_reported(setup: ArchiveSetup):
    setup.unit.record(segments=1)
    setup.copy_store()
    setup.archive.ingest(DEVICE, "dock:DOCK-01", setup.archive_key)
    code, report = verify_archive(setup.root)
    assert code == 0
    assert "not_cosigned" in {f["kind"] for f in report["findings"]}
