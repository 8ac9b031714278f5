"""A card restored from an older image of itself, caught by the dock.

The attack: copy the whole card (ledger, high-water mark, media: all
consistent), let the officer record and dock, then put the old image back.
The device cannot notice (its ledger and its mark agree) and goes on with seq
numbers it had already used. The dock's archive holds the later entries: at
the next docking it must refuse, alert, release nothing and keep its copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.provision import device_key_path, load_signing_key
from device.offload import DockError, LedgerHost
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import LEDGER_NAME
from tests.daemon.dockkit import DockThread, dock_config, make_unit, verify_archive
from tests.device.simrun import custody


@pytest.fixture
def world(tmp_path: Path):
    keys, (dev,) = make_unit(tmp_path)
    dock = DockThread(dock_config(keys, tmp_path / "archive"))
    yield keys, dev, dock, tmp_path / "archive"
    dock.stop()
    dev.host.close()


def _archived(archive: Path, dev) -> dict[str, bytes]:
    folder = archive / "devices" / dev.name
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _restore(dev, image: Path) -> None:
    """Put the old image of the card back, and power the device on again."""
    dev.host.close()
    shutil.rmtree(dev.store)
    shutil.copytree(image, dev.store)
    dev.host = LedgerHost(dev.store, dev.name, load_signing_key(device_key_path(dev.keys,
                                                                                dev.name)),
                          dev.host.trust)


def _seq_reuse_alerts(dock, reason: str) -> list[dict]:
    return [d for k, d in dock.alerts("integrity_failure") if d["reason"] == reason]


def test_an_older_card_image_reusing_seq_is_refused_and_alerted(world, tmp_path: Path) -> None:
    _, dev, dock, archive = world
    dev.record([3000, 2000])
    dev.offloader(dock.url).offload_round()
    image = tmp_path / "card-image"
    shutil.copytree(dev.store, image)  # the card as it was before the second recording
    dev.record([4000])
    dev.offloader(dock.url).offload_round()
    before = _archived(archive, dev)
    report_before = verify_archive(archive, dev.name)
    assert report_before.verdict == "intact" and not dock.alerts()

    _restore(dev, image)
    kinds = [parse_line(line).entry.kind
             for line in split_lines((dev.store / LEDGER_NAME).read_bytes())]
    assert "ledger_gap" not in kinds  # the device cannot tell on its own
    new = dev.record([5000])  # seq numbers the archive has already
    with pytest.raises(DockError) as refused:
        dev.offloader(dock.url).offload_round()

    assert refused.value.status == 422
    (alert,) = _seq_reuse_alerts(dock, "seq_reused")
    assert "two entries with one seq" in alert["message"]
    assert Path(alert["quarantined"]).is_relative_to(archive / "quarantine")  # the proof
    assert dev.media_left() == sorted(new)  # nothing released
    assert _archived(archive, dev) == before  # the archive's copy untouched
    report = verify_archive(archive, dev.name)
    assert report.verdict == "intact" and report.entries == report_before.entries
    assert report.head == report_before.head
    assert custody("verify", archive).returncode == 0  # as a custodian sees it

    # The device asks again at every round: refused each time, alerted once.
    with pytest.raises(DockError):
        dev.offloader(dock.url).offload_round()
    assert len(_seq_reuse_alerts(dock, "seq_reused")) == 1
    assert _archived(archive, dev) == before


def test_a_ledger_cut_back_behind_the_archive_is_refused_and_alerted(world,
                                                                       tmp_path: Path) -> None:
    _, dev, dock, archive = world
    image = tmp_path / "card-image"
    shutil.copytree(dev.store, image)  # only what provisioning wrote
    last = len(split_lines((image / LEDGER_NAME).read_bytes())) - 1
    dev.record([3000])
    dev.offloader(dock.url).offload_round()
    before = _archived(archive, dev)

    _restore(dev, image)
    offloader = dev.offloader(dock.url)
    offloader._synced = True  # no time_sync appended this docking: the ledger stays shorter
    with pytest.raises(DockError) as refused:
        offloader.offload_round()

    assert refused.value.status == 422
    (alert,) = _seq_reuse_alerts(dock, "ledger_cut_back")
    assert f"ends at entry {last}" in alert["message"]
    assert _archived(archive, dev) == before
    assert verify_archive(archive, dev.name).verdict == "intact"


def test_a_range_that_agrees_with_the_archive_is_no_alert(world) -> None:
    """An overlap that matches (a device re-sending what was archived) is only a 409."""
    _, dev, dock, archive = world
    dev.record([3000])
    dev.offloader(dock.url).offload_round()
    lines = (dev.store / LEDGER_NAME).read_bytes()
    client = dev.offloader(dock.url).client
    with pytest.raises(DockError) as e:
        client.json("PUT", "/ledger/0", lines, {"Content-Type": "application/x-ndjson"})
    assert e.value.status == 409 and not dock.alerts()


@pytest.mark.parametrize("cut", ["after_the_archive", "into_the_archive"])
def test_a_declared_ledger_gap_still_offloads_and_is_alerted(world, cut: str) -> None:
    """A ledger cut back while the device was off, its high-water mark kept: the device
    declares the loss (ledger_gap, seq after the mark). The dock archives what is left
    and what came after, says so, and the device may free it: nothing stays stuck."""
    _, dev, dock, archive = world
    dev.record([3000])
    dev.offloader(dock.url).offload_round()  # archived; the receipt is the device's last
    lost = dev.record([4000])
    ledger = dev.store / LEDGER_NAME
    lines = split_lines(ledger.read_bytes())
    kinds = [parse_line(line).entry.kind for line in lines]
    keep = kinds.index("offload_receipt") + 1 if cut == "after_the_archive" else 2
    dev.host.close()
    ledger.write_bytes(b"".join(line + b"\n" for line in lines[:keep]))
    for name in lost:
        (dev.store / "media" / name).unlink()
    dev.host = LedgerHost(dev.store, dev.name, load_signing_key(device_key_path(dev.keys,
                                                                                dev.name)),
                          dev.host.trust)
    assert dev.host.ledger.declared_gap is not None
    after = dev.record([5000])

    assert dev.offloader(dock.url).offload_round() is True
    (alert,) = [d for _, d in dock.alerts("integrity_failure")]
    assert alert["reason"] == "ledger_gap"
    assert dev.media_left() == []  # what came after the gap is archived and freed
    archived = {Path(k).name for k in _archived(archive, dev)}
    assert set(after) <= archived
    report = verify_archive(archive, dev.name)
    assert "ledger_gap" in {f.kind for f in report.findings}  # declared, not hidden
