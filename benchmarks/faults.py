"""The fault-injection suite, long form: what the field does to the system, and
whether anything was lost.

    .venv/bin/python benchmarks/faults.py [--full] [--seed 1] [--no-write]

Runs every trial kind of ``tests/faults/trials.py`` (the short counts by
default, the long ones with ``--full``), prints one line per kind and a JSON
summary on the last line (keys ``trials``, ``survived``, ``lost``; goal: every
trial survived, nothing lost), and with ``--full`` writes the figures to
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults import trials  # noqa: E402

SHORT = {"hard_kill": 10, "bit_flip": 8}
FULL = {"hard_kill": 100, "bit_flip": 100}


def run_all(work: Path, counts: dict[str, int], seed: int) -> list[trials.TrialResult]:
    def fresh(name: str) -> Path:
        path = work / name
        path.mkdir()
        return path

    results = [trials.hard_kills(fresh("hard_kill"), counts["hard_kill"], seed),
               trials.storage_full(fresh("storage_full")),
               trials.clock_steps(fresh("clock_step"))]
    clean = trials.clean_store(fresh("clean"))
    results.append(trials.bit_flips(fresh("bit_flip"), clean, counts["bit_flip"], seed))
    return results


def write_report(results: list[trials.TrialResult], seconds: float, command: str) -> None:
    rows = "".join(
        f"| {r.kind} | {r.trials} | {r.survived} | {r.lost} | "
        f"{'; '.join(r.problems[:3]) or '—'} |\n" for r in results)
    (ROOT / "docs" / "reliability.md").write_text(f"""# Reliability: the fault-injection suite

Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s.
Each trial injects its fault into the real recorder agent (`custody sim`, simulated
camera and microphone) and checks the invariants of `tests/faults/trials.py`:
nothing sealed lost, every cut declared, `custody verify` giving the verdict the
trial predicts. `make test` runs the short form (`tests/faults/`).

| fault | trials | survived | sealed segments lost | problems |
|---|---|---|---|---|
{rows}""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="the long form; writes docs/reliability.md")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/reliability.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="custody-faults-"))
    started = time.monotonic()
    try:
        results = run_all(work, FULL if args.full else SHORT, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    for r in results:
        print(json.dumps(r.as_json()))
    if args.full and not args.no_write:
        write_report(results, seconds, "benchmarks/faults.py --full")
    print(json.dumps({"trials": sum(r.trials for r in results),
                      "survived": sum(r.survived for r in results),
                      "lost": sum(r.lost for r in results), "seconds": round(seconds, 1),
                      "kinds": {r.kind: r.survived == r.trials for r in results}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
