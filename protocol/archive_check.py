"""An archive checked as a whole: each store's report, and what lies between them.

Pure. Each ``devices/<id>/`` store has been verified on its own; here: its
folder name must be its ledger's device id, one device has one store, and
two ledgers of one device (a copy kept elsewhere, a restore) must not
diverge. The archive's verdict is the worst of its stores' and its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.findings import Finding
from protocol.report import ContinuityReport, verdict_of, worst
from protocol.verify import LEDGER_FILE


@dataclass
class ArchiveReport:
    path: str
    verdict: str
    findings: list[Finding] = field(default_factory=list)  # of the archive itself
    stores: list[tuple[str, ContinuityReport]] = field(default_factory=list)
    trust_file: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"archive": self.path, "verdict": self.verdict, "trust_file": self.trust_file,
                "findings": [asdict(f) for f in self.findings],
                "stores": [dict(store=name, **r.to_dict()) for name, r in self.stores]}


def check_archive(path: str, stores: list[tuple[str, ContinuityReport]],
                  findings: list[Finding]) -> ArchiveReport:
    """``stores`` are (folder name, report) of each ``devices/<name>/``."""
    archive = ArchiveReport(path, "", list(findings), stores)
    by_device: dict[str, list[tuple[str, ContinuityReport]]] = {}
    for name, report in stores:
        if report.device is not None and report.device != name:
            report.add([Finding(None, "store_name_mismatch", f"devices/{name}/ holds the ledger "
                                f"of {report.device!r}", file=f"devices/{name}")])
        if report.device is not None:
            by_device.setdefault(report.device, []).append((name, report))
    for device, held in by_device.items():
        if len(held) < 2:
            continue
        names = ", ".join(f"devices/{n}/" for n, _ in held)
        archive.findings.append(Finding(None, "duplicate_store", f"{names} all hold ledgers of "
                                        f"{device!r}"))
        (first_name, first), *others = held
        for name, other in others:
            for seq in sorted(first._digests.keys() & other._digests.keys()):
                if first._digests[seq] != other._digests[seq]:
                    archive.findings.append(Finding(seq, "diverging_ledgers", f"the ledgers of "
                                                    f"{device!r} in devices/{first_name}/ and "
                                                    f"devices/{name}/ differ from entry {seq}",
                                                    file=f"devices/{name}/{LEDGER_FILE}"))
                    break
    archive.verdict = worst([verdict_of(archive.findings), *(r.verdict for _, r in stores)])
    return archive
