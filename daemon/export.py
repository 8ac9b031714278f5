"""Export: decrypt a store's media for review and evidence packages.

Each media file is exported only if its entry verifies (signature, chain,
stored size and SHA-256), it decrypts with every chunk authentic, it is
complete (or its entry says ``recovered``), and the plaintext matches the
SHA-256 the device sealed. Files are named ``<seq>-<kind>.mp4`` with the seq
zero-padded, so sorting by name gives ledger order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from protocol.entries import Segment
from protocol.envelope import parse_line, split_lines
from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey
from protocol.segment_crypto import decrypt_segment
from protocol.store_reader import MEDIA_DIR, read_store
from protocol.trust import TrustFile
from protocol.verify import VerificationPolicy, verify


@dataclass
class ExportResult:
    seq: int
    file: str  # the stored file
    out: Path | None  # the plaintext written, None if not exported
    problem: str = ""  # why it was refused
    offloaded: bool = False  # freed on the device against a receipt: not here, not a fault


def export_store(store: Path, trust: TrustFile, archive: ArchiveSecretKey,
                 out_dir: Path) -> list[ExportResult]:
    contents = read_store(store)
    report = verify(contents.ledger, contents.media, trust,
                    VerificationPolicy(receipts=contents.receipts), contents.findings)
    failed = {f.seq: f.message for f in report.errors if f.seq is not None}
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for line in split_lines(contents.ledger):
        try:
            signed = parse_line(line)
        except ProtocolError:
            continue  # reported by verify; carries no media we could trust
        entry = signed.entry
        for ref in entry.media():
            result = ExportResult(entry.seq, ref.file, None)
            results.append(result)
            if entry.seq in failed:
                result.problem = f"entry failed verification: {failed[entry.seq]}"
                continue
            path = store / MEDIA_DIR / ref.file
            if not path.is_file():  # verify passed it: archived against a receipt
                result.offloaded = True
                continue
            try:
                plain = decrypt_segment(path.read_bytes(), archive)
            except ProtocolError as e:
                result.problem = f"does not decrypt: {e}"
                continue
            recovered = isinstance(entry.body, Segment) and entry.body.recovered
            if not plain.complete and not recovered:
                result.problem = "cut short, but its entry does not say recovered"
                continue
            if (ref.plaintext_sha256 is not None
                    and hashlib.sha256(plain.plaintext).hexdigest() != ref.plaintext_sha256):
                result.problem = "plaintext does not match its sealed SHA-256"
                continue
            result.out = out_dir / f"{entry.seq:08d}-{entry.kind}.mp4"
            result.out.write_bytes(plain.plaintext)
    return results
