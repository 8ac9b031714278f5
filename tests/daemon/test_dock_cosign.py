"""The cosigned checkpoint at every docking, through the real dock (HTTPS, client certs):
the dock indexes and signs, the device checks, cosigns and keeps it, or refuses
and the dock raises an alert."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from daemon.archive.archive import Archive
from daemon.archive.audit import verify_audit
from daemon.archive.index import Query
from daemon.archive.store import FilesystemStore
from daemon.archive.tlog import DeviceLog
from daemon.provision import load_signing_key
from device.checkpoint_keeper import CHECKPOINT_NAME, FRONTIER_NAME
from device.offload import DockClient
from protocol.archive_check_cli import read_extras
from protocol.archive_device_check import check_archived_device
from protocol.archive_log import ledger_leaves, open_device_checkpoint, tree_of
from protocol.audit_anchor import audit_anchor
from protocol.checkpoint import check_extends
from protocol.merkle_frontier import frontier_from_bytes
from protocol.receipt import open_receipt
from protocol.store_reader import LEDGER_NAME, read_store, read_trust
from tests.archive.test_archive import custody
from tests.archive.test_archive import verify_archive as custody_verify_archive
from tests.daemon.dockkit import DOCK


def held(dev) -> bytes:
    return (dev.store / CHECKPOINT_NAME).read_bytes()


def archive_check(archive: Path, device: str):
    contents = read_store(archive / "devices" / device)
    checkpoints, tombstones, unread = read_extras(archive, device)
    assert not unread, unread
    return check_archived_device(device, contents.ledger, contents.media, checkpoints,
                                 tombstones, read_trust(archive / "trust.json"))


def dock_round(dev, dock) -> None:
    offloader = dev.offloader(dock.url)
    assert offloader.offload_round() is True
    assert offloader.offload_round() is False  # nothing new: no second cosignature round


def test_two_dockings_each_cosign_a_checkpoint_extending_the_last(world):
    keys, (dev, _), dock, archive = world
    trust = dev.host.trust
    dev.record([1000, 2000])
    dock_round(dev, dock)
    first = open_device_checkpoint(held(dev), trust, dev.name)
    archived = (archive / "devices" / dev.name / LEDGER_NAME).read_bytes()
    assert first.checkpoint.size == len(ledger_leaves(archived))
    assert first.cosigned_by  # the device's cosignature, checked against the trust file
    # The dock keeps the same cosigned note.
    assert DeviceLog(archive, trust, FilesystemStore(archive), dev.name).latest() == held(dev)

    dev.record([3000])  # the ledger grows; the next docking extends the checkpoint
    dock_round(dev, dock)
    second = open_device_checkpoint(held(dev), trust, dev.name)
    assert second.checkpoint.size > first.checkpoint.size and second.cosigned_by
    # Beside it, the frontier of its tree: the next docking hashes only what is new.
    frontier = frontier_from_bytes((dev.store / FRONTIER_NAME).read_bytes())
    assert (frontier.size, frontier.root()) == (second.checkpoint.size,
                                                second.checkpoint.root_hash)
    tree = tree_of(ledger_leaves((archive / "devices" / dev.name / LEDGER_NAME).read_bytes()))
    check_extends(first.checkpoint, second.checkpoint,
                  tree.consistency_proof(first.checkpoint.size, second.checkpoint.size))
    assert not dock.alerts()

    # custody verify of the archive checks both checkpoints and their cosignatures.
    check = archive_check(archive, dev.name)
    assert check.checkpoints == 2 and check.cosigned_size == second.checkpoint.size
    code, report = custody_verify_archive(archive)
    kinds = {f["kind"] for f in report["findings"]}
    assert code == 0 and not kinds & {"not_cosigned", "no_checkpoint", "bad_checkpoint"}, kinds
    # The custodian's index has the recordings, stored at archival time; every step
    # is in the audit log.
    with Archive.open(archive) as a:
        rows = sorted(a.search(Query(device=dev.name), "custodian:LI"),
                      key=lambda r: r.recording)
        # storage date: when the dock archived each (its receipt's time)
        assert [r.stored_utc_ns for r in rows] == [
            open_receipt(o.receipt, trust).archived_utc_ns for o in dock.events.offloads]
        actions = [(r.who, r.action, r.details) for r in a.audit.records()]
    assert [d.get("size") for w, act, d in actions if act == "checkpoint"] == [
        first.checkpoint.size, second.checkpoint.size]
    assert sum(1 for w, act, _ in actions if act == "write" and w == f"dock:{DOCK}") == 2

    # A cosignature the device key did not make is a bad checkpoint.
    path = sorted((archive / "checkpoints" / dev.name).iterdir())[-1]
    text = path.read_bytes()
    last = text.rstrip(b"\n").rsplit(b" ", 1)
    sig = bytearray(base64.b64decode(last[1]))
    sig[-1] ^= 1
    path.chmod(0o644)
    path.write_bytes(last[0] + b" " + base64.b64encode(bytes(sig)) + b"\n")
    assert "bad_checkpoint" in {f.kind for f in archive_check(archive, dev.name).findings}


def alter_entry(ledger: Path, index: int) -> None:
    """Change the payload of one archived ledger line (the device's signature stays)."""
    lines = ledger.read_bytes().splitlines()
    envelope = json.loads(lines[index])
    payload = base64.b64decode(envelope["payload"]).replace(b'"PC-1"', b'"PC-9"')
    assert payload != base64.b64decode(envelope["payload"])
    envelope["payload"] = base64.b64encode(payload).decode()
    lines[index] = json.dumps(envelope, separators=(",", ":")).encode()
    ledger.chmod(0o644)
    ledger.write_bytes(b"\n".join(lines) + b"\n")


def record_start_index(ledger: Path) -> int:
    for i, line in enumerate(ledger.read_bytes().splitlines()):
        if b"record_start" in base64.b64decode(json.loads(line)["payload"]):
            return i
    raise AssertionError("no record_start")


def test_a_forged_checkpoint_over_a_rewritten_history_is_refused_and_alerts(world):
    keys, (dev, _), dock, archive = world
    dev.record([1000, 2000])
    dock_round(dev, dock)
    kept = held(dev)
    # Someone with the archive's disk and the stolen dock key rewrites an entry of the
    # device's history and signs a checkpoint of it, so the archive agrees with itself.
    ledger = archive / "devices" / dev.name / LEDGER_NAME
    alter_entry(ledger, record_start_index(ledger))
    for p in (archive / "checkpoints" / dev.name).iterdir():
        p.unlink()
    trust = dev.host.trust
    stolen = load_signing_key(keys / "docks" / f"{DOCK}.key")
    DeviceLog(archive, trust, FilesystemStore(archive), dev.name).sign(stolen)

    dev.record([3000])
    names = dev.files[-1:]
    offloader = dev.offloader(dock.url)
    assert offloader.offload_round() is True
    # The device would not cosign; its checkpoint is the one it had; the dock alerted.
    assert held(dev) == kept
    assert "not" in offloader.status()["checkpoint_refused"]
    [(_, alert)] = dock.alerts("checkpoint_refused")
    assert alert["device"] == dev.name and alert["dock"] == DOCK and alert["size"]
    # Nothing was kept back or lost by the refusal: the receipt was taken, files freed.
    assert not set(names) & set(dev.media_left())
    # The refusal is reported once, not at every poll.
    assert offloader.offload_round() is False
    assert len(dock.alerts("checkpoint_refused")) == 1
    # custody verify of the archive shows it: the rewritten entry, and a newest
    # checkpoint the device never cosigned.
    code, report = custody_verify_archive(archive)
    kinds = {f["kind"] for f in report["findings"]}
    assert code != 0 and "not_cosigned" in kinds, kinds
    # What the device holds contradicts the archive: its root is not the archive's.
    cp = open_device_checkpoint(kept, trust, dev.name).checkpoint
    assert tree_of(ledger_leaves(ledger.read_bytes())).root(cp.size) != cp.root_hash
    with Archive.open(archive) as a:
        refused = [r for r in a.audit.records() if r.action == "checkpoint"
                   and "refused" in r.details]
    assert len(refused) == 1 and refused[0].who == f"device:{dev.name}"


def test_a_rewritten_archive_copy_is_not_signed_over_and_alerts(world):
    keys, (dev, _), dock, archive = world
    dev.record([1000])
    dock_round(dev, dock)
    ledger = archive / "devices" / dev.name / LEDGER_NAME
    alter_entry(ledger, record_start_index(ledger))
    dev.record([2000])
    offloader = dev.offloader(dock.url)
    assert offloader.offload_round() is True  # the receipt stands
    [(_, alert)] = dock.alerts("integrity_failure")
    assert alert["reason"] == "archived_ledger_rewritten"
    assert not dock.alerts("checkpoint_refused")
    code, report = custody_verify_archive(archive)
    assert "ledger_rewritten" in {f["kind"] for f in report["findings"]}


def test_a_device_can_cosign_only_as_itself(world):
    keys, (dev, other), dock, archive = world
    dev.record([1000])
    dock_round(dev, dock)
    client = DockClient(other.settings(dock.url), dev.name)
    try:
        assert client.call("GET", "/checkpoint?from=0")[0] == 403
        assert client.call("PUT", f"/checkpoint/{len(ledger_leaves(b''))}", held(dev))[0] == 403
        assert client.call("POST", "/checkpoint/1/refusal",
                           json.dumps({"reason": "x"}).encode())[0] == 403
    finally:
        client.close()
    assert not dock.alerts("checkpoint_refused")
    # A note the dock never signed is not kept.
    own = DockClient(dev.settings(dock.url), dev.name)
    try:
        status, _, answer = own.call("PUT", "/checkpoint/1", b"custody/x\n1\nAAAA\n\n")
        assert status == 409, answer
    finally:
        own.close()


def rechain(lines: list[bytes]) -> list[bytes]:
    """Re-link an audit log's records after an edit, as a forger would."""
    out, prev = [], "0" * 64
    for line in lines:
        record = json.loads(line)
        record["prev"] = prev
        new = json.dumps(record, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode()
        out.append(new)
        prev = hashlib.sha256(new).hexdigest()
    return out


def test_a_rewritten_audit_log_disagrees_with_the_cosigned_checkpoints(world):
    keys, (dev, _), dock, archive = world
    dev.record([1000])
    dock_round(dev, dock)
    with Archive.open(archive) as a:
        a.search(Query(device=dev.name), "custodian:LI")  # who saw what: in the audit log
    dev.record([2000])
    dock_round(dev, dock)
    # The newest checkpoint, cosigned by the device, anchors the audit log's head.
    cp = open_device_checkpoint(held(dev), dev.host.trust, dev.name).checkpoint
    records, head = audit_anchor(cp.extensions)
    audit = archive / "audit.jsonl"
    assert records >= 3 and verify_audit(audit) >= records
    code, report = custody_verify_archive(archive)
    assert "audit_rewritten" not in {f["kind"] for f in report["findings"]}
    r = custody("archive", "audit", "--archive", archive)
    assert r.returncode == 0 and "anchored in 2 signed checkpoints" in r.stdout, r.stderr
    # Someone removes the custodian's search from the audit log and re-chains the rest:
    # the chain alone no longer shows it ...
    lines = audit.read_bytes().splitlines()
    kept = [x for x in lines if json.loads(x)["action"] != "search"]
    for i, line in enumerate(kept):
        record = json.loads(line)
        record["seq"] = i
        kept[i] = json.dumps(record).encode()
    audit.write_bytes(b"".join(x + b"\n" for x in rechain(kept)))
    assert verify_audit(audit) == len(kept)
    # ... but the checkpoints the dock signed and the device cosigned do.
    code, report = custody_verify_archive(archive)
    found = [f for f in report["findings"] if f["kind"] == "audit_rewritten"]
    assert code != 0 and found, report["findings"]
    r = custody("archive", "audit", "--archive", archive)
    assert r.returncode != 0 and "are not the ones it anchored" in r.stderr, r.stderr


def test_a_dock_stopped_before_its_checkpoint_signs_it_at_the_next_round(world):
    keys, (dev, _), dock, archive = world
    dev.record([1000])
    dock_round(dev, dock)
    first = open_device_checkpoint(held(dev), dev.host.trust, dev.name).checkpoint
    dev.record([2000])
    dock.server.checkpoints.after_commit = lambda device: None  # stopped right after commit
    offloader = dev.offloader(dock.url)
    assert offloader.offload_round() is True
    assert open_device_checkpoint(held(dev), dev.host.trust, dev.name).checkpoint == first
    # The next round has nothing to send, but the archive has grown past the newest
    # checkpoint: the dock signs one and the device cosigns it.
    assert offloader.offload_round() is False
    now = open_device_checkpoint(held(dev), dev.host.trust, dev.name)
    assert now.checkpoint.size > first.size and now.cosigned_by
    assert not dock.alerts()
