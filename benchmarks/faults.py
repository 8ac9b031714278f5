"""The fault-injection suite, long form: what the field does to the system, and
whether anything was lost.

    .venv/bin/python benchmarks/faults.py [--full] [--seed 1] [--no-write]
    .venv/bin/python benchmarks/faults.py --only broker_restart --count 100

Runs every trial kind of ``tests/faults/trials.py`` (the recorder's side) and
``tests/faults/dock_trials.py`` (the dock's side) — the short counts by
default, the long ones with ``--full``, or only the kinds named with ``--only``
(``--count``: how many trials of each) — prints one line per kind and a JSON
summary on the last line (keys ``trials``, ``survived``, ``faults``,
``faults_survived``, ``lost`` (sealed segments), ``undelivered``
(attestations); goal: every trial survived, nothing lost), and with ``--full``
alone writes the figures to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults import broker_trials, dock_trials, trials  # noqa: E402

SHORT = {"hard_kill": 10, "power_loss": 5, "bit_flip": 8, "dock_kill": 5, "link_drop": 3,
         "broker_restart": 3, "archive_bit_flip": 8}
FULL = {"hard_kill": 100, "power_loss": 50, "bit_flip": 100, "dock_kill": 50, "link_drop": 50,
        "broker_restart": 20, "archive_bit_flip": 100}


RECORDER_KINDS = ("hard_kill", "power_loss", "storage_full", "clock_step", "bit_flip")
DOCK_KINDS = ("dock_kill", "link_drop", "broker_restart", "archive_bit_flip", "archive_full")


def recorder_side(work: Path, counts: dict[str, int], seed: int,
                  kinds: tuple[str, ...] = RECORDER_KINDS) -> list[trials.TrialResult]:
    def fresh(name: str) -> Path:
        path = work / name
        path.mkdir()
        return path

    results = []
    if "hard_kill" in kinds:
        results.append(trials.hard_kills(fresh("hard_kill"), counts["hard_kill"], seed))
    if "power_loss" in kinds:
        results.append(trials.power_losses(fresh("power_loss"), counts["power_loss"], seed))
    if "storage_full" in kinds:
        results.append(trials.storage_full(fresh("storage_full")))
    if "clock_step" in kinds:
        results.append(trials.clock_steps(fresh("clock_step")))
    if "bit_flip" in kinds:
        clean = trials.clean_store(fresh("clean"))
        results.append(trials.bit_flips(fresh("bit_flip"), clean, counts["bit_flip"], seed))
    return results


def dock_side(work: Path, counts: dict[str, int], seed: int,
              kinds: tuple[str, ...] = DOCK_KINDS) -> list[trials.TrialResult]:
    # One unit, device and archive for all, the invariants cumulative.
    results = []
    shared = [k for k in ("dock_kill", "link_drop", "broker_restart", "archive_bit_flip")
              if k in kinds]
    if shared:
        (work / "world").mkdir()
        world = dock_trials.World.create(work / "world")
        run = {"dock_kill": dock_trials.dock_kills, "link_drop": dock_trials.link_drops,
               "broker_restart": broker_trials.broker_restarts,
               "archive_bit_flip": dock_trials.archive_bit_flips}
        try:
            results += [run[k](world, counts[k], seed) for k in shared]
        finally:
            world.close()
    if "archive_full" in kinds:
        (work / "archive_full").mkdir()
        results.append(dock_trials.archive_full(work / "archive_full"))
    return results


def run_all(work: Path, counts: dict[str, int], seed: int,
            kinds: tuple[str, ...] = RECORDER_KINDS + DOCK_KINDS) -> list[trials.TrialResult]:
    """The recorder's trials here, the dock's beside them on a thread (they share
    nothing but the machine: the recorder's run in real time, the dock's mostly wait)."""
    (work / "recorder").mkdir()
    (work / "dock").mkdir()
    with ThreadPoolExecutor(1) as pool:
        dock = pool.submit(dock_side, work / "dock", counts, seed,
                           tuple(k for k in DOCK_KINDS if k in kinds))
        return recorder_side(work / "recorder", counts, seed,
                             tuple(k for k in RECORDER_KINDS if k in kinds)) + dock.result()


WHAT = {
    "hard_kill": "the recorder's process group SIGKILLed mid-recording",
    "power_loss": "power cut through the FUSE layer: unsynced writes forgotten, then the kill",
    "storage_full": "the device store full mid-recording",
    "clock_step": "the device's wall clock stepped forward and back",
    "bit_flip": "one bit flipped in media or ledger on the device",
    "dock_kill": "a real `custody dock` SIGKILLed at a random instant of an offload",
    "link_drop": "the device-dock link cut at a random byte of an offload",
    "broker_restart": "Mosquitto stopped during an attestation, back 0.2-1 s later",
    "archive_full": "the archive on a 4 MiB disk: too small, then below the reserve",
    "archive_bit_flip": "one bit flipped in media or ledger in `archive/devices/<id>/`",
}


HEADER = ("| fault | what is done | trials | survived | faults survived | sealed segments lost "
          "| attestations lost | figures | problems |\n" + "|---" * 9 + "|")


def totals(results: list[trials.TrialResult]) -> dict[str, int]:
    """Trials run and survived (a trial that broke two invariants is one trial
    failed), faults injected and survived, and what was lost."""
    return {"trials": sum(r.trials for r in results),
            "survived": sum(r.survived for r in results),
            "faults": sum(r.faults for r in results),
            "faults_survived": sum(r.faults_survived for r in results),
            "lost": sum(r.lost for r in results),
            "undelivered": sum(r.undelivered for r in results)}


def write_report(results: list[trials.TrialResult], seconds: float, command: str) -> None:
    def figures(r: trials.TrialResult) -> str:
        return ", ".join(f"{k} {v}" for k, v in r.figures.items()) or "—"

    def problems(r: trials.TrialResult) -> str:
        more = len(r.problems) - 3
        return "; ".join(r.problems[:3]) + (f"; and {more} more" if more > 0 else "") or "—"

    rows = "".join(
        f"| {r.kind} | {WHAT.get(r.kind, '')} | {r.trials} | {r.survived} | "
        f"{r.faults_survived} of {r.faults} | {r.lost} | {r.undelivered} | {figures(r)} | "
        f"{problems(r)} |\n" for r in results)
    t = totals(results)
    (ROOT / "docs" / "reliability.md").write_text(f"""# Reliability: the fault-injection suite

Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s:
**{t["trials"]} trials run, {t["survived"]} survived; {t["faults"]} faults injected, \
{t["faults_survived"]} survived; lost: {t["lost"]} sealed segments, \
{t["undelivered"]} attestations.**

A trial survived when it broke no invariant; one that broke two is one trial
failed. A trial injects one fault (`clock_step`: a step forward and one back);
the faults survived are those of the trials survived. A problem of a whole run
(the sim did not run, a check over all its trials at once) counts every trial
of that run as failed. Lost is what no later step brought back: sealed segments
neither on the device nor intact in the archive, attestations the dock made
that never reached the subscriber.

The recorder's trials (`tests/faults/trials.py`) inject their fault into the
real recorder agent (`custody sim`, simulated camera and microphone); the
dock's trials (`tests/faults/dock_trials.py`, `tests/faults/broker_trials.py`)
into a real dock (HTTPS with client certificates; a real `custody dock`
process where the process is what is hit), a real Mosquitto (TLS, ACLs) and a
watcher, one unit, device and archive shared by all, so each check covers
everything archived so far.
Checked after every trial, where it applies: no sealed segment lost; no
duplicate in the archive; every cut declared as an interruption (at most one
fragment, 1 s, of capture lost); the device never frees media without a valid
receipt; every attestation delivered exactly once after deduplication,
within {broker_trials.DELIVERY_BOUND_S:.0f} s of the broker being back, the
attested ranges back to back; `custody verify` giving the verdict the trial
predicts. `make test` runs the short form (`tests/faults/`).

{HEADER}
{rows}""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="the long form; writes docs/reliability.md")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/reliability.md")
    parser.add_argument("--only", action="append", choices=RECORDER_KINDS + DOCK_KINDS,
                        metavar="KIND", help="run only this kind (may be repeated; "
                        "docs/reliability.md is then not written)")
    parser.add_argument("--count", type=int, help="trials of each kind run (instead of the "
                        "short or full count; kinds of fixed cases keep theirs)")
    args = parser.parse_args()
    counts = dict(FULL if args.full else SHORT)
    if args.count is not None:
        if args.count < 1:
            parser.error("--count: at least 1")
        counts = dict.fromkeys(counts, args.count)
    kinds = tuple(args.only) if args.only else RECORDER_KINDS + DOCK_KINDS
    work = Path(tempfile.mkdtemp(prefix="custody-faults-"))
    started = time.monotonic()
    try:
        results = run_all(work, counts, args.seed, kinds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    for r in results:
        print(json.dumps(r.as_json()))
    if args.full and not args.no_write and not args.only and args.count is None:
        write_report(results, seconds, "benchmarks/faults.py --full")
    print(json.dumps({**totals(results), "seconds": round(seconds, 1),
                      "kinds": {r.kind: r.survived == r.trials for r in results}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
