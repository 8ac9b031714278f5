"""The power-loss layer itself: what it forgets at a cut, and what it keeps."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fuselayer import LazyLayer


@pytest.fixture
def layer(tmp_path: Path):
    if shutil.which("fusermount3") is None or not Path("/dev/fuse").exists():
        pytest.skip("needs fuse3 (fusermount3) and /dev/fuse: make setup installs fuse3")
    with LazyLayer(tmp_path / "backing", tmp_path / "mnt") as lazy:
        yield lazy


def test_a_cut_forgets_exactly_the_writes_not_yet_fsynced(layer: LazyLayer) -> None:
    mnt, backing = layer.mount, layer.backing
    fd = os.open(mnt / "ledger", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"synced\n")
    os.fsync(fd)
    os.write(fd, b"in the page cache\n")
    os.setxattr(fd, "user.custody.fragment.a", b"{}")  # metadata goes straight through
    assert (mnt / "ledger").read_bytes() == b"synced\nin the page cache\n"
    assert (backing / "ledger").read_bytes() == b"synced\n"

    layer.cut()
    with pytest.raises(OSError):
        os.write(fd, b"after the cut\n")
    with pytest.raises(OSError):
        os.fsync(fd)
    os.close(fd)
    layer.restore()

    assert (mnt / "ledger").read_bytes() == b"synced\n"
    assert os.getxattr(mnt / "ledger", "user.custody.fragment.a") == b"{}"


def test_links_renames_and_truncation_keep_the_unsynced_data_with_its_file(
        layer: LazyLayer) -> None:
    mnt, backing = layer.mount, layer.backing
    (mnt / "pending").mkdir()
    fd = os.open(mnt / "pending" / "a.cseg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"0123456789")
    os.ftruncate(fd, 4)
    os.fsync(fd)
    os.write(fd, b"unsynced")
    os.close(fd)
    (mnt / "media").mkdir()
    os.link(mnt / "pending" / "a.cseg", mnt / "media" / "a.cseg")
    os.unlink(mnt / "pending" / "a.cseg")
    assert (mnt / "media" / "a.cseg").read_bytes() == b"0123" + bytes(6) + b"unsynced"
    assert (backing / "media" / "a.cseg").read_bytes() == b"0123"
    layer.cut()
    layer.restore()
    assert (mnt / "media" / "a.cseg").read_bytes() == b"0123"
    assert os.listdir(mnt / "pending") == []
