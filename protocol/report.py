"""What verification reports: the report of one store, its parts, its verdict.

Serialisation is apart from the model: :meth:`ContinuityReport.to_dict` is
the JSON ``custody verify --json`` prints; the human table is in
:mod:`protocol.verify_cli`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.entries import Segment
from protocol.findings import ERROR, UNEXPLAINED, Finding

INTACT = "intact"
INTACT_UNEXPLAINED_GAPS = "intact_unexplained_gaps"
BROKEN = "broken"
# The verdict of several stores (an archive) is the worst of theirs: a broken
# store outranks an unexplained gap elsewhere.
VERDICT_RANK = {INTACT: 0, INTACT_UNEXPLAINED_GAPS: 1, BROKEN: 2}


def verdict_of(findings: list[Finding]) -> str:
    severities = {f.severity for f in findings}
    if ERROR in severities:
        return BROKEN
    if UNEXPLAINED in severities:
        return INTACT_UNEXPLAINED_GAPS
    return INTACT


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=VERDICT_RANK.__getitem__, default=INTACT)


@dataclass
class Gap:
    """A hole between two consecutive segments of one recording.

    ``seconds`` = next first capture − previous last capture − the previous
    segment's period, on the wall clock unless it stepped between the two
    segments of one boot: then on the monotonic clock (docs/format.md, section 8).
    """

    recording: int
    after_seq: int  # the segment before the gap
    before_seq: int  # the segment after it
    start_utc_ns: int
    seconds: float
    declared: bool
    reason: str | None = None
    interruption: int | None = None
    voice_note: int | None = None
    explained: bool = False
    clock: str = "utc"  # what it was measured on: "utc" or "monotonic"


@dataclass
class AudioGap:
    """Sound missing from one segment: it holds ``seconds`` less audio than its time
    (where in the segment, the ledger cannot say; protocol.audio_coverage)."""

    recording: int
    seq: int  # the segment's entry
    start_utc_ns: int  # the segment's first capture
    seconds: float
    declared: bool
    interruption: int | None = None  # the interruption that declares it


@dataclass
class InterruptionReport:
    seq: int
    reason: str
    cut_utc_ns: int
    recording: int | None
    resumed_by: int | None = None
    voice_note: int | None = None
    explained: bool = False
    detected_by: str = ""  # what noticed it, as the device said


@dataclass
class RecordingReport:
    recording: int  # seq of its record_start
    officer: str
    category: str
    start_utc_ns: int
    stop_utc_ns: int | None = None
    duration_s: float = 0.0  # captured time, gaps excluded
    segments: int = 0
    spans: int = 1
    stop_trigger: str | None = None
    _last: Segment | None = field(default=None, repr=False)
    _last_seq: int = field(default=-1, repr=False)
    _last_end: tuple[str, int] | None = field(default=None, repr=False)  # (boot, monotonic)
    # (boot id, wall − monotonic clock) at the latest record_start or resume:
    # the offset the captures of the current span are stamped with
    _span_clock: tuple[str, int] = field(default=("", 0), repr=False)
    _pending: list[int] = field(default_factory=list, repr=False)  # interruptions since
    _unresumed: set[int] = field(default_factory=set, repr=False)
    _boot_unclaimed: int | None = field(default=None, repr=False)  # seq of a boot change
    _start_time: tuple[str, int, int] = field(default=("", 0, 0), repr=False)
    _end_time: tuple[str, int, int] | None = field(default=None, repr=False)


@dataclass
class TimeStep:
    """A ``time_sync`` entry: the wall clock was set or jumped."""

    seq: int
    old_utc_ns: int
    new_utc_ns: int
    step_s: float
    source: str
    statement: str  # "none", "verified" or "invalid"
    dock: str | None = None


@dataclass
class ContinuityReport:
    verdict: str
    device: str | None
    unit: str
    entries: int
    head: str | None  # SHA-256 of the last entry's payload
    recordings: list[RecordingReport] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    audio_gaps: list[AudioGap] = field(default_factory=list)
    interruptions: list[InterruptionReport] = field(default_factory=list)
    exemptions: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)
    console_actions: list[dict[str, Any]] = field(default_factory=list)  # Art. 13's audit
    time_syncs: list[TimeStep] = field(default_factory=list)
    # {seq, from, to, synced}: the first entry's source, then every change
    clock_sources: list[dict[str, Any]] = field(default_factory=list)
    boots: list[dict[str, Any]] = field(default_factory=list)  # {seq, boot_id}, in order
    # {after, before, seconds, clock}: from one recording's end to the next one's start
    between_recordings: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    trust_file: dict[str, str] | None = None  # {path, sha256}, set by whoever read it
    _digests: dict[int, str] = field(default_factory=dict, repr=False)  # seq -> payload SHA-256

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def add(self, findings: list[Finding]) -> None:
        """Findings made outside the ledger walk (e.g. of the archive); the verdict follows."""
        self.findings.extend(findings)
        self.verdict = verdict_of(self.findings)

    def to_dict(self) -> dict[str, Any]:
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if not k.startswith("_")}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        return clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)
