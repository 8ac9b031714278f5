"""host/durable.py: what each write promises, and what a power cut at any step leaves."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from hardware.host import durable
from hardware.host.durable import (
    append_durably,
    overwrite_durably,
    remove_temporaries,
    replace_atomically,
    write_new,
)
from tests.fuselayer import LazyLayer

OLD, NEW = b"old receipt\n" * 100, b"new receipt\n" * 300


def test_write_new_refuses_an_existing_file_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "receipt.json"
    write_new(path, OLD, mode=0o600)
    with pytest.raises(FileExistsError):
        write_new(path, NEW)
    assert path.read_bytes() == OLD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["receipt.json"]  # no temporary file left behind


def test_write_new_refuses_a_name_taken_by_a_link_and_never_writes_through_it(
        tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(OLD)
    (tmp_path / "key.pem").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("key.pem", "dangling"):
        with pytest.raises(FileExistsError):
            write_new(tmp_path / name, NEW)
    assert (tmp_path / "elsewhere").read_bytes() == OLD
    assert not (tmp_path / "nowhere").exists()


def test_replace_append_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    replace_atomically(path, OLD)
    replace_atomically(path, NEW, mode=0o640)
    assert path.read_bytes() == NEW and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert append_durably(tmp_path / "log", b"one\n") == 0
    assert append_durably(tmp_path / "log", b"two\n") == 4
    assert (tmp_path / "log").read_bytes() == b"one\ntwo\n"
    overwrite_durably(tmp_path / "mark", NEW)
    overwrite_durably(tmp_path / "mark", OLD)
    assert (tmp_path / "mark").read_bytes() == OLD
    assert sorted(os.listdir(tmp_path)) == ["log", "mark", "trust.json"]


# --- power cuts -----------------------------------------------------------------------

_STEPS = ("open", "write", "fsync", "link", "replace", "unlink")


def _cut_at(layer: LazyLayer, step: int, work: Callable[[], None]) -> bool:
    """Run ``work`` in a child whose power is cut before its ``step``-th system call of
    :data:`_STEPS` (nothing after it runs, as at a real cut); True if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        calls = 0

        def cutting(real):
            def call(*args, **kwargs):
                nonlocal calls
                if calls == step:
                    layer.cut()
                    os._exit(9)
                calls += 1
                return real(*args, **kwargs)
            return call

        for name in _STEPS:
            setattr(durable.os, name, cutting(getattr(os, name)))
        try:
            work()
        except BaseException:
            os._exit(1)
        layer.cut()  # after it returned: what it promised must survive
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), f"the write failed before the cut (exit {code})"
    layer.restore()
    return code == 0


def _names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if durable.TEMP_MARK not in n)


def test_a_cut_at_any_step_of_write_new_leaves_the_file_whole_or_absent(
        layer: LazyLayer) -> None:
    finished, step, left = False, 0, 0
    while not finished:
        folder = layer.mount / f"cut{step}"
        folder.mkdir()
        durable.fsync_dir(layer.mount)
        finished = _cut_at(layer, step, partial(write_new, folder / "receipt.json", NEW))
        if finished:
            assert (folder / "receipt.json").read_bytes() == NEW
        elif _names(folder):
            assert (folder / "receipt.json").read_bytes() == NEW, f"cut at step {step}"
        # At the writer's next start its leftovers go, and only they: what the cut
        # left under the final name is as it was.
        names = _names(folder)
        left += len(remove_temporaries(folder))
        assert sorted(os.listdir(folder)) == names
        step += 1
    assert step > 4  # every step was cut once
    assert left  # some cut did leave a temporary file behind


def test_a_cut_at_any_step_of_replace_atomically_leaves_the_old_file_or_the_new(
        layer: LazyLayer) -> None:
    finished, step, seen = False, 0, set()
    while not finished:
        folder = layer.mount / f"cut{step}"
        folder.mkdir()
        replace_atomically(folder / "trust.json", OLD)
        finished = _cut_at(layer, step, partial(replace_atomically, folder / "trust.json", NEW))
        got = (folder / "trust.json").read_bytes()
        assert got in (OLD, NEW), f"cut at step {step}: {len(got)} bytes"
        assert got == NEW or not finished
        seen.add(got)
        step += 1
    assert seen == {OLD, NEW}


def test_an_append_that_returned_survives_the_cut(layer: LazyLayer) -> None:
    path = layer.mount / "audit.jsonl"
    assert _cut_at(layer, 99, lambda: (append_durably(path, OLD), append_durably(path, NEW)))
    assert path.read_bytes() == OLD + NEW


def test_only_exact_temporary_names_are_removed_and_each_is_logged(tmp_path: Path,
                                                                  caplog) -> None:
    caplog.set_level("WARNING", "custody.durable")
    write_new(tmp_path / "receipt.json", OLD)
    left = tmp_path / ".receipt.json.tmp-0a1b2c3d"  # a cut before the link
    left.write_bytes(NEW)
    linked = tmp_path / ".receipt.json.tmp-ffffffff"  # a cut after it, before the unlink
    os.link(tmp_path / "receipt.json", linked)
    evidence = {name: name.encode() for name in (
        "r000001-00001.cseg", "receipt.json.tmp-0a1b2c3d", ".receipt.json.tmp-0a1b2c3",
        ".receipt.json.tmp-0a1b2c3d4", ".receipt.json.tmp-0A1B2C3D", ".tmp-0a1b2c3d",
        ".receipt.json.tmp-0a1b2c3d.json")}
    for name, data in evidence.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".link.tmp-01234567").symlink_to(tmp_path / "r000001-00001.cseg")
    (tmp_path / ".dir.tmp-01234567").mkdir()
    (tmp_path / ".dir.tmp-01234567" / ".x.tmp-01234567").write_bytes(b"not entered")
    assert remove_temporaries(tmp_path, targets={"other.json"}) == []
    assert sorted(remove_temporaries(tmp_path)) == sorted([left, linked])
    assert (tmp_path / "receipt.json").read_bytes() == OLD
    assert {n: (tmp_path / n).read_bytes() for n in evidence} == evidence
    assert (tmp_path / ".link.tmp-01234567").is_symlink()
    assert (tmp_path / ".dir.tmp-01234567" / ".x.tmp-01234567").exists()
    logged = caplog.text
    assert str(left) in logged and str(linked) in logged
    assert remove_temporaries(tmp_path / "absent") == []
