"""Fault-injection trials: each does to the system what the field does to it,
then checks the invariants everything rests on.

A trial runs the real recorder agent under ``custody sim`` (a separate process,
simulated camera and microphone; for a power loss with its store behind
``tests/fuselayer.py``), injects its fault, and judges the result from
outside: the device's ledger, its media and ``custody verify --json``. It
returns a :class:`TrialResult`; ``tests/faults/`` runs the short form of each
kind, ``benchmarks/faults.py --full`` the long form (docs/reliability.md). The
dock's side is ``dock_trials.py`` and ``broker_trials.py``, judged by
``invariants.py``.

The invariants, checked after every trial where they apply:

- no sealed segment is lost: every ``segment`` entry's media file is there and
  verifies (no ``missing_media`` / hash finding);
- every cut appears as an interruption (``power_loss``, detected at boot);
- ``custody verify`` gives the verdict the trial predicts.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from protocol.entries import Interruption, Segment
from protocol.envelope import parse_line, split_lines

SIM_HEAD = ('[device]\nsegment_seconds = 1\nvideo = "320x180@10"\npre_record_seconds = 0\n'
            'category = "scene"\n')
# Finding kinds that mean sealed evidence is gone or no longer what was sealed.
LOSS_KINDS = {"missing_media", "media_hash_mismatch", "media_size_mismatch", "truncated_media"}


@dataclass
class TrialResult:
    """One kind of fault trial, run ``trials`` times, and every invariant a trial broke.

    What is counted is trials: a problem is recorded with :meth:`fail` against
    the trial it belongs to, so a trial that broke two invariants is one trial
    failed. A problem of the whole run (``fail(None, ...)``: the sim did not
    run, the store did not verify before the first fault, a check over every
    trial at once) leaves no trial of the run counted as survived; so does a
    problem appended to ``problems`` directly, which names no trial.
    """

    kind: str
    trials: int
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # sealed segments lost
    undelivered: int = 0  # attestations made and never delivered to a subscriber
    figures: dict[str, float | int] = field(default_factory=dict)
    faults_per_trial: int = 1  # clock_step: a step forward and one back
    failed: set[int] = field(default_factory=set)  # trials (0-based) that broke an invariant
    run_failed: bool = False
    _attributed: int = field(default=0, repr=False)

    def fail(self, trial: int | None, problem: str) -> None:
        """Trial ``trial`` (0-based; None: the whole run) broke an invariant."""
        self.problems.append(problem)
        self._attributed += 1
        if trial is None or not 0 <= trial < self.trials:
            self.run_failed = True
        else:
            self.failed.add(trial)

    @property
    def survived(self) -> int:
        if self.run_failed or len(self.problems) > self._attributed:
            return 0
        return self.trials - len(self.failed)

    @property
    def faults(self) -> int:
        return self.trials * self.faults_per_trial

    @property
    def faults_survived(self) -> int:
        return self.survived * self.faults_per_trial

    def as_json(self) -> dict:
        return {"kind": self.kind, "trials": self.trials, "survived": self.survived,
                "faults": self.faults, "faults_survived": self.faults_survived,
                "lost": self.lost, "undelivered": self.undelivered,
                "problems": self.problems, **self.figures}


# --- running the device -------------------------------------------------------------

def custody(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def scenario_text(steps: Iterable[tuple[float, str, dict]]) -> str:
    lines = [SIM_HEAD]
    for at, do, params in steps:
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items())
        lines.append(f'\n[[at]]\nt = {at:.3f}\ndo = "{do}"\n{extra}')
    return "".join(lines)


def run_sim(work: Path, steps: list[tuple[float, str, dict]]) -> Path:
    """Run a scenario; the sim's output folder (device store in ``out/device``)."""
    (work / "trial.toml").write_text(scenario_text(steps))
    out = work / "out"
    r = custody("sim", work / "trial.toml", "--out", out)
    if r.returncode != 0:
        log = out / "recorder.log"
        raise RuntimeError(r.stdout + r.stderr + (log.read_text()[-3000:] if log.exists() else ""))
    return out


def verify(store: Path) -> tuple[int, dict]:
    r = custody("verify", store, "--json", "--trust", store.parent / "keys" / "trust.json")
    if not r.stdout:
        raise RuntimeError(f"custody verify {store}: {r.stderr}")
    report = json.loads(r.stdout)
    return r.returncode, report[0] if isinstance(report, list) else report


def entries(store: Path) -> list:
    return [parse_line(line).entry for line in split_lines((store / "ledger.jsonl").read_bytes())]


def errors(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["severity"] == "error"]


def sealed_lost(report: dict) -> int:
    return sum(f["kind"] in LOSS_KINDS for f in report["findings"])


# --- the trials ---------------------------------------------------------------------

def cut_steps(trials: int, seed: int) -> list[tuple[float, str, dict]]:
    """A recording cut ``trials`` times at random instants 0.6–2.2 s after each press,
    power back 0.2 s later, the recording pressed on 0.8 s after that."""
    rng = random.Random(seed)
    steps, t = [], 0.0
    for _ in range(trials):
        steps.append((t, "press_record", {}))
        t += rng.uniform(0.6, 2.2)
        steps.append((t, "power_cut", {}))
        t += 0.2
        steps.append((t, "power_restore", {}))
        t += 0.8
    steps.append((t, "end", {}))
    return steps


def judge_cuts(result: TrialResult, out: Path, statuses: list[dict]) -> list[float]:
    """Every cut declared at the next boot, and what each cut lost (≤ 1 s: one fragment).

    A cut's capture is found by time, not by span number: on a loaded machine a
    slow simulated camera may add a declared ``camera_fault`` span of its own.
    The loss is the kill instant minus the last capture kept between the press
    before it and the kill; with nothing kept, minus the press — or minus the
    span's first frame, when the recorder's status just before the cut
    (``statuses``) says when that came: what came before the first frame was
    never captured, so it cannot be lost. The status says it of its latest
    press: ``press_to_frame_ms`` once the first frame came, else None and
    ``since_press_ms``: no frame yet that long after the press, so the first
    came (if at all) between the status and the kill. After a restart the
    camera (its own process) delivers its first frame a while after the
    recorder is in standby, and on a loaded machine the cut often comes before
    it: such a cut is judged from that bound, not from the press."""
    sim = json.loads((out / "sim.json").read_text())
    epoch, steps = sim["epoch_unix_ns"], sim["steps"]
    ledger = entries(out / "device")
    kept_ns = [e.body.last_capture_utc_ns for e in ledger if isinstance(e.body, Segment)]
    losses, captured, from_frame, before_frame = [], [], 0, 0
    cuts = [i for i, s in enumerate(steps) if s["do"] == "power_cut"]
    for n, i in enumerate(cuts):
        press = next(s for s in reversed(steps[:i]) if s["do"] == "press_record")
        status = statuses[n] if n < len(statuses) else {}
        # The kill comes once the status is answered, that long after the step ran.
        press_ns = epoch + int(press["ran_at"] * 1e9)
        kill_ns = epoch + int((steps[i]["ran_at"] + status.get("status_call_s", 0)) * 1e9)
        boot = f"sim-boot-{n + 2}"  # the boot after cut n
        if not any(isinstance(e.body, Interruption) and e.time.boot_id == boot
                   and e.body.reason == "power_loss" for e in ledger):
            result.fail(n, f"cut {n}: no power_loss interruption at {boot}")
        kept = [k for k in kept_ns if press_ns <= k <= kill_ns]
        loss = (kill_ns - (max(kept) if kept else press_ns)) / 1e9
        to_frame, since_press = status.get("press_to_frame_ms"), status.get("since_press_ms")
        pressed_s = (kill_ns - press_ns) / 1e9  # the press step ran before the recorder's press
        if since_press is None:  # (each cut kills the process: a status is of its one press)
            since_frame = loss  # no status of this press: counted from the press
            if not press.get("ignored"):  # it was pressed: the recorder must say
                result.fail(n, f"cut {n}: the recorder's status just before it "
                               f"does not say when the press's first frame came")
        elif to_frame is not None:
            from_frame += 1
            since_frame = min(loss, pressed_s - to_frame / 1000)
        else:  # no frame yet when asked: whatever came, came after
            from_frame += 1
            before_frame += 1
            since_frame = min(loss, max(0.0, pressed_s - since_press / 1000))
        if since_frame > 1.0:
            result.fail(n, f"cut {n}: lost {since_frame:.3f} s of capture")
        losses.append(loss)
        captured.append(since_frame)
    if len(cuts) != result.trials:
        result.fail(None, f"{len(cuts)} cuts ran of {result.trials}")
    result.figures.update(max_loss_since_press_s=round(max(losses, default=0), 3),
                          max_loss_s=round(max(captured, default=0), 3),
                          cuts_judged_from_first_frame=from_frame,
                          cuts_before_first_frame=before_frame)
    return losses


def judge_verify(result: TrialResult, store: Path, expected_exit: int = 3) -> None:
    """``custody verify`` of the store: no error finding, the predicted exit code."""
    code, report = verify(store)
    result.lost += sealed_lost(report)
    if errors(report) or code != expected_exit:
        result.fail(None, f"verify exit {code}, errors {[f['kind'] for f in errors(report)]}")


class PacedSteps:
    """For a runner of ``custody sim``: each step keeps its gap to the one before.

    The sim runs its steps at their times from t = 0; a restart slower than
    its 1 s (a loaded machine: 3-4 s) makes every later step late, and the
    press and the cut after it then run back to back, ~0.1 s apart, always
    before the camera's first frame: not the cut "0.6-2.2 s after the press"
    the trial means. Here a late step shifts the ones after it. The cuts are
    judged from the times the steps ran (``sim.json``), as before."""

    def run_steps(self, start: float) -> int:
        exit_code, late = 0, 0.0
        for step in self.steps:
            delay = start + late + step.t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late -= delay
            entry = {"step": step.number, "t": step.t, "do": step.action,
                     "ran_at": round(time.monotonic() - start, 3), **dict(step.params)}
            exit_code = self.do(step, entry)
            self.log.append(entry)
        return exit_code


def _status_runner():
    """``custody sim``'s runner, paced, asking the recorder its status just before each
    power cut."""
    from device.sim import SimRunner

    class WatchedSimRunner(PacedSteps, SimRunner):
        def __init__(self, *args: object):
            super().__init__(*args)
            self.status_at_cuts: list[dict] = []

        def power_cut(self) -> None:
            asked = time.monotonic()
            try:
                status = self.client.call("status") if self.client is not None else {}
            except Exception:  # noqa: BLE001 - already off, or busy: judged from the press
                status = {}
            self.status_at_cuts.append({**status, "status_call_s": time.monotonic() - asked})
            super().power_cut()

    return WatchedSimRunner


def hard_kills(work: Path, trials: int, seed: int) -> TrialResult:
    """The recorder's whole process group SIGKILLed at random instants mid-recording
    (``power_cut``: nothing gets to seal), power back, the recording resumed.

    Predicted: every cut declared as ``power_loss`` at the next boot, nothing
    sealed lost, no error finding (the cuts are unexplained: no voice note), and
    at most one fragment (≤ 1 s) of capture lost per cut."""
    from device.scenario import load_scenario

    (work / "trial.toml").write_text(scenario_text(cut_steps(trials, seed)))
    runner = _status_runner()(load_scenario(work / "trial.toml"), work / "out")
    result = TrialResult("hard_kill", trials)
    if runner.run() != 0:
        result.fail(None, "the sim failed: " + runner.log_path.read_text()[-2000:])
        return result
    judge_cuts(result, work / "out", runner.status_at_cuts)
    judge_verify(result, work / "out" / "device")
    return result


def power_losses(work: Path, trials: int, seed: int) -> TrialResult:
    """Real power loss: as :func:`hard_kills`, but the device store sits behind
    ``tests/fuselayer.py``, so at each cut every write not yet fsynced is
    forgotten (the page cache goes with the power), then the process group dies.

    Predicted as for a hard kill, and besides: every entry and sealed file that
    was durable at some cut is still there, unchanged, at the end."""
    from device.scenario import load_scenario
    from tests.device.powerloss import LayeredSimRunner
    from tests.device.powerloss import sealed_lost as durable_lost

    (work / "trial.toml").write_text(scenario_text(cut_steps(trials, seed)))
    runner = type("PacedLayeredSimRunner", (PacedSteps, LayeredSimRunner), {})(
        load_scenario(work / "trial.toml"), work / "out", work / "backing")
    result = TrialResult("power_loss", trials)
    if runner.run() != 0:
        result.fail(None, "the sim failed: " + runner.log_path.read_text()[-2000:])
        return result
    out = work / "out"
    judge_cuts(result, out, runner.status_at_cuts)
    result.lost = durable_lost(out / "device", runner.at_cuts)
    judge_verify(result, out / "device")
    return result


def storage_full(work: Path) -> TrialResult:
    """The store fills up mid-recording, then space comes back and the officer
    presses record again. Predicted: a ``storage_full`` interruption, nothing
    sealed lost, no error finding, exit 3 (no voice note explains it)."""
    out = run_sim(work, [(0, "press_record", {}), (2.5, "storage_left", {"bytes": 0}),
                         (4.0, "storage_left", {"bytes": 10**11}), (5.0, "press_record", {}),
                         (6.5, "press_record", {}), (7.0, "end", {})])
    store = out / "device"
    result = TrialResult("storage_full", 1)
    reasons = [e.body.reason for e in entries(store) if isinstance(e.body, Interruption)]
    # On a loaded machine the simulated camera may be late and the recorder declare a
    # camera_fault of its own: declared, so no error; counted, so it shows.
    if reasons.count("storage_full") != 1 or set(reasons) - {"storage_full", "camera_fault"}:
        result.fail(0, f"interruptions {reasons}, expected one storage_full")
    result.figures["camera_faults"] = reasons.count("camera_fault")
    judge_verify(result, store)
    return result


def clock_steps(work: Path, forward_s: float = 3600, back_s: float = -7200) -> TrialResult:
    """The wall clock stepped forward, then back past where it started, during a
    recording that a storage interruption then splits into two spans. Predicted:
    both steps in the ledger as ``time_sync``, nothing sealed lost, no error
    finding (a step of the wall clock is not overlap or a gap), exit 3."""
    out = run_sim(work, [(0, "press_record", {}), (1.5, "clock_jump", {"seconds": forward_s}),
                         (2.5, "clock_jump", {"seconds": back_s}),
                         (3.5, "storage_left", {"bytes": 0}),
                         (5.0, "storage_left", {"bytes": 10**11}), (6.0, "press_record", {}),
                         (7.5, "press_record", {}), (8.0, "end", {})])
    store = out / "device"
    result = TrialResult("clock_step", 1, faults_per_trial=2)
    steps = [e for e in entries(store) if e.kind == "time_sync"]
    if len(steps) != 2:
        result.fail(0, f"{len(steps)} time_sync entries, expected 2")
    judge_verify(result, store)
    return result


def clean_store(work: Path) -> Path:
    """A short, clean shift (two recordings) to damage."""
    return run_sim(work, [(0, "press_record", {}), (2.5, "press_marker", {}),
                          (3.0, "press_record", {}), (4.5, "press_record", {}),
                          (6.0, "press_record", {}), (6.5, "end", {})]) / "device"


def bit_flips(work: Path, store: Path, trials: int, seed: int) -> TrialResult:
    """One bit flipped at random in a media file or in a ledger line (never a line's
    newline: a torn last line is its own finding), on a copy of a clean store.
    Predicted: verify says ``broken`` (exit 1) with an error finding whose
    ``file`` is the file flipped (``media/<name>`` or ``ledger.jsonl``)."""
    rng = random.Random(seed)
    result = TrialResult("bit_flip", trials)
    base_code, base = verify(store)
    # Exit 3: a camera_fault a loaded machine made the recorder declare; still no error.
    if base_code not in (0, 3) or errors(base):
        result.fail(None, f"the clean store does not verify intact (exit {base_code})")
        return result
    media = sorted((store / "media").iterdir())
    for i in range(trials):
        copy = work / f"flip-{i}" / "device"
        shutil.copytree(store, copy)
        shutil.copytree(store.parent / "keys", copy.parent / "keys")
        target = copy / "ledger.jsonl" if i % 2 else copy / "media" / rng.choice(media).name
        at = flip_a_bit(target, rng)
        code, report = verify(copy)
        flipped = target.relative_to(copy).as_posix()
        named = [f.get("file") for f in errors(report)]
        if code != 1 or report["verdict"] != "broken" or flipped not in named:
            result.fail(i, f"flip in {flipped} at byte {at}: exit {code}, "
                           f"verdict {report['verdict']}, errors name {named}")
        shutil.rmtree(copy.parent)
    return result


def flip_a_bit(target: Path, rng: random.Random) -> int:
    """Flip one random bit of ``target``, never in a line break (a ledger keeps its
    lines); the byte's offset is returned."""
    data = bytearray(target.read_bytes())
    at = rng.randrange(len(data))
    while data[at] == 0x0A:
        at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    target.write_bytes(bytes(data))
    return at
