"""``custody archive`` from the outside, on an archive the fixture docked."""

from __future__ import annotations

import json

from daemon.archive.audit import verify_audit
from tests.archive.conftest import ArchiveSetup
from tests.archive.test_archive import REC, custody
from tests.conftest import OFFICER


def test_search_annotate_show_hold_delete_export(setup: ArchiveSetup, tmp_path):
    root = setup.root
    base = ("--archive", root, "--as", "custodian:LI")
    r = custody("archive", "search", "--officer", OFFICER, "--json", *base)
    assert r.returncode == 0, r.stderr
    assert [x["id"] for x in json.loads(r.stdout)] == [REC]
    r = custody("archive", "annotate", REC, "--case", "Müller Bakery inspection", *base)
    assert r.returncode == 0, r.stderr
    r = custody("archive", "search", "--case", "bakery", *base)
    assert r.returncode == 0 and REC in r.stdout and "1 recordings" in r.stdout
    r = custody("archive", "search", "--not-classified", *base)
    assert "0 recordings" in r.stdout
    r = custody("archive", "hold", REC, "--why", "court order 5", *base)
    assert r.returncode == 0
    r = custody("archive", "show", REC, *base)
    assert r.returncode == 0 and "ON HOLD" in r.stdout and "Müller Bakery" in r.stdout
    key = setup.unit.keys / "archive-signing.key"
    r = custody("archive", "delete", REC, "--why", "tidy", "--key", key, *base)
    assert r.returncode == 1 and "legal hold" in r.stderr
    out = tmp_path / "pkg"
    r = custody("archive", "export", REC, "--out", out, "--key",
                setup.unit.keys / "archive-secret.key", *base)
    assert r.returncode == 0, r.stderr
    assert custody("verify", out).returncode == 0
    r = custody("archive", "audit", "--archive", root)
    assert r.returncode == 0 and "audit log intact" in r.stdout
    actions = [json.loads(x)["action"] for x in (root / "audit.jsonl").read_text().splitlines()]
    assert actions == ["write", "search", "annotate", "search", "search", "hold", "view",
                       "delete", "export"]
    assert verify_audit(root / "audit.jsonl") == len(actions)


def test_who_is_required_and_bad_input_is_named(setup: ArchiveSetup):
    r = custody("archive", "search", "--archive", setup.root)
    assert r.returncode == 2 and "--as" in r.stderr
    r = custody("archive", "show", "nonsense", "--archive", setup.root, "--as", "x")
    assert r.returncode == 1 and "not a recording id" in r.stderr
    r = custody("archive", "search", "--recorded-from", "yesterday", "--archive", setup.root,
                "--as", "x")
    assert r.returncode == 2 and "not a date" in r.stderr
    (setup.root / "archive.toml").write_text("[categories.scene]\nretention_days = -1\n")
    r = custody("archive", "search", "--archive", setup.root, "--as", "x")
    assert r.returncode == 2 and "categories.scene.retention_days" in r.stderr
