"""The serial maintenance console over a pty pair, against a recorder on simulated hardware.

The recorder runs as ``custody recorder`` in its own process (as under systemd);
each test starts ``custody console --port PTY`` in another and types into the
technician's end of the cable, as a person at a terminal would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device.console.simsession import PASSWORD_FILE, RESULT, ConsoleDriver
from device.ledger_state import LedgerState
from device.scenario import parse_scenario
from device.sim import SimRunner
from hardware.sim.serial import SimSerialCable
from protocol.envelope import parse_line, split_lines
from protocol.keys import SigningKey
from protocol.receipt import ArchivedMedia, OffloadReceipt, sign_receipt
from protocol.trust import Holder, TrustedKey, TrustFile
from protocol.trust_update import sign_trust_update
from tests.device.simrun import custody

IDLE_SECONDS = 3
SCENARIO = f"""
[device]
segment_seconds = 2
video = "320x180@10"
pre_record_seconds = 0
console_idle_seconds = {IDLE_SECONDS}
[[at]]
t = 0
do = "end"
"""


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> Iterator[SimRunner]:
    """A recorder on simulated hardware, in standby, provisioned with technician ``tech``."""
    runner = SimRunner(parse_scenario(SCENARIO), tmp_path_factory.mktemp("console") / "out")
    runner.power_on()
    try:
        runner.wait_for("booting")
        runner.epoch_unix_ns = time.time_ns()
        assert runner.client is not None
        runner.client.call("sim_begin", epoch_unix_ns=runner.epoch_unix_ns)
        runner.config = replace(runner.config, sim_epoch_unix_ns=runner.epoch_unix_ns)
        runner.wait_for("standby")
        yield runner
    finally:
        if runner.proc is not None and runner.proc.poll() is None:
            runner.proc.send_signal(signal.SIGTERM)
            try:
                runner.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(runner.proc.pid, signal.SIGKILL)
        shutil.rmtree(runner._socket_dir, ignore_errors=True)


def password(device: SimRunner) -> str:
    return (device.keys / PASSWORD_FILE).read_text().strip()


@contextmanager
def console(device: SimRunner, config: Path | None = None) -> Iterator[ConsoleDriver]:
    """``custody console`` on a fresh pty pair; the technician's end, driven."""
    with SimSerialCable() as cable:
        proc = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", "console", "--port", cable.device_path,
             "--config", str(config or device.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert device.client is not None
        driver = ConsoleDriver(cable.technician.fd,
                               press=lambda b: device.client.call("press", button=b))
        try:
            yield driver
            assert proc.poll() is None, "the console process ended: " + \
                proc.stderr.read().decode()  # type: ignore[union-attr]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def logged_in(driver: ConsoleDriver, device: SimRunner) -> None:
    assert driver.login("tech", password(device)).strip().startswith(b"OK logged in as tech")


def entries(device: SimRunner) -> list:
    return [parse_line(x).entry for x in split_lines((device.store / "ledger.jsonl").read_bytes())]


def device_log(device: SimRunner) -> str:
    return (device.out / "device.log").read_text()


def assert_verifies(device: SimRunner) -> None:
    """custody verify finds the ledger intact, console actions and all. (Under load the
    simulated camera may start a recording late; the recorder then declares a camera
    fault, whose missing voice note makes the verdict intact_unexplained_gaps, exit 3.
    That is the recorder's to explain, not the console's.)"""
    r = custody("verify", device.store, "--json")
    report = json.loads(r.stdout)
    assert r.returncode in (0, 3) and report["verdict"] != "broken", report["findings"]
    assert not [f for f in report["findings"] if f["severity"] == "error"], report["findings"]
    assert report["console_actions"]


# --- login ----------------------------------------------------------------------------------


def test_banner_login_and_every_login_and_failure_in_the_device_log(device):
    with console(device) as driver:
        banner = driver.expect(b"login: ", 20).decode()
        assert "device DEV-SIM-0001" in banner and "software 0.1.0" in banner
        driver.send("tech\r")
        driver.expect(b"password: ")
        driver.send("not-the-password\r")
        refused = driver.expect(RESULT)
        assert b"not-the-password" not in refused  # the password is not echoed
        assert refused.rstrip().endswith(b"ERR login incorrect")
        logged_in(driver, device)
        out = driver.command("status")
    assert re.search(r"recorder\s+standby", out)
    assert re.search(r"officer\s+PC-SIM-01", out)
    for row in ("battery", "storage", "clock", "not offloaded", "last docking"):
        assert re.search(rf"^{row}\s+\S", out, re.M), row
    assert out.rstrip().endswith("OK")
    log = device_log(device)
    assert "failed login for 'tech'" in log and "login: tech on /dev/pts/" in log
    assert "not-the-password" not in log


def test_lockout_after_three_failures_with_a_growing_delay(device):
    with console(device) as driver:
        for attempt in range(3):
            result = driver.login("tech", f"wrong-{attempt}")
        locked_at = time.monotonic()
        assert result.rstrip().endswith(b"ERR login incorrect; login locked for 5 s")
        # While locked even the right password is not tried: the name is refused at once.
        driver.expect(b"login: ")
        driver.send("tech\r")
        assert b"ERR login locked for" in driver.expect(RESULT)
        while time.monotonic() - locked_at < 5.2:
            time.sleep(0.1)
        result = driver.login("tech", "wrong-again")
        assert result.rstrip().endswith(b"login locked for 10 s")  # doubled
        driver.expect(b"login: ")
        driver.send("tech\r")
        assert b"ERR login locked for" in driver.expect(RESULT)
    assert "locked out for" in device_log(device)


# --- the line ---------------------------------------------------------------------------------


def test_cr_lf_crlf_backspace_and_line_editing(device):
    with console(device) as driver:
        logged_in(driver, device)
        driver.expect(b"> ")
        driver.send("verison\x7f\x7f\x7f\x7fsion\r")  # four DELs erase "ison"
        assert "software  custody" in driver.expect(RESULT).decode()
        for ending in ("\n", "\r\n", "\r"):
            driver.expect(b"> ")
            driver.send(f"version{ending}")
            out = driver.expect(RESULT).decode()
            assert out.rstrip().endswith("OK") and "unknown" not in out
        driver.expect(b"> ")
        driver.send("rubbish\x15ver\x08\x08\x08\x1b[D\x1b[Aversion\r")  # Ctrl-U, BS, arrows
        assert "software  custody" in driver.expect(RESULT).decode()
        driver.expect(b"> ")
        driver.send("stat\x03")  # Ctrl-C abandons the line
        driver.expect(b"^C")
        driver.send("help assign\r")
        assert "usage: assign OFFICER_ID" in driver.expect(RESULT).decode()
        out = driver.command("help")
        assert "selftest" in out and "factory-reset" in out
        assert driver.command("eject").startswith("eject\r\nERR unknown command 'eject'")


def test_long_lines_and_binary_garbage_are_rejected_without_a_crash(device):
    with console(device) as driver:
        logged_in(driver, device)
        out = driver.command("status " + "x" * 300)
        assert "ERR line longer than 200 characters rejected" in out
        driver.expect(b"> ")
        driver.send(b"ver\xff\xfe\x00\x01sion\r")
        assert b"ERR binary input rejected (4 bytes" in driver.expect(RESULT)
        driver.expect(b"> ")
        driver.send(bytes(range(128, 256)) * 40)  # noise that never ends a line
        assert b"ERR binary input rejected (4097 bytes without a line end)" in \
            driver.expect(RESULT)
        assert "software  custody" in driver.command("version")  # still serving
    with console(device) as driver:
        # Every byte there is, line ends and Ctrl-D among them: at worst a logout.
        driver.expect(b"login: ", 20)
        driver.send(bytes(range(256)) * 40)
        time.sleep(1)
        driver.send("\x03\r")
        driver.expect(b"login: ")
        driver.buffer = b""
        driver.send(b"\xc0\xc1\x80garbage\r")  # at the login prompt
        driver.expect(b"login: ", 20)
        driver.send(b"\xc0\xc1\x80garbage\r")
        assert b"ERR binary input rejected" in driver.expect(RESULT)
        logged_in(driver, device)


def test_idle_timeout_logs_the_technician_out(device):
    with console(device) as driver:
        logged_in(driver, device)
        driver.expect(b"> ")
        started = time.monotonic()
        out = driver.expect(b"logged out", IDLE_SECONDS + 5)
        assert b"idle for 3 s: logged out" in out
        assert time.monotonic() - started >= IDLE_SECONDS - 0.2
        driver.expect(b"login: ")
        driver.send("status\r")  # not a command any more: a login name
        driver.expect(b"password: ")
    assert "(idle 3 s)" in device_log(device)


# --- the commands --------------------------------------------------------------------------


def test_selftest_one_line_per_check_with_buttons_pressed_in_time(device):
    with console(device) as driver:
        logged_in(driver, device)
        out = driver.command("selftest", timeout=90)
    for label in ("camera frame", "microphone level", "speaker prompt", "record button",
                  "marker button", "function button", "LEDs/buzzer/vibration", "battery gauge",
                  "RTC", "storage write/read", "keys"):
        assert re.search(rf"^{re.escape(label)}\s+PASS\s+\S", out, re.M), (label, out)
    assert "press the RECORD button within 10 s" in out
    assert out.rstrip().endswith("OK 11 of 11 checks passed")
    assert entries(device)[-1].body.command == "selftest"
    assert entries(device)[-1].body.result == "OK 11 of 11 checks passed"
    # The presses were the technician's: none started a recording.
    assert not any(e.kind == "record_start" for e in entries(device))
    assert not list(device.store.glob(".selftest-*"))


@pytest.mark.slow  # waits out the 10 s a technician has for a press
def test_a_button_not_pressed_fails_its_check_after_10_s(device):
    with console(device) as driver:
        logged_in(driver, device)
        driver.press = lambda b: None if b == "marker" else device.client.call("press", button=b)
        out = driver.command("selftest", timeout=90)
    assert re.search(r"^marker button\s+FAIL\s+no press within 10 s", out, re.M)
    assert out.rstrip().endswith("ERR 10 of 11 checks passed; failed: marker button")
    assert entries(device)[-1].body.result.startswith("ERR 10 of 11")


def test_changes_are_signed_into_the_ledger_and_pass_custody_verify(device):
    before = len(entries(device))
    with console(device) as driver:
        logged_in(driver, device)
        assert "OK assigned to PC-0099 (was PC-SIM-01)" in driver.command("assign PC-0099")
        out = driver.command("clock set 2031-05-06T07:08:09+08:00")
        assert "OK clock set from" in out and "to 2031-05-05T23:08:09Z" in out
        clock = driver.command("clock")
        assert "source  technician" in clock and "synced  no" in clock
        assert "ERR" in driver.command("clock set yesterday")
        assert "ERR give the time zone" in driver.command("clock set 2031-05-06T07:08:09")
        assert "OK ledger intact" in driver.command("ledger verify")
        out = driver.command("ledger 3")
        assert "console_action  tech: 'clock set 2031-05-06T07:08:09+08:00' -> OK" in out
        log = driver.command("log 50")
        assert "'assign PC-0099' -> OK" in log
    new = entries(device)[before:]
    kinds = [e.kind for e in new]
    assert kinds == ["assigned", "console_action", "time_sync", "console_action"]
    assigned, sync, action = new[0].body, new[2].body, new[3].body
    assert (assigned.officer, assigned.by) == ("PC-0099", "tech")
    assert sync.source == "technician"
    assert sync.new_utc_ns // 10**9 == datetime(2031, 5, 5, 23, 8, 9, tzinfo=UTC).timestamp()
    assert abs(sync.old_utc_ns - time.time_ns()) < 60 * 10**9
    assert (action.technician, action.command) == ("tech", "clock set 2031-05-06T07:08:09+08:00")
    assert new[3].time.clock_source == "technician" and not new[3].time.clock_synced
    r = custody("verify", device.store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "console actions:" in r.stdout and "assign PC-0099" in r.stdout
    report = json.loads(custody("verify", device.store, "--json").stdout)
    assert any(a["technician"] == "tech" and a["command"] == "assign PC-0099"
               and a["result"].startswith("OK") for a in report["console_actions"])


def test_refusals_while_recording_and_a_forced_reboot_seals_first(device):
    assert device.client is not None
    device.client.call("press", button="record")
    device.wait_for("recording")
    before = len(entries(device))
    with console(device) as driver:
        logged_in(driver, device)
        for line in ("assign PC-1", "clock set 2030-01-01T00:00:00Z", "reboot", "shutdown"):
            out = driver.command(line)
            assert "ERR refused while recording (recording" in out, (line, out)
        driver.expect(b"> ")
        driver.send("factory-reset\r")
        driver.expect(b"to confirm: ")
        driver.send("DEV-SIM-0001\r")
        assert b"ERR refused while recording" in driver.expect(RESULT)
        out = driver.command("reboot --force", timeout=90)
        assert re.search(r"^recording \d+ stopped and sealed; running true", out, re.M)
        assert out.rstrip().endswith("OK reboot requested")
        assert "recorder       standby" in driver.command("status")
    new = entries(device)[before:]
    actions = [(e.body.command, e.body.result.split()[0]) for e in new
               if e.kind == "console_action"]
    assert actions == [("assign PC-1", "ERR"), ("clock set 2030-01-01T00:00:00Z", "ERR"),
                       ("reboot", "ERR"), ("shutdown", "ERR"), ("factory-reset", "ERR"),
                       ("reboot --force", "OK")]
    stops = [e for e in new if e.kind == "record_stop"]
    assert stops and stops[0].body.trigger == "console"
    # sealed and stopped before the forced reboot's action was signed OK
    assert stops[0].seq < new[-1].seq and new[-1].body.command == "reboot --force"
    assert_verifies(device)


def test_factory_reset_asks_for_the_device_id_and_refuses_evidence_not_offloaded(device):
    state = LedgerState.read(device.store)
    with console(device) as driver:
        logged_in(driver, device)
        driver.expect(b"> ")
        driver.send("factory-reset\r")
        driver.expect(b"to confirm: ")
        driver.send("DEV-WRONG\r")
        assert b"ERR not confirmed" in driver.expect(RESULT)
        driver.expect(b"> ")
        driver.send("factory-reset\r")
        driver.expect(b"to confirm: ")
        driver.send("DEV-SIM-0001\r")
        out = driver.expect(RESULT).decode()
    assert state.unarchived_recordings()  # the recordings of the tests above
    assert "media files are not offloaded" in out
    media = sorted(p.name for p in (device.store / "media").iterdir())
    assert media == sorted(state.sealed)  # nothing deleted


def test_factory_reset_once_everything_is_offloaded_unassigns_and_keeps_the_ledger(device):
    signed = [parse_line(x) for x in split_lines((device.store / "ledger.jsonl").read_bytes())]
    last = signed[-1]
    receipt = OffloadReceipt(
        dock="DOCK-01", device="DEV-SIM-0001", first_seq=0, last_seq=last.entry.seq,
        head=last.digest, archived_utc_ns=time.time_ns(),
        media=[ArchivedMedia(file=m.file, sha256=m.sha256) for e in signed
               for m in e.entry.media()])
    dock = SigningKey.from_pem((device.keys / "docks" / "DOCK-01.key").read_bytes())
    device.client.call("receipt", receipt=sign_receipt(receipt, dock.signer()))
    before = len(entries(device))
    with console(device) as driver:
        logged_in(driver, device)
        driver.expect(b"> ")
        driver.send("factory-reset\r")
        driver.expect(b"to confirm: ")
        driver.send("DEV-SIM-0001\r")
        out = driver.expect(RESULT).decode()
        assert "OK unassigned (was" in out and "the ledger and keys stay" in out
        assert "officer        nobody assigned" in driver.command("status")
    new = entries(device)[before:]
    assert [e.kind for e in new] == ["assigned", "console_action"]
    assert new[0].body.officer == "" and new[0].body.by == "tech"
    assert entries(device)[0].kind == "provisioned"  # the history stays
    assert_verifies(device)


def test_what_needs_no_recorder_works_while_it_is_down(device, tmp_path):
    config = tmp_path / "recorder.toml"
    config.write_text(device.config_path.read_text().replace(
        str(device.config.control_socket), str(tmp_path / "gone.sock")))
    with console(device, config) as driver:
        logged_in(driver, device)
        assert "NOT RUNNING" in driver.command("status")
        assert "OK ledger intact" in driver.command("ledger verify")
        assert "entries" in driver.command("ledger 2")
        assert driver.command("keys").rstrip().endswith("OK")
        assert driver.command("storage").rstrip().endswith("OK")
        assert driver.command("log 3").rstrip().endswith(f"lines of {device.out}/device.log")
        out = driver.command("assign PC-2")
        assert "ERR the recorder is not running, and an assignment must be signed" in out
        out = driver.command("selftest", timeout=60)
        assert re.search(r"^storage write/read\s+PASS", out, re.M)
        assert re.search(r"^keys\s+PASS", out, re.M)
        assert re.search(r"^camera frame\s+FAIL\s+recorder not running", out, re.M)


def _updated_trust(device: SimRunner) -> tuple[bytes, str]:
    trust = TrustFile.from_bytes((device.keys / "trust.json").read_bytes())
    dock = SigningKey.generate()
    trust.keys[dock.keyid] = TrustedKey(keytype="ed25519", public=dock.public_hex)
    trust.docks["DOCK-NEW"] = Holder(keys=[dock.keyid])
    return trust.to_bytes(), dock.keyid


def _paste(driver: ConsoleDriver, update: dict) -> bytes:
    driver.expect(b"> ")
    driver.send("enroll\r")
    driver.expect(b"single '.':")
    driver.send(json.dumps(update) + "\r.\r")
    return driver.expect(re.compile(rb"to install it: |^ERR[^\r\n]*\r\n", re.M), 30)


def test_enroll_installs_a_signed_trust_update_confirmed_by_fingerprint(device):
    data, new_dock = _updated_trust(device)
    archive = SigningKey.from_pem((device.keys / "archive-signing.key").read_bytes())
    forged = sign_trust_update(data, SigningKey.from_pem(
        (device.keys / "docks" / "DOCK-01.key").read_bytes()).signer())
    with console(device) as driver:
        logged_in(driver, device)
        assert b"ERR trust update: not signed by an archive key" in _paste(driver, forged)
        update = sign_trust_update(data, archive.signer())
        shown = _paste(driver, update).decode()
        fingerprint = re.search(r"fingerprint  ([0-9a-f]{64})", shown).group(1)
        assert "added        DOCK-NEW" in shown
        driver.send("0000000000000000\r")  # not what was shown: not installed
        assert b"ERR refused: the fingerprint confirmed" in driver.expect(RESULT)
        assert new_dock not in (device.keys / "trust.json").read_text()
        _paste(driver, update)
        driver.send(fingerprint[:16] + "\r")
        assert f"OK trust file {fingerprint} installed".encode() in driver.expect(RESULT)
        assert new_dock in driver.command("keys")
    assert new_dock in (device.keys / "trust.json").read_text()
    actions = [e.body for e in entries(device)[-2:]]
    assert [a.result.split()[0] for a in actions] == ["ERR", "OK"]
    assert actions[-1].command == f"enroll {fingerprint[:16]}"
