"""``custody demo --out DIR``: the whole shift of two officers on one machine, narrated.

Runs a scenario of several devices (default ``docs/examples/two-device-shift.toml``)
exactly as ``custody sim`` does — a recorder process per device, the run's own
Mosquitto (TLS, ACLs), one real dock attesting each offload — printing each
step as it happens and, every few seconds, what each device is doing. Then:

- indexes the archive for the custodian (if the dock has not) and adds a
  web-view user, whose password it leaves in ``DIR/keys/custodian-password``;
- prints the attestations received over MQTT as a table, each checked again
  against the trust file;
- prints ``custody verify DIR/archive`` (the cosigned checkpoints included);
- says where the files are and what to try next, first the custodian's web view.

Everything it starts is stopped before it ends. Exit 0 when the shift ran and
the archive verifies (intact, or intact with unexplained interruptions), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.checkpoint_keeper import CHECKPOINT_NAME
from device.config import ConfigError
from device.control import ControlClient, ControlError
from device.scenario import ACTIONS, Scenario, ScenarioError, load_scenario
from device.sim import stop_on_sigterm
from device.sim_shift import ShiftRunner
from device.sim_unit import ATTESTATIONS, SimError
from protocol.archive_log import open_device_checkpoint
from protocol.attestation import Attestation, check_attestation
from protocol.checkpoint import CheckpointError
from protocol.store_reader import TRUST_NAME, read_trust

SCENARIO = Path(__file__).resolve().parents[1] / "docs" / "examples" / "two-device-shift.toml"
CUSTODIAN = "custodian"
PASSWORD_FILE = "custodian-password"
STATUS_EVERY_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the results")
    parser.add_argument("--scenario", type=Path, default=SCENARIO,
                        help="a scenario of several devices (default: the two-device shift)")


def say(text: str = "") -> None:
    print(text, flush=True)


def custody(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "custody_cli", *map(str, args)],
                          input=stdin, capture_output=True, text=True, timeout=300)


# --- the shift, narrated ---------------------------------------------------------------------

def _step_line(scenario: Scenario, entry: dict[str, Any]) -> str:
    step = scenario.steps[entry["step"] - 1]
    params = " ".join(f"{k}={v}" for k, v in step.params.items())
    what = f"{step.action} {params}".strip()
    line = f"  [{entry['ran_at']:5.1f} s] {step.device or 'all':<6} {what:<27} " \
           f"{step.note or ACTIONS[step.action].meaning}"
    if "ignored" in entry:
        line += f"  (ignored: {entry['ignored']})"
    if "warning" in entry:
        line += f"  (warning: {entry['warning']})"
    return line


def _device_status(client: ControlClient) -> str:
    try:
        status = client.call("status")
    except (ControlError, OSError):
        return "off"
    words = [str(status.get("state", "?"))]
    if status.get("voice_note"):
        words.append("voice note")
    offload = status.get("offload") or {}
    if status.get("docked"):
        words.append(f"docked: offload {offload.get('state', '?')} "
                     f"{offload.get('files_done', 0)}/{offload.get('files_total', 0)} files")
    return ", ".join(words)


def run_shift(runner: ShiftRunner) -> int:
    """Run the shift in a thread; narrate from this one."""
    scenario, result = runner.scenario, {}

    def shift() -> None:
        try:
            result["code"] = runner.run()
        except BaseException as e:  # noqa: BLE001 — reported below, in the main thread
            result["error"] = e

    thread = threading.Thread(target=shift, name="shift")
    thread.start()
    clients = {name: ControlClient(r.config.control_socket, timeout=2)
               for name, r in runner.devices.items()}
    shown: dict[str, int] = dict.fromkeys(runner.devices, 0)
    next_status = time.monotonic() + STATUS_EVERY_S
    try:
        while thread.is_alive():
            thread.join(0.2)
            for name, r in runner.devices.items():
                for entry in r.log[shown[name]:]:
                    if entry["do"] != "end" or name == next(iter(runner.devices)):
                        say(_step_line(scenario, entry))
                shown[name] = len(r.log)
            if runner.epoch_unix_ns and time.monotonic() >= next_status and thread.is_alive():
                next_status = time.monotonic() + STATUS_EVERY_S
                t = (time.time_ns() - runner.epoch_unix_ns) / 1e9
                if t <= scenario.duration:
                    states = "; ".join(f"{n} {_device_status(c)}" for n, c in clients.items())
                    say(f"  [{t:5.1f} s of {scenario.duration:.0f}] {states}")
                else:
                    say(f"  [{t:5.1f} s] the shift is over: last offloads finishing, "
                        "waiting for their attestations")
    finally:
        for client in clients.values():
            client.close()
    if "error" in result:
        raise result["error"]
    return result["code"]


# --- the summing up --------------------------------------------------------------------------

def attestation_table(out: Path) -> tuple[str, list[Attestation]]:
    """The attestations received, each checked again against the trust file, as a table."""
    trust = read_trust(out / "keys" / TRUST_NAME)
    received = json.loads((out / ATTESTATIONS).read_text())
    checked: list[Attestation] = []
    rows = [["DEVICE", "OFFICER", "ENTRIES", "RECORDINGS", "GAPS (EXPLAINED)", "EXEMPTIONS",
             "MARKERS", "CLOCK", "VERDICT", "SIGNED BY"]]
    items = sorted(received["attestations"], key=lambda i: (i["attestation"]["device"],
                                                             i["attestation"]["first_seq"]))
    for item in items:
        check = check_attestation(item["envelope"], trust)
        att = check.attestation
        if att is None:
            rows.append(["?", "", "", "", "", "", "", "", f"REFUSED: {check.problem}", ""])
            continue
        checked.append(att)
        offset = "-" if att.clock_offset_ns is None else f"{att.clock_offset_ns / 1e9:+.2f} s"
        rows.append([
            att.device, ",".join(att.officers), f"{att.first_seq}-{att.last_seq}",
            f"{len(att.recordings)} ({sum(r.duration_s for r in att.recordings):.0f} s)",
            f"{len(att.gaps)} ({sum(g.explained for g in att.gaps)})",
            ",".join(e.reason for e in att.exemptions) or "-",
            str(len(att.markers)), offset, att.verdict, att.dock])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for topic_why in received.get("refused", []):
        lines.append(f"  refused on {topic_why['topic']}: {topic_why['why']}")
    latest: dict[str, Attestation] = {}
    for att in checked:  # the newest range of each device sums up its shift
        if att.device not in latest or att.last_seq > latest[att.device].last_seq:
            latest[att.device] = att
    lines.append("  latest per device: " + "; ".join(
        f"{d} {a.verdict} through entry {a.last_seq}" for d, a in sorted(latest.items())))
    alerts = received.get("alerts", [])
    lines.append(f"  alerts: {', '.join(a['alert'] for a in alerts) if alerts else 'none'}")
    return "\n".join(lines), checked


def checkpoint_lines(out: Path, devices: list[str]) -> str:
    """What each device holds of its log: the newest checkpoint the dock signed and the
    device cosigned at docking (docs/archive.md), checked against the trust file."""
    trust = read_trust(out / "keys" / TRUST_NAME)
    lines = []
    for name in devices:
        path = out / "devices" / name / "store" / CHECKPOINT_NAME
        try:
            opened = open_device_checkpoint(path.read_bytes(), trust, name)
        except FileNotFoundError:
            lines.append(f"  {name}: no checkpoint kept (not docked?)")
            continue
        except CheckpointError as e:
            lines.append(f"  {name}: {path}: {e}")
            continue
        witnesses = ", ".join(opened.cosigned_by) or "nobody"
        lines.append(f"  {name}: {opened.checkpoint.size} entries, root "
                     f"{opened.checkpoint.root_hash.hex()[:16]}, signed by the dock, "
                     f"cosigned by {witnesses}; kept in {path.relative_to(out)}")
    return "\n".join(lines)


def index_archive(out: Path) -> None:
    """The custodian's index and checkpoints of what the dock archived, unless the dock
    made them; and a web-view user with a fresh password (a demo only writes it down)."""
    archive = out / "archive"
    if not (archive / "index.sqlite").exists():
        r = custody("archive", "ingest", "--archive", archive, "--as", "demo",
                    "--key", out / "keys" / "archive-signing.key")
        say("  " + (r.stdout.strip() or r.stderr.strip()).replace("\n", "\n  "))
    password = secrets.token_urlsafe(12)
    r = custody("archive", "user", CUSTODIAN, "--role", "custodian", "--archive", archive,
                stdin=password + "\n")
    if r.returncode != 0:
        raise SimError(f"custody archive user: {r.stderr.strip()}")
    fd = os.open(out / "keys" / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    say(f"  web-view user {CUSTODIAN!r} (role custodian); password in "
        f"{out / 'keys' / PASSWORD_FILE}")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        scenario = load_scenario(args.scenario)
        if not scenario.devices:
            raise ScenarioError("", "the demo runs a scenario of several devices "
                                "([devices.NAME] tables)", str(args.scenario))
        runner = ShiftRunner(scenario, args.out)
    except (ScenarioError, ConfigError, SimError) as e:
        print(f"custody demo: {e}", file=sys.stderr)
        return 2
    out = runner.out
    devices = ", ".join(f"{n} (officer {d.officer})" for n, d in scenario.devices.items())
    say(f"== a shift of {len(scenario.devices)} devices: {devices}")
    say(f"   {scenario.duration:.0f} s in real time on simulated hardware; each device its own "
        "recorder process; one dock; a Mosquitto on loopback (TLS, ACLs)")
    stop_on_sigterm()
    try:
        code = run_shift(runner)
    except (SimError, ControlError) as e:
        print(f"custody demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("custody demo: stopped; everything it started is stopped", file=sys.stderr)
        return 130
    warnings = json.loads((out / "sim.json").read_text())["warnings"]
    for warning in warnings:
        say(f"  warning: {warning}")
    if code != 0:
        print(f"custody demo: the shift ended with {code}; see {out}", file=sys.stderr)
        return 1

    say("\n== the custodian's archive")
    index_archive(out)

    table, checked = attestation_table(out)
    say(f"\n== attestations received over MQTT ({len(checked)}, each signature checked "
        "against keys/trust.json)")
    say(table)

    say("\n== the cosigned checkpoints: neither the dock nor a device can rewrite a log alone")
    say(checkpoint_lines(out, list(scenario.devices)))

    say(f"\n== custody verify {out / 'archive'}")
    verify = custody("verify", out / "archive")
    say(verify.stdout.rstrip() or verify.stderr.rstrip())

    say(f"\n== the files, in {out}")
    for name, what in (
            ("devices/NAME/store/", "each device's store (ledger.jsonl, media/)"),
            ("devices/NAME/", "each recorder's settings, logs, console.log"),
            ("archive/", "the dock's write-once archive: a copy of each store, index, "
                         "checkpoints, audit log"),
            ("attestations.json", "the attestations as received, with their signed envelopes"),
            ("sim.json", "when each step ran; each device's final status"),
            ("dock.log, mosquitto.log", "the dock's and the broker's logs"),
            ("keys/", "the demo unit: trust.json, keys, TLS certificates, passwords")):
        say(f"  {name:<24} {what}")

    web = (f"custody archive web --archive {out / 'archive'} --key "
           f"{out / 'keys' / 'archive-secret.key'}")
    say("\n== what to try next")
    say("  the custodian's web view of the demo archive (then open http://127.0.0.1:8480/ and "
        f"log in as {CUSTODIAN!r}, password in {out / 'keys' / PASSWORD_FILE}):")
    say(f"    .venv/bin/{web}")
    first = next(iter(scenario.devices))
    say("  search the archive:   .venv/bin/custody archive search --archive "
        f"{out / 'archive'} --as {CUSTODIAN}")
    say(f"  verify one device:    .venv/bin/custody verify {out / 'devices' / first / 'store'}")
    say(f"  by hand (openssl):    docs/verify-by-hand.sh {out / 'devices' / first / 'store'} "
        f"{out / 'keys' / TRUST_NAME}")
    say("  your own shift:       .venv/bin/custody sim SCENARIO.toml --out DIR  "
        "(docs/scenarios.md)")
    say(f"\ndemo done in {time.monotonic() - started:.0f} s")
    broken = verify.returncode not in (0, 3) or len(checked) < len(scenario.devices)
    return 1 if broken else 0
