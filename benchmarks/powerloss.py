"""Benchmark: real power loss — the page cache lost at the cut, not only the process.

    .venv/bin/python benchmarks/powerloss.py [--trials 20] [--seed 1] [--keep DIR]

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

and, from powercut.py's measure: the mean and each loss, recovered segments,
spans that kept nothing, ``custody verify``'s exit code and error count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the layer lives in the test tree
sys.path.insert(0, str(REPO / "benchmarks"))

from powercut import measure, scenario  # noqa: E402

from device.scenario import load_scenario  # noqa: E402
from tests.device.powerloss import LayeredSimRunner, sealed_lost  # noqa: E402

GOALS = {"max_loss_s": 0.5, "sealed_lost": 0, "declared_share": 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="leave the sim's output here (a new folder)")
    args = parser.parse_args()

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
        result = measure(out, args.trials)
        result = {"max_loss_s": result.pop("max_loss_s"),
                  "sealed_lost": sealed_lost(out / "device", runner.at_cuts),
                  "declared_share": result.pop("detected_share"), **result}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["goals"] = GOALS
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
