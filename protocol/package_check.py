"""Checking an evidence package: a few ledger entries of one device, the
plaintext of their media, and a C2SP tlog proof for each entry.

Each entry is checked on its own — its device signature, and its inclusion in
the device's log under a checkpoint signed by a dock (or the archive) and
cosigned by the device — so one clip can be proven without disclosing the rest of the shift.
A media file's SHA-256 must be the plaintext SHA-256 the device signed; for a
recovered segment (the device could not know it) the sealed file is in the
package instead, checked against the signed stored SHA-256, and the plaintext
is what ``custody export`` decrypts from it with the archive's key.

Pure: ``protocol/package_check_cli.py`` reads the folder. Findings use
:mod:`protocol.verify`'s severities; the layout is in docs/archive.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from securesystemslib.exceptions import VerificationError

from protocol.archive_log import log_verifiers, witness_verifiers
from protocol.checkpoint import CheckpointError, TlogProof
from protocol.envelope import parse_line
from protocol.errors import ProtocolError
from protocol.merkle import leaf_hash
from protocol.trust import TrustFile
from protocol.verify import BROKEN, ERROR, INFO, INTACT, Finding, MediaDigest

PACKAGE_FORMAT = "custody-evidence-package/1"
#: The package's ledger lines (its findings name it, with the line).
EXTRACT_NAME = "ledger-extract.jsonl"


def plaintext_name(seq: int, kind: str) -> str:
    return f"{seq:08d}-{kind}.mp4"


@dataclass
class PackageReport:
    verdict: str
    device: str
    entries: int = 0
    proven: int = 0  # entries whose tlog proof verified against a cosigned checkpoint
    media: int = 0  # media files matching a signed hash
    checkpoint_sizes: list[int] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def check_package(device: str, lines: list[bytes], proofs: Mapping[int, bytes],
                  plaintext: Mapping[str, MediaDigest], sealed: Mapping[str, MediaDigest],
                  trust: TrustFile) -> PackageReport:
    report = PackageReport(INTACT, device)
    find = report.findings.append
    keys = [k for k in (trust.signing_key(i) for i in trust.device_keys(device)) if k]
    if not keys:
        find(Finding(None, "unknown_device", f"device {device!r} has no key in the trust file"))
    for number, line in enumerate(lines, start=1):
        try:
            signed = parse_line(line)
        except ProtocolError as e:
            find(Finding(None, "malformed_entry", f"ledger extract line {number}: {e}",
                         file=EXTRACT_NAME, line=number))
            continue
        entry, seq = signed.entry, signed.entry.seq
        report.entries += 1
        if entry.device != device:
            find(Finding(seq, "foreign_entry", f"entry of device {entry.device!r}",
                         file=EXTRACT_NAME, line=number))
            continue
        try:
            signed.envelope.verify(keys, 1)
        except VerificationError:
            find(Finding(seq, "bad_signature", "not signed by a key of the device (altered?)",
                         file=EXTRACT_NAME, line=number))
            continue
        _check_proof(report, seq, signed.payload, proofs.get(seq), trust, device)
        for ref in entry.media():
            name = plaintext_name(seq, entry.kind)
            got = plaintext.get(name)
            if ref.plaintext_sha256 is not None:
                if got is None:
                    find(Finding(seq, "media_missing", f"media/{name} is not in the package",
                                 file=f"media/{name}"))
                elif got.sha256 != ref.plaintext_sha256 or got.size != ref.plaintext_size:
                    find(Finding(seq, "media_hash", f"media/{name} is not the plaintext the "
                                 "device signed", file=f"media/{name}"))
                else:
                    report.media += 1
                continue
            stored = sealed.get(ref.file)
            if stored is None or stored.sha256 != ref.sha256 or stored.size != ref.size:
                find(Finding(seq, "media_hash", f"sealed/{ref.file} is missing or not the file "
                             "the device sealed", file=f"sealed/{ref.file}"))
            else:
                report.media += 1
                find(Finding(seq, "recovered_media", f"{ref.file} was recovered after a power "
                             "cut: the device signed its sealed bytes (sealed/), the plaintext "
                             f"media/{name} is what they decrypt to with the archive key", INFO))
    for seq in sorted(set(proofs) - {parse_seq(x) for x in lines}):
        find(Finding(seq, "stray_proof", f"proof for entry {seq}, which is not in the extract",
                     INFO))
    if any(f.severity == ERROR for f in report.findings) or report.entries == 0:
        report.verdict = BROKEN
    return report


def parse_seq(line: bytes) -> int | None:
    try:
        return parse_line(line).entry.seq
    except ProtocolError:
        return None


def _check_proof(report: PackageReport, seq: int, payload: bytes, data: bytes | None,
                 trust: TrustFile, device: str) -> None:
    if data is None:
        report.findings.append(Finding(seq, "no_proof", f"no tlog proof for entry {seq}"))
        return
    problem = "the trust file names no archive key"
    for log in log_verifiers(trust, device):
        try:
            opened = TlogProof.from_bytes(data).verify(
                leaf_hash(payload), log, witness_verifiers(trust, device), quorum=1,
                origin=log.name)
        except CheckpointError as e:
            problem = str(e)
            continue
        report.proven += 1
        report.checkpoint_sizes.append(opened.checkpoint.size)
        return
    report.findings.append(Finding(seq, "bad_proof", f"entry {seq}: {problem}"))
