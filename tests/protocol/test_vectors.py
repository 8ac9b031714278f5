"""The shipped test vectors verify — with our code and by hand with openssl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.export import export_store
from protocol.keys import ArchiveSecretKey
from protocol.store_reader import read_store, read_trust
from protocol.verify import INTACT, verify

ROOT = Path(__file__).resolve().parents[2]
INTACT_DIR = ROOT / "tests" / "vectors" / "intact"
BY_HAND = ROOT / "docs" / "verify-by-hand.sh"


def device_public_hex(store: Path) -> str:
    trust = json.loads((store / "trust.json").read_text())
    [keyid] = next(iter(trust["devices"].values()))["keys"]
    return trust["keys"][keyid]["public"]


def test_intact_vector_verifies_and_exports():
    trust = read_trust(INTACT_DIR / "trust.json")
    contents = read_store(INTACT_DIR)
    report = verify(contents.ledger, contents.media, trust)
    assert report.verdict == INTACT, report.findings
    assert [r.segments for r in report.recordings] == [3]
    assert report.exemptions[0]["reason"] == "privacy"


def test_intact_vector_exports_with_its_archive_key(tmp_path: Path):
    archive = ArchiveSecretKey.from_pem((INTACT_DIR / "archive-secret.key").read_bytes())
    results = export_store(INTACT_DIR, read_trust(INTACT_DIR / "trust.json"), archive, tmp_path)
    assert all(r.out for r in results) and len(results) == 3


@pytest.fixture
def vector_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(INTACT_DIR, tmp_path / "intact"))


def by_hand(store: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BY_HAND), str(store), device_public_hex(store)],
                          capture_output=True, text=True, timeout=120)


def test_openssl_alone_verifies_the_intact_vector(vector_copy: Path):
    r = by_hand(vector_copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 10 entries" in r.stdout
    assert r.stdout.count("sha256 ok") == 3


def test_openssl_alone_catches_a_changed_media_byte(vector_copy: Path):
    f = sorted((vector_copy / "media").iterdir())[1]
    data = bytearray(f.read_bytes())
    data[1000] ^= 1
    f.write_bytes(data)
    r = by_hand(vector_copy)
    assert r.returncode == 1 and f"FAIL: {f.name} does not match" in r.stdout


def test_openssl_alone_catches_an_edited_entry(vector_copy: Path):
    ledger = vector_copy / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines()
    envelope = json.loads(lines[2])
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    lines[2] = json.dumps(envelope, separators=(",", ":")).encode()
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    r = by_hand(vector_copy)
    assert r.returncode == 1 and "FAIL: bad signature at entry 2" in r.stdout


def test_openssl_alone_catches_a_deleted_entry(vector_copy: Path):
    ledger = vector_copy / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines()
    del lines[3]
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    r = by_hand(vector_copy)
    assert r.returncode == 1 and "FAIL: entry 4 where 3 should be" in r.stdout


DECRYPT_BY_HAND = ROOT / "docs" / "decrypt-by-hand.py"


def decrypt_by_hand(key: Path, segment: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DECRYPT_BY_HAND), str(key), str(segment)],
                          capture_output=True, timeout=60)


def test_the_reference_decryptor_gives_what_export_gives_byte_for_byte(tmp_path: Path):
    archive = ArchiveSecretKey.from_pem((INTACT_DIR / "archive-secret.key").read_bytes())
    results = export_store(INTACT_DIR, read_trust(INTACT_DIR / "trust.json"), archive, tmp_path)
    for result in results:
        r = decrypt_by_hand(INTACT_DIR / "archive-secret.key", INTACT_DIR / "media" / result.file)
        assert r.returncode == 0 and r.stderr.strip() == b"complete"
        assert r.stdout == result.out.read_bytes()


def test_the_reference_decryptor_refuses_a_changed_chunk_and_says_incomplete(vector_copy: Path):
    key, f = vector_copy / "archive-secret.key", sorted((vector_copy / "media").iterdir())[0]
    data = f.read_bytes()
    f.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    r = decrypt_by_hand(key, f)
    assert r.returncode == 1 and b"chunk 0: authentication failed" in r.stderr
    f.write_bytes(data[:-20])  # the final chunk cut short
    r = decrypt_by_hand(key, f)
    assert r.returncode == 0 and b"INCOMPLETE" in r.stderr


def test_the_reference_decryptor_imports_only_cryptography():
    imports = {line.split()[1].split(".")[0] for line in DECRYPT_BY_HAND.read_text().splitlines()
               if line.startswith(("import ", "from "))}
    assert imports == {"hashlib", "struct", "sys", "cryptography"}
