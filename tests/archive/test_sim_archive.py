"""An archive filled by the dock from a `custody sim` shift (a hard power cut, a
recovered segment, interruptions without a voice note), checked end to end:
index, the checkpoint the device cosigned at docking, custody verify of the
archive, an evidence package checked by the README's steps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from daemon.archive.archive import Archive
from daemon.archive.index import Query
from daemon.archive.package import export_recording
from daemon.archive.users import Users
from daemon.archive.web import WebView
from device.checkpoint_keeper import CHECKPOINT_NAME
from protocol.archive_log import open_device_checkpoint
from protocol.keys import ArchiveSecretKey
from tests.archive.test_archive import custody, verify_archive
from tests.archive.test_package import run_readme
from tests.device.simrun import ledger_bodies, run_sim

SHIFT = """
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0
[[at]]
t = 0
do = "press_record"
[[at]]
t = 3.5
do = "power_cut"
[[at]]
t = 4.5
do = "power_restore"
[[at]]
t = 5.5
do = "press_record"
[[at]]
t = 9
do = "press_record"
[[at]]
t = 9.5
do = "dock"
[[at]]
t = 11
do = "end"
"""


async def recording_page(root: Path, rec: str, out: Path) -> str:
    """The recording's page in the web view, as the custodian sees it."""
    users = Users(root / "users.toml")
    users.add("LI", "custodian", "long enough password")
    secret = ArchiveSecretKey.from_pem((out / "keys" / "archive-secret.key").read_bytes())
    with Archive.open(root) as archive:
        view = WebView(archive, users, secret, root.parent)
        async with TestClient(TestServer(view.app())) as client:
            r = await client.post("/login", data={"name": "LI",
                                                  "password": "long enough password"})
            assert r.status == 200
            r = await client.get(f"/recording/{rec}")
            assert r.status == 200
            page = await r.text()
    # The power cut's gap: declared (its reason shown), not explained (red).
    assert 'class="gap-unexplained"' in page and "class=gap-unexplained" in page
    assert "<b>no voice note</b>" in page
    return page


def test_a_simulated_shift_archived_exported_and_checked(tmp_path: Path):
    out = run_sim(tmp_path, SHIFT)
    entries = ledger_bodies(out)
    device = entries[0].device
    assert any(e.kind == "segment" and e.body.recovered for e in entries)
    root = out / "archive"  # filled by the dock: indexed, checkpoint cosigned at docking
    with Archive.open(root) as archive:
        [rec] = [r.id for r in archive.search(Query(device=device), "custodian:LI")]
        # The device keeps the checkpoint it cosigned; the archive has the same one.
        kept = (out / "device" / CHECKPOINT_NAME).read_bytes()
        assert archive.log(device).latest() == kept
        opened = open_device_checkpoint(kept, archive.trust, device)
        archived = (root / "devices" / device / "ledger.jsonl").read_bytes().splitlines()
        assert opened.cosigned_by and opened.checkpoint.size == len(archived)
        package = tmp_path / "package"
        result = export_recording(archive, rec, package, "custodian:LI",
                                  ArchiveSecretKey.from_pem(
                                      (out / "keys" / "archive-secret.key").read_bytes()))
    recovered = [e.seq for e in entries if e.kind == "segment" and e.body.recovered]
    assert [f"{seq:08d}-segment.mp4" for seq in recovered] == [
        m for m in result.media if int(m[:8]) in recovered]
    # The archive adds nothing against the shift: its verdict is the device store's
    # own, intact with unexplained gaps (exit 3: the power cut and the interruptions
    # await their voice notes; nothing is broken, so never 1), and its own checks of
    # checkpoints and media find nothing.
    code, report = verify_archive(root)
    store = custody("verify", out / "device")
    errors = [f for f in report["findings"] if f.get("severity") == "error"]
    assert (code, store.returncode) == (3, 3), errors or report
    kinds = {f["kind"] for f in report["findings"]}
    assert "unexplained_interruption" in kinds
    assert not kinds & {"not_cosigned", "no_checkpoint", "archive_media_missing",
                        "bad_checkpoint", "ledger_rewritten", "ledger_truncated"}
    assert "power_loss" in asyncio.run(recording_page(root, rec, out))
    r = custody("verify", package)
    assert r.returncode == 0, r.stdout
    r = run_readme(package)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ALL CHECKS PASSED")
