"""Evidence packages: one recording (or chosen clips of it) for a court.

``export_recording`` writes a folder::

    README.md             how to check it, with custody verify or by hand
    package.json          what is in it, who exported it and when
    trust.json            the unit's trust file (its SHA-256 is published by the unit)
    ledger-extract.jsonl  the exported entries' ledger lines, byte for byte
    proofs/<seq>.tlog-proof   C2SP tlog proof of each entry in the device's log
    media/<seq>-<kind>.mp4    decrypted media, as the device sealed it
    sealed/<file>         sealed file of a recovered segment (no signed plaintext hash)
    audit-extract.jsonl   the audit log's records about this recording

Nothing else of the device's ledger is in it: each entry is proven on its own
against a checkpoint the archive signed and the device cosigned. The export
itself is audited before the package is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from daemon.archive.archive import Archive, ArchiveError
from daemon.archive.readme import package_readme
from protocol.archive_log import checkpoint_signing_key, witness_name
from protocol.checkpoint import TlogProof
from protocol.envelope import split_lines
from protocol.errors import ProtocolError
from protocol.keys import ArchiveSecretKey
from protocol.package_check import PACKAGE_FORMAT, parse_seq, plaintext_name
from protocol.segment_crypto import decrypt_segment
from protocol.store_reader import TRUST_NAME


@dataclass
class PackageResult:
    out: Path
    entries: list[int]
    media: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def export_recording(archive: Archive, rec_id: str, out: Path, who: str,
                     secret: ArchiveSecretKey, clips: list[int] | None = None) -> PackageResult:
    """Write the evidence package of ``rec_id`` (only the segment entries ``clips``,
    if given) to ``out``, which must not exist or be empty."""
    view = archive.view(rec_id, who, audit=False)
    row = view.row
    if row.deleted:
        raise ArchiveError(f"{rec_id}: its media were deleted at the end of retention")
    chosen = view.entries
    if clips:
        by_seq = {s.entry.seq: s for s in view.entries}
        missing = [c for c in clips if c not in by_seq or by_seq[c].entry.kind != "segment"]
        if missing:
            raise ArchiveError(f"{rec_id}: {missing[0]} is not a segment of this recording")
        chosen = [by_seq[c] for c in clips]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ArchiveError(f"{out}: not empty; an evidence package goes into a new folder")
    ledger = archive.store.ledger(row.device)
    lines = split_lines(ledger)
    position = {parse_seq(line): i for i, line in enumerate(lines)}
    log = archive.log(row.device)
    tree = log.tree()
    wanted = [s.entry.seq for s in chosen]
    proofs = {}
    for seq in wanted:
        index = position[seq]
        note = log.covering(index)
        size = int(note.split(b"\n")[1])
        proofs[seq] = TlogProof(index, tree.inclusion_proof(index, size), note)
    # Audited before anything leaves the archive.
    record = archive.audit.append(who, "export", rec_id, entries=wanted, out=str(out))
    result = PackageResult(out, wanted)
    for sub in ("proofs", "media"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive.root / TRUST_NAME, out / TRUST_NAME)
    (out / "ledger-extract.jsonl").write_bytes(
        b"".join(lines[position[seq]] + b"\n" for seq in wanted))
    for seq, proof in proofs.items():
        (out / "proofs" / f"{seq}.tlog-proof").write_bytes(proof.to_bytes())
    for signed in chosen:
        entry = signed.entry
        for ref in entry.media():
            sealed = archive.store.read_media(row.device, ref.file)
            try:
                plain = decrypt_segment(sealed, secret)
            except ProtocolError as e:
                raise ArchiveError(f"{rec_id}: {ref.file} does not decrypt: {e}") from e
            name = plaintext_name(entry.seq, entry.kind)
            if ref.plaintext_sha256 is None:
                (out / "sealed").mkdir(exist_ok=True)
                (out / "sealed" / ref.file).write_bytes(sealed)
                result.recovered.append(ref.file)
            elif hashlib.sha256(plain.plaintext).hexdigest() != ref.plaintext_sha256:
                raise ArchiveError(f"{rec_id}: {ref.file} does not decrypt to the plaintext "
                                   "the device signed")
            (out / "media" / name).write_bytes(plain.plaintext)
            result.media.append(name)
    audit = [r for r in archive.audit.records() if r.object == rec_id]
    (out / "audit-extract.jsonl").write_bytes(b"".join(r.line() + b"\n" for r in audit))
    manifest = {
        "format": PACKAGE_FORMAT, "unit": archive.trust.unit, "device": row.device,
        "recording": row.recording, "officer": row.officer, "category": row.category,
        "entries": wanted, "media": result.media, "recovered": result.recovered,
        "exported_by": who, "exported_utc_ns": record.utc_ns, "audit_seq": record.seq,
        "trust_sha256": hashlib.sha256((out / TRUST_NAME).read_bytes()).hexdigest(),
        "annotations": [{"kind": a.kind, "value": a.value, "who": a.who, "utc_ns": a.utc_ns}
                        for a in view.annotations],
    }
    (out / "package.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log_keys = list(dict.fromkeys(
        checkpoint_signing_key(p.checkpoint, archive.trust, row.device).hex()
        for p in proofs.values()))
    (out / "README.md").write_text(package_readme(
        archive.trust, row.device, row.recording, wanted, result.media, result.recovered,
        witness_name(archive.trust.unit, row.device), log_keys))
    return result
