"""The conformance suite (tests/vectors/cases/): ``custody verify`` on every case
gives the verdict, exit code and findings its expected.json states."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from protocol import verify_cli

CASES = Path(__file__).resolve().parents[1] / "vectors" / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.json").exists())


def run_verify(*argv: str) -> tuple[int, dict]:
    """``custody verify --json ARGV`` in this process (the subcommand's own entry points)."""
    parser = argparse.ArgumentParser()
    verify_cli.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = verify_cli.run(parser.parse_args(["--json", *argv]))
    return code, json.loads(out.getvalue())


def found(doc: dict) -> Counter:
    """(kind, seq, store) of every finding of a store's or an archive's report."""
    if "stores" not in doc:
        return Counter((f["kind"], f["seq"], None) for f in doc["findings"])
    out = Counter((f["kind"], f["seq"], None) for f in doc["findings"])
    for store in doc["stores"]:
        name = Path(store["store"]).name
        out.update((f["kind"], f["seq"], name) for f in store["findings"])
    return out


def test_the_suite_has_at_least_40_small_cases():
    assert len(CASE_NAMES) >= 40
    for name in CASE_NAMES:
        size = sum(f.stat().st_size for f in (CASES / name).rglob("*") if f.is_file()
                   and not f.is_symlink())
        assert size < 64 * 1024, f"{name}: {size} bytes"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(name: str):
    case = CASES / name
    expected = json.loads((case / "expected.json").read_text())
    code, doc = run_verify(str(case / expected["path"]))
    assert (doc["verdict"], code) == (expected["verdict"], expected["exit_code"]), doc
    want = Counter((f["kind"], f["seq"], f.get("store")) for f in expected["findings"])
    assert found(doc) == want
    if "gaps" in expected:
        got = [{"recording": g["recording"], "seconds": round(g["seconds"], 3)}
               for g in doc["gaps"]]
        assert got == expected["gaps"]
    if "between_recordings" in expected:
        assert [{k: b[k] for k in ("after", "before", "seconds")}
                for b in doc["between_recordings"]] == expected["between_recordings"]
    if "clock_sources" in expected:
        assert [{"seq": c["seq"], "to": c["to"]} for c in doc["clock_sources"]] \
            == expected["clock_sources"]
    if "boots" in expected:
        assert doc["boots"] == expected["boots"]
    if "time_syncs" in expected:
        assert len(doc["time_syncs"]) == expected["time_syncs"]
    trust = case / expected["path"] / "trust.json" if expected["path"] == "archive" \
        else case / "trust.json"
    assert doc["trust_file"]["path"] == str(trust)


def test_custody_verify_command_exit_codes():
    """The installed command, as another implementation's runner would call it."""
    custody = Path(sys.executable).parent / "custody"
    for name, code in (("intact_recording", 0), ("media_byte_changed", 1),
                       ("interruption_unexplained", 3), ("archive_worst_verdict", 1)):
        expected = json.loads((CASES / name / "expected.json").read_text())
        r = subprocess.run([str(custody), "verify", str(CASES / name / expected["path"])],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == code == expected["exit_code"], r.stdout + r.stderr
        assert "trust file:" in r.stdout and "sha256" in r.stdout
