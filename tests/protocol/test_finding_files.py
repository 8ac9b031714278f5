"""A finding about a file's bytes names that file (docs/format.md §9), not the
ledger line that seals it: a flipped bit in a segment is ``media/<name>``.

The ``unit`` store: 0 provisioned, 1 assigned, 2 record_start, 3 marker,
4–6 segments, 7 marker, 8 record_stop.
"""

from __future__ import annotations

import os

from protocol.archive_device_check import check_archived_device
from protocol.audit_anchor import AUDIT_NAME, check_audit_anchors
from protocol.store_reader import LEDGER_NAME, MEDIA_DIR, read_store
from tests.conftest import DEVICE, Unit


def where(report, kind: str) -> list[tuple[int | None, str | None, int | None]]:
    return [(f.seq, f.file, f.line) for f in report.findings if f.kind == kind]


def segment_files(unit: Unit) -> list[str]:
    return sorted(p.name for p in (unit.store / MEDIA_DIR).iterdir())


def test_a_flipped_bit_in_a_segment_names_the_segment_file(unit: Unit):
    name = segment_files(unit)[1]
    path = unit.store / MEDIA_DIR / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(data)
    assert where(unit.verify(), "media_hash") == [(5, f"{MEDIA_DIR}/{name}", None)]


def test_a_short_long_missing_or_unsealed_media_file_is_named(unit: Unit):
    first, second, third = segment_files(unit)
    os.truncate(unit.store / MEDIA_DIR / first, 100)
    with open(unit.store / MEDIA_DIR / second, "ab") as f:
        f.write(b"more")
    (unit.store / MEDIA_DIR / third).unlink()
    (unit.store / MEDIA_DIR / "stray.cseg").write_bytes(b"x")
    report = unit.verify()
    assert where(report, "media_truncated") == [(4, f"{MEDIA_DIR}/{first}", None)]
    assert where(report, "media_size") == [(5, f"{MEDIA_DIR}/{second}", None)]
    assert where(report, "media_missing") == [(6, f"{MEDIA_DIR}/{third}", None)]
    assert where(report, "unsealed_media") == [(None, f"{MEDIA_DIR}/stray.cseg", None)]


def test_a_flipped_bit_in_the_ledger_names_the_ledger_and_its_line(unit: Unit):
    lines = unit.lines()
    line = bytearray(lines[3])
    line[len(line) - 20] ^= 0x01  # in the signature
    lines[3] = bytes(line)
    unit.write_lines(lines)
    errors = unit.verify().errors
    assert errors and {(f.file, f.line) for f in errors} == {(LEDGER_NAME, 4)}


def test_an_archives_checkpoint_tombstone_media_and_audit_findings_name_their_files(
        unit: Unit):
    contents = read_store(unit.store)
    gone = segment_files(unit)[0]
    media = {k: v for k, v in contents.media.items() if k != gone}
    check = check_archived_device(DEVICE, contents.ledger, media,
                                  [("7.checkpoint", b"not a note")],
                                  [("00000002.json", {"payload": "x"})], unit.trust)
    got = {f.kind: f.file for f in check.findings}
    assert got["bad_checkpoint"] == f"checkpoints/{DEVICE}/7.checkpoint"
    assert got["bad_tombstone"] == f"tombstones/{DEVICE}/00000002.json"
    assert got["archive_media_missing"] == f"{MEDIA_DIR}/{gone}"
    [audit] = check_audit_anchors(b"", [("7.checkpoint", 3, "00" * 32)])
    assert audit.file == AUDIT_NAME
