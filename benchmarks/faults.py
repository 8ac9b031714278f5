"""The fault-injection suite, long form: what the field does to the system, and
whether anything was lost.

    .venv/bin/python benchmarks/faults.py [--full] [--seed 1] [--no-write]

Runs every trial kind of ``tests/faults/trials.py`` (the recorder's side) and
``tests/faults/dock_trials.py`` (the dock's side) — the short counts by
default, the long ones with ``--full`` — prints one line per kind and a JSON
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


def recorder_side(work: Path, counts: dict[str, int], seed: int) -> list[trials.TrialResult]:
    def fresh(name: str) -> Path:
        path = work / name
        path.mkdir()
        return path

    results = [trials.hard_kills(fresh("hard_kill"), counts["hard_kill"], seed),
               trials.power_losses(fresh("power_loss"), counts["power_loss"], seed),
               trials.storage_full(fresh("storage_full")),
               trials.clock_steps(fresh("clock_step"))]
    clean = trials.clean_store(fresh("clean"))
    results.append(trials.bit_flips(fresh("bit_flip"), clean, counts["bit_flip"], seed))
    return results


def dock_side(work: Path, counts: dict[str, int], seed: int) -> list[trials.TrialResult]:
    # One unit, device and archive for all, the invariants cumulative.
    (work / "world").mkdir()
    world = dock_trials.World.create(work / "world")
    try:
        results = [dock_trials.dock_kills(world, counts["dock_kill"], seed),
                   dock_trials.link_drops(world, counts["link_drop"], seed),
                   broker_trials.broker_restarts(world, counts["broker_restart"], seed),
                   dock_trials.archive_bit_flips(world, counts["archive_bit_flip"], seed)]
    finally:
        world.close()
    (work / "archive_full").mkdir()
    results.append(dock_trials.archive_full(work / "archive_full"))
    return results


def run_all(work: Path, counts: dict[str, int], seed: int) -> list[trials.TrialResult]:
    """The recorder's trials here, the dock's beside them on a thread (they share
    nothing but the machine: the recorder's run in real time, the dock's mostly wait)."""
    (work / "recorder").mkdir()
    (work / "dock").mkdir()
    with ThreadPoolExecutor(1) as pool:
        dock = pool.submit(dock_side, work / "dock", counts, seed)
        return recorder_side(work / "recorder", counts, seed) + dock.result()


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


def write_report(results: list[trials.TrialResult], seconds: float, command: str) -> None:
    def figures(r: trials.TrialResult) -> str:
        return ", ".join(f"{k} {v}" for k, v in r.figures.items()) or "—"

    rows = "".join(
        f"| {r.kind} | {WHAT.get(r.kind, '')} | {r.trials} | {r.survived} | {r.lost} | "
        f"{figures(r)} | {'; '.join(r.problems[:3]) or '—'} |\n" for r in results)
    total = sum(r.trials for r in results)
    survived = sum(r.survived for r in results)
    lost = sum(r.lost for r in results)
    (ROOT / "docs" / "reliability.md").write_text(f"""# Reliability: the fault-injection suite

Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s:
**{total} trials, {survived} survived, {lost} sealed segments lost.**

The recorder's trials (`tests/faults/trials.py`) inject their fault into the
real recorder agent (`custody sim`, simulated camera and microphone); the
dock's trials (`tests/faults/dock_trials.py`) into a real dock (HTTPS with
client certificates; a real `custody dock` process where the process is what
is hit), a real Mosquitto (TLS, ACLs) and a watcher, one unit, device and
archive shared by all, so each check covers everything archived so far.
Checked after every trial, where it applies: no sealed segment lost; no
duplicate in the archive; every cut declared as an interruption (at most one
fragment, 1 s, of capture lost); the device never frees media without a valid
receipt; every attestation delivered exactly once after deduplication, the
attested ranges back to back; `custody verify` giving the verdict the trial
predicts. `make test` runs the short form (`tests/faults/`).

| fault | what is done | trials | survived | sealed segments lost | figures | problems |
|---|---|---|---|---|---|---|
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
