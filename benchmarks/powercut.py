"""Benchmark: what a hard power cut loses, and whether every cut is declared.

    .venv/bin/python benchmarks/powercut.py [--trials 20] [--seed 1] [--keep DIR]

``custody sim`` runs the real recorder agent (``custody recorder``, simulated
camera and microphone, 320x180@10, 1 s segments, no pre-record) through one
recording that is cut ``--trials`` times: a ``power_cut`` (SIGKILL of the
agent's whole process group: nothing gets to seal) at a random instant 0.6 to
2.2 s after the record press, ``power_restore`` 0.2 s later (a new boot id: the
agent's start-up recovery runs), and a record press that resumes the
interrupted recording as a new span 0.8 s after that.

Per cut *i*, from the sim's log (``sim.json``) and the device's ledger:

- the **kill instant**: when the sim ran the ``power_cut`` step (its epoch +
  ``ran_at``; the SIGKILL follows within a millisecond);
- the **loss**: kill instant minus the capture time of the last frame kept of
  span *i* (the largest ``last_capture_utc_ns`` of its ``segment`` entries,
  sealed or ``recovered``). A span with no segment at all lost everything since
  its press: the loss is then kill instant minus the press. Goal: at most one
  fragment, ``max_loss_s`` <= 1.0;
- **detected**: the boot after the cut appended an ``interruption`` of this
  recording with reason ``power_loss`` (``detected_by: boot_recovery``). Goal:
  ``detected_share`` 1.0.

Also reported: the mean loss and each loss, how many segments were sealed
``recovered``, how many spans kept nothing, and ``custody verify`` on the
result: its exit code (3 is expected: the cuts are declared but no voice note
explains them), its errors, and ``unsealed_media`` (files in ``media/`` that
no entry seals: a cut between sealing a segment and appending its entry that
recovery could not repair). The last line is JSON. Takes about 50 s for 20
trials.
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

from protocol.entries import Interruption, Segment
from protocol.envelope import parse_line, split_lines

PRESS_TO_CUT_S = (0.6, 2.2)  # a recording span lasts this long before its cut
CUT_TO_RESTORE_S = 0.2
RESTORE_TO_PRESS_S = 0.8  # the agent boots in about 0.6 s; the press waits for it anyway


def scenario(trials: int, rng: np.random.Generator) -> str:
    """The TOML scenario: one recording, cut and resumed ``trials`` times."""
    steps, t = [], 0.0
    for _ in range(trials):
        steps.append((t, "press_record"))
        t += float(rng.uniform(*PRESS_TO_CUT_S))
        steps.append((t, "power_cut"))
        t += CUT_TO_RESTORE_S
        steps.append((t, "power_restore"))
        t += RESTORE_TO_PRESS_S
    steps.append((t, "end"))
    head = ('[device]\nsegment_seconds = 1\nvideo = "320x180@10"\npre_record_seconds = 0\n'
            'category = "scene"\n')
    return head + "".join(f'\n[[at]]\nt = {at:.3f}\ndo = "{do}"\n' for at, do in steps)


def measure(out: Path, trials: int) -> dict:
    sim = json.loads((out / "sim.json").read_text())
    epoch_ns = sim["epoch_unix_ns"]
    steps = sim["steps"]
    presses = [epoch_ns + int(s["ran_at"] * 1e9) for s in steps if s["do"] == "press_record"]
    kills = [epoch_ns + int(s["ran_at"] * 1e9) for s in steps if s["do"] == "power_cut"]
    entries = [parse_line(line).entry
               for line in split_lines((out / "device" / "ledger.jsonl").read_bytes())]
    recordings = {e.body.recording for e in entries if isinstance(e.body, Segment)}
    if len(recordings) != 1:
        raise SystemExit(f"expected one recording, the ledger has {sorted(recordings)}")
    [recording] = recordings

    losses, detected, crash_reports, empty_spans = [], 0, 0, 0
    for i, kill_ns in enumerate(kills):
        kept = [e.body.last_capture_utc_ns for e in entries
                if isinstance(e.body, Segment) and e.body.span == i]
        if kept:
            losses.append((kill_ns - max(kept)) / 1e9)
        else:
            empty_spans += 1
            losses.append((kill_ns - presses[i]) / 1e9)
        # The boot after cut i is the sim's power-on i + 2.
        declared = [e.body for e in entries
                    if isinstance(e.body, Interruption) and e.time.boot_id == f"sim-boot-{i + 2}"
                    and e.body.recording == recording and e.body.detected_by == "boot_recovery"]
        detected += any(d.reason == "power_loss" for d in declared)
        crash_reports += any(d.reason == "crash" for d in declared)
    verify = subprocess.run([sys.executable, "-m", "custody_cli", "verify", "--json",
                             str(out / "device")], capture_output=True, text=True)
    findings = json.loads(verify.stdout)["findings"] if verify.stdout else []
    return {
        "max_loss_s": round(max(losses), 3),
        "mean_loss_s": round(float(np.mean(losses)), 3),
        "detected_share": round(detected / trials, 3),
        "trials": trials,
        "cuts_run": len(kills),
        "reported_as_crash": crash_reports,
        "recovered_segments": sum(isinstance(e.body, Segment) and e.body.recovered
                                  for e in entries),
        "spans_without_segment": empty_spans,
        "verify_exit": verify.returncode,
        # Sealed files with no entry: a cut between sealing and the segment entry.
        "unsealed_media": sum(f["kind"] == "unsealed_media" for f in findings),
        "verify_errors": sum(f["severity"] == "error" for f in findings),
        "losses_s": [round(loss, 3) for loss in losses],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="leave the sim's output here (a new folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="custody-powercut-"))
    out = args.keep or work / "out"
    started = time.monotonic()
    try:
        (work / "powercut.toml").write_text(scenario(args.trials, np.random.default_rng(args.seed)))
        run = subprocess.run([sys.executable, "-m", "custody_cli", "sim",
                              str(work / "powercut.toml"), "--out", str(out)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            log = out / "recorder.log"
            print(run.stdout + run.stderr + (log.read_text()[-3000:] if log.exists() else ""),
                  file=sys.stderr)
            return 1
        result = measure(out, args.trials)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
