"""``custody verify PACKAGE``: read an evidence package and check it.

Called by ``protocol/verify_cli.py`` when PATH holds ``package.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.envelope import split_lines
from protocol.package_check import EXTRACT_NAME, PackageReport, check_package
from protocol.store_reader import StoreError, read_trust, sha256_file
from protocol.verify import MediaDigest

MANIFEST = "package.json"


def is_package(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _digests(folder: Path) -> dict[str, MediaDigest]:
    if not folder.is_dir():
        return {}
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def read_and_check(path: Path, trust_path: Path | None) -> PackageReport:
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
        device = manifest["device"]
        lines = split_lines((path / EXTRACT_NAME).read_bytes())
        proofs = {int(p.stem): p.read_bytes() for p in (path / "proofs").glob("*.tlog-proof")}
    except (OSError, ValueError, KeyError) as e:
        raise StoreError(f"{path}: not a readable evidence package ({e})") from e
    trust = read_trust(trust_path or path / "trust.json")
    return check_package(device, lines, proofs, _digests(path / "media"),
                         _digests(path / "sealed"), trust)


def render(path: Path, report: PackageReport) -> str:
    lines = [f"{path}: evidence package of device {report.device}",
             f"verdict: {report.verdict.upper()}  ({report.entries} entries, {report.proven} "
             f"proven in the cosigned log, {report.media} media files match)"]
    for f in report.findings:
        lines.append(f"  {f.seq if f.seq is not None else '-'}  {f.severity}  {f.kind}  "
                     f"{f.message}")
    return "\n".join(lines)
