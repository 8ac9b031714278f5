"""Temporary files a cut left of an unfinished durable write (hardware/host/durable.py)
are removed where their writer starts, each logged with its path, and nothing else:
the recorder's boot recovery (store, pending/), the checkpoint keeper (its own file)
and the dock (its archive's folders). A crash is simulated by leaving such files,
as a cut between the temporary file's fsync and its link or rename leaves them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daemon.dock.server import DockServer
from device.checkpoint_keeper import CHECKPOINT_NAME, CheckpointKeeper
from device.sealer import PENDING_DIR
from tests.conftest import DEVICE, Unit
from tests.daemon.dockkit import dock_config
from tests.device.simrun import recorder_on_sim

#: Names like a temporary one that are not exactly one: kept, whatever they hold.
LOOK_ALIKES = ("ledger.jsonl.tmp-0123abcd",      # no leading dot
               ".ledger.jsonl.tmp-0123abc",      # 7 hex digits
               ".ledger.jsonl.tmp-0123abcd.cseg",
               ".ledger.jsonl.tmp-0123ABCD",     # not what secrets.token_hex gives
               "r000001-00001.cseg.tmp-0123abcd")


def leave_temporaries(folder: Path, final: str,
                      look_alikes: tuple[str, ...] = LOOK_ALIKES) -> tuple[Path, list[Path]]:
    """What a cut leaves: a temporary file for ``final`` (written whole, never named),
    and evidence-like files whose names only look like one."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{final}.tmp-5eed0bad"
    temp.write_bytes(b"never named: its caller was not told it was written")
    kept = []
    for name in look_alikes:
        (folder / name).write_bytes(b"evidence " + name.encode())
        kept.append(folder / name)
    return temp, kept


def check_removed_and_logged(temp: Path, kept: list[Path], caplog) -> None:
    assert not temp.exists()
    assert any(str(temp) in r.getMessage() for r in caplog.records), caplog.text
    for path in kept:
        assert path.read_bytes() == b"evidence " + path.name.encode()


def test_the_recorders_boot_removes_them_from_the_store_and_pending(unit: Unit, caplog) -> None:
    caplog.set_level(logging.WARNING, "custody.durable")
    in_store, kept = leave_temporaries(unit.store, "ledger.torn-1")
    # (A *.cseg in pending/ is a cut segment: recovery's, and kept aside by it.)
    in_pending, kept_pending = leave_temporaries(
        unit.store / PENDING_DIR, "r000009-00001.cseg.tail-1",
        tuple(n for n in LOOK_ALIKES if not n.endswith(".cseg")))
    # A cut after the link, before the unlink: a second name of a file that has its own.
    linked = unit.store / f".{CHECKPOINT_NAME}.tmp-00c0ffee"
    os.link(unit.ledger_path, linked)
    ledger = unit.ledger_path.read_bytes()
    with recorder_on_sim(unit) as recorder:
        recorder.start()
    check_removed_and_logged(in_store, kept, caplog)
    check_removed_and_logged(in_pending, kept_pending, caplog)
    assert not linked.exists() and unit.ledger_path.read_bytes().startswith(ledger)
    assert unit.verify().errors == []


def test_the_checkpoint_keeper_removes_only_its_own(unit: Unit, caplog) -> None:
    caplog.set_level(logging.WARNING, "custody.durable")
    mine, kept = leave_temporaries(unit.store, CHECKPOINT_NAME)
    other = unit.store / ".ledger.torn-7.tmp-0123abcd"  # another writer's: not its to judge
    other.write_bytes(b"x")
    CheckpointKeeper(unit.store, DEVICE, unit.device_key, unit.trust)
    check_removed_and_logged(mine, kept, caplog)
    assert other.exists()


def test_the_dock_removes_them_from_its_archive_at_start(unit: Unit, tmp_path: Path,
                                                         caplog) -> None:
    caplog.set_level(logging.WARNING, "custody.durable")
    archive = tmp_path / "archive"
    left = [leave_temporaries(archive, "trust.json"),
            leave_temporaries(archive / "devices" / DEVICE, "ledger.jsonl"),
            leave_temporaries(archive / "devices" / DEVICE / "receipts", "0-8.json"),
            leave_temporaries(archive / "incoming" / DEVICE, "ledger-9.jsonl"),
            leave_temporaries(archive / "checkpoints" / DEVICE, "9.checkpoint")]
    # Never cleaned: media/ (no temporary is ever written there), and folders reached
    # through a link.
    media_temp, _ = leave_temporaries(archive / "devices" / DEVICE / "media", "r1.cseg")
    elsewhere = tmp_path / "elsewhere"
    outside, _ = leave_temporaries(elsewhere, "x.json")
    (archive / "checkpoints" / "DEV-LINK").symlink_to(elsewhere)
    server = DockServer(dock_config(unit.keys, archive))
    try:
        for temp, kept in left:
            check_removed_and_logged(temp, kept, caplog)
        assert media_temp.exists() and outside.exists()
    finally:
        server.checkpoints.close()
