"""Evidence packages: checked by custody verify and by the README's steps alone."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import av
import pytest

from daemon.archive.archive import ArchiveError
from daemon.archive.package import export_recording
from protocol.envelope import parse_line, split_lines
from tests.archive.conftest import ArchiveSetup
from tests.archive.test_archive import REC, custody


def readme_steps(package: Path) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (package / "README.md").read_text(), re.S)
    assert len(blocks) == 5
    return "set -euo pipefail\n" + "\n".join(blocks)


def run_readme(package: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", readme_steps(package)], cwd=package,
                          capture_output=True, text=True, timeout=120)


def export(setup: ArchiveSetup, out: Path, clips: list[int] | None = None):
    return export_recording(setup.archive, REC, out, "custodian:LI", setup.unit.archive, clips)


def test_a_whole_recording_checks_with_custody_verify_and_by_hand(setup: ArchiveSetup,
                                                                  tmp_path: Path):
    setup.archive.annotate(REC, "case", "case 2026/117", "custodian:LI")
    out = tmp_path / "package"
    result = export(setup, out)
    assert len(result.media) == 3 and len(result.entries) == 7
    r = custody("verify", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: INTACT  (7 entries, 7 proven in the cosigned log, 3 media files match)" \
        in r.stdout
    r = run_readme(out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ALL CHECKS PASSED")
    assert r.stdout.count("log-signed, device-cosigned") == 7
    for f in sorted((out / "media").iterdir()):  # real, playable media
        with av.open(str(f)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 20
    manifest = json.loads((out / "package.json").read_text())
    assert manifest["annotations"][0]["value"] == "case 2026/117"
    audit = [json.loads(x) for x in (out / "audit-extract.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["annotate", "export"]
    assert audit[-1]["who"] == "custodian:LI" and audit[-1]["seq"] == manifest["audit_seq"]


def test_one_clip_is_provable_without_the_rest_of_the_shift(setup: ArchiveSetup,
                                                            tmp_path: Path):
    segments = [s.entry.seq for s in setup.unit.entries() if s.entry.kind == "segment"]
    out = tmp_path / "clip"
    export(setup, out, [segments[1]])
    lines = split_lines((out / "ledger-extract.jsonl").read_bytes())
    assert [parse_line(x).entry.seq for x in lines] == [segments[1]]
    assert [p.name for p in (out / "media").iterdir()] == [f"{segments[1]:08d}-segment.mp4"]
    assert [p.name for p in (out / "proofs").iterdir()] == [f"{segments[1]}.tlog-proof"]
    r = custody("verify", out)
    assert r.returncode == 0, r.stdout
    r = run_readme(out)
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(ArchiveError, match="not a segment"):
        export(setup, tmp_path / "x", [2])


@pytest.mark.parametrize("tamper", ["media", "proof", "entry"])
def test_a_tampered_package_fails_both_checks(setup: ArchiveSetup, tmp_path: Path,
                                              tamper: str):
    out = tmp_path / "package"
    export(setup, out)
    if tamper == "media":
        f = sorted((out / "media").iterdir())[1]
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 1
        f.write_bytes(bytes(data))
    elif tamper == "proof":
        p = sorted((out / "proofs").iterdir())[2]
        text = p.read_text().splitlines(keepends=True)
        text[2] = "A" * 43 + "=\n"  # the first hash of the path
        p.write_text("".join(text))
    else:  # an entry's payload changed (the officer's stop said to be a battery stop)
        lines = (out / "ledger-extract.jsonl").read_text().splitlines()
        env = json.loads(lines[-1])
        import base64
        payload = base64.b64decode(env["payload"]).replace(b'"button"', b'"battery"')
        env["payload"] = base64.b64encode(payload).decode()
        lines[-1] = json.dumps(env, separators=(",", ":"), sort_keys=True)
        (out / "ledger-extract.jsonl").write_text("\n".join(lines) + "\n")
    r = custody("verify", out)
    assert r.returncode == 1, r.stdout
    if tamper != "proof":  # the finding names the file altered
        altered = f"media/{f.name}" if tamper == "media" else "ledger-extract.jsonl"
        report = json.loads(custody("verify", out, "--json").stdout)
        assert altered in {x["file"] for x in report["findings"] if x["severity"] == "error"}
    r = run_readme(out)
    assert r.returncode != 0 and "FAIL" in r.stderr, r.stdout


def test_an_export_refuses_a_used_folder_and_a_deleted_recording(setup: ArchiveSetup,
                                                                 tmp_path: Path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(ArchiveError, match="not empty"):
        export(setup, used)


def test_a_segment_without_a_signed_plaintext_hash_ships_its_sealed_file(setup: ArchiveSetup,
                                                                        tmp_path: Path):
    """Where the device could not know the plaintext's SHA-256 it signed the sealed
    file's: the package carries that file, and the README's steps check it."""
    import dataclasses

    from device.sample import encode_sample
    from device.sealer import SegmentSealer
    from protocol.entries import RecordStart, RecordStop, Segment

    unit = setup.unit
    [start] = unit.append(RecordStart(trigger="button", category="scene", officer="PC-0042",
                                      pre_record_seconds=0.0))
    sample = encode_sample(0, 10, 10)
    sealer = SegmentSealer(unit.store, "recovered-00000.cseg", unit.archive_public)
    sealer.write(sample.mp4)
    sealer.end_fragment()
    media = dataclasses.replace(sealer.close(), plaintext_sha256=None, plaintext_size=None)
    t0 = start.entry.time.utc_ns
    [seg, _] = unit.append(Segment(
        recording=start.entry.seq, span=0, index=0, media=media, first_capture_utc_ns=t0,
        last_capture_utc_ns=t0 + 900_000_000, frame_period_ns=100_000_000, frames=10,
        audio_samples=sample.audio_samples, audio_rate=48_000, recovered=True),
        RecordStop(recording=start.entry.seq, trigger="button"))
    setup.dock()
    out = tmp_path / "package"
    result = export_recording(setup.archive, f"{unit.entries()[0].entry.device}/"
                              f"{start.entry.seq}", out, "custodian:LI", unit.archive)
    assert result.recovered == ["recovered-00000.cseg"]
    r = custody("verify", out)
    assert r.returncode == 0 and "recovered_media" in r.stdout, r.stdout
    r = run_readme(out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "recovered segment; sealed/recovered-00000.cseg matches" in r.stdout
    (out / "sealed" / "recovered-00000.cseg").write_bytes(b"not it")
    assert custody("verify", out).returncode == 1
    assert run_readme(out).returncode != 0
    assert seg.entry.kind == "segment"
