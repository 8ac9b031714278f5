"""Benchmark: real power loss — the page cache lost at the cut, not only the process.

    .venv/bin/python benchmarks/powerloss.py [--trials 20] [--seed 1] [--keep DIR]
                                             [--restore-to-press 0.8]

As ``benchmarks/powercut.py`` (the same scenario: one recording cut
``--trials`` times at random instants 0.6–2.2 s after each record press,
restored 0.2 s later, resumed as a new span), but the device store sits behind
``tests/fuselayer.py``: at each cut every write not yet fsynced is forgotten
before the recorder's process group is killed, as a power cut does. Needs
fuse3 and /dev/fuse (``make setup``; root).

Keys (the last line is JSON):

- ``max_loss_s``: the largest loss over the cuts — the kill instant minus the
  last capture kept of that span (goal <= 0.5);
- ``sealed_lost``: ledger entries and sealed media that were durable at some
  cut and are gone or changed at the end (goal 0);
- ``declared_share``: the share of cuts the next boot declared as a
  ``power_loss`` interruption (goal 1.0);

and: the loss counted from each span's first frame and the cuts that came
before it (see :func:`losses`), the mean and each loss, recovered segments,
``custody verify``'s exit code and error count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the layer lives in the test tree
sys.path.insert(0, str(REPO / "benchmarks"))

import powercut  # noqa: E402
from powercut import scenario  # noqa: E402

from device.scenario import load_scenario  # noqa: E402
from protocol.entries import Interruption, Segment  # noqa: E402
from protocol.envelope import parse_line, split_lines  # noqa: E402
from protocol.store_reader import LEDGER_NAME  # noqa: E402
from tests.device.powerloss import LayeredSimRunner, sealed_lost  # noqa: E402

GOALS = {"max_loss_s": 0.5, "sealed_lost": 0, "declared_share": 1.0}


def losses(out: Path, statuses: list[dict]) -> dict:
    """Per cut, from the sim's log and the ledger: the loss, and whether it was declared.

    As powercut.py's measure, but a cut's media is found by time, not by span
    number (a camera fault on a loaded machine adds spans of its own): the
    loss is the kill instant minus the last capture kept between the press
    before it and the kill; with nothing kept, minus the press. Counted from
    the span's first frame instead (``since_first_frame``), a span cut before
    any frame reached the muxer (the recorder's ``press_to_frame_ms`` was still
    unset) loses 0, and is counted in ``cuts_before_first_frame``.
    """
    sim = json.loads((out / "sim.json").read_text())
    epoch = sim["epoch_unix_ns"]
    steps = sim["steps"]
    entries = [parse_line(line).entry
               for line in split_lines((out / "device" / LEDGER_NAME).read_bytes())]
    kept_ns = [e.body.last_capture_utc_ns for e in entries if isinstance(e.body, Segment)]
    cuts = [i for i, s in enumerate(steps) if s["do"] == "power_cut"]
    result, since_frame, before_first, declared = [], [], 0, 0
    for n, i in enumerate(cuts):
        press = next(s for s in reversed(steps[:i]) if s["do"] == "press_record")
        press_ns = epoch + int(press["ran_at"] * 1e9)
        kill_ns = epoch + int(steps[i]["ran_at"] * 1e9)
        kept = [k for k in kept_ns if press_ns <= k <= kill_ns]  # no pre-record: after it
        loss = (kill_ns - (max(kept) if kept else press_ns)) / 1e9
        result.append(loss)
        to_frame = (statuses[n] if n < len(statuses) else {}).get("press_to_frame_ms")
        if to_frame is None:
            before_first += 1
            since_frame.append(0.0)
        else:
            since_frame.append(min(loss, (kill_ns - press_ns) / 1e9 - to_frame / 1000))
        declared += any(isinstance(e.body, Interruption) and e.body.reason == "power_loss"
                        and e.body.detected_by == "boot_recovery"
                        and e.time.boot_id == f"sim-boot-{n + 2}" for e in entries)
    return {"max_loss_s": round(max(result), 3), "declared_share": round(declared / len(cuts), 3),
            "max_loss_since_first_frame_s": round(max(since_frame), 3),
            "cuts_before_first_frame": before_first,
            "mean_loss_s": round(sum(result) / len(result), 3),
            "recovered_segments": sum(isinstance(e.body, Segment) and e.body.recovered
                                      for e in entries),
            "losses_s": [round(x, 3) for x in result]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="leave the sim's output here (a new folder)")
    parser.add_argument("--restore-to-press", type=float, default=powercut.RESTORE_TO_PRESS_S,
                        help="seconds from power_restore to the next press (default as "
                        "powercut.py; more lets a slow camera start on a loaded machine)")
    args = parser.parse_args()
    powercut.RESTORE_TO_PRESS_S = args.restore_to_press

    work = Path(tempfile.mkdtemp(prefix="custody-powerloss-"))
    out = args.keep or work / "out"
    started = time.monotonic()
    try:
        (work / "powerloss.toml").write_text(
            scenario(args.trials, np.random.default_rng(args.seed)))
        runner = LayeredSimRunner(load_scenario(work / "powerloss.toml"), out,
                                  work / "backing")
        if runner.run() != 0:
            print(runner.log_path.read_text()[-3000:], file=sys.stderr)
            return 1
        measured = losses(out, runner.status_at_cuts)
        verify = subprocess.run([sys.executable, "-m", "custody_cli", "verify", "--json",
                                 str(out / "device")], capture_output=True, text=True)
        findings = json.loads(verify.stdout)["findings"] if verify.stdout else []
        result = {"max_loss_s": measured.pop("max_loss_s"),
                  "sealed_lost": sealed_lost(out / "device", runner.at_cuts),
                  "declared_share": measured.pop("declared_share"), **measured,
                  "trials": args.trials, "verify_exit": verify.returncode,
                  "verify_errors": sum(f["severity"] == "error" for f in findings)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["restore_to_press_s"] = args.restore_to_press
    result["goals"] = GOALS
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
