"""A dock with wrong offsets: it holds the dock key, so it can sign any time statement.

What the device does with it (steps by exactly the offset, within a bound when
its clock has a reference), what shows (the `time_sync` entry names the dock
and the step; the verifier reports it, and flags a large one), and what is
refused (a statement for another device, an old one replayed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web

import daemon.dock.server as dock_server
from daemon import pki
from daemon.dock.server import DockServer
from daemon.provision import device_key_path, load_signing_key
from device.offload import DockClient, LedgerHost, Offloader, OffloadSettings, RecorderHost
from protocol.entries import TimeSync
from protocol.envelope import parse_line, split_lines
from protocol.store_reader import LEDGER_NAME, read_store
from protocol.time_statement import MAX_DOCK_STEP_NS, open_time_statement
from protocol.verify import VerificationPolicy, verify
from protocol.verify_cli import render
from tests.conftest import DEVICE
from tests.daemon.dockkit import DockThread, dock_config, make_unit
from tests.device.simrun import recorder_on_sim

S = 1_000_000_000


class _ShiftedTime:
    """The dock's ``time`` module with its wall clock off by ``shift_ns``."""

    def __init__(self, shift_ns: int):
        self.shift_ns = shift_ns

    def time_ns(self) -> int:
        return time.time_ns() + self.shift_ns

    def __getattr__(self, name: str):
        return getattr(time, name)


class ClockedHost(LedgerHost):
    """A store's host with a wall clock of its own that a dock's step really moves."""

    def __init__(self, *args, reference: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset_ns = 0
        self.clock_has_reference = reference

    def now_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def sync_clock(self, statement, step_ns) -> None:
        old = self.now_ns()
        self.offset_ns += step_ns or 0
        self.append(TimeSync(old_utc_ns=old, new_utc_ns=old + (step_ns or 0), source="dock",
                             statement=statement))


def _time_syncs(store: Path) -> list[TimeSync]:
    return [s.entry.body for s in (parse_line(x) for x in
                                   split_lines((store / LEDGER_NAME).read_bytes()))
            if isinstance(s.entry.body, TimeSync)]


def _verify(store: Path, trust):
    contents = read_store(store)
    return verify(contents.ledger, contents.media, trust, VerificationPolicy())


@pytest.fixture
def world(tmp_path: Path, monkeypatch):
    keys, (dev, other) = make_unit(tmp_path, devices=2)
    dev.host.close()
    dev.host = ClockedHost(dev.store, dev.name,
                           load_signing_key(device_key_path(keys, dev.name)), dev.host.trust)
    docks: list[DockThread] = []

    def dock(shift_ns: int = 0) -> DockThread:
        monkeypatch.setattr(dock_server, "time", _ShiftedTime(shift_ns))
        docks.append(DockThread(dock_config(keys, tmp_path / f"archive-{len(docks)}")))
        return docks[-1]

    yield keys, dev, other, dock
    for d in docks:
        d.stop()
    dev.host.close()
    other.host.close()


def test_the_real_recorder_steps_by_exactly_a_false_offset_and_it_shows(unit, tmp_path,
                                                                         monkeypatch):
    dock_clock = _ShiftedTime(120 * S)  # the dock lies: +2 min
    monkeypatch.setattr(dock_server, "time", dock_clock)
    dock = DockThread(dock_config(unit.keys, tmp_path / "archive"))
    settings = OffloadSettings(
        dock_url=dock.url, tls_cert_file=pki.cert_path(unit.keys, "device", DEVICE),
        tls_key_file=pki.key_path(unit.keys, "device", DEVICE),
        tls_ca_file=pki.tls_dir(unit.keys) / pki.CA_CERT, timeout_s=10.0)
    try:
        with recorder_on_sim(unit) as recorder:
            recorder.start()
            before = recorder.clock.now()
            host = RecorderHost(recorder, unit.device_key)
            Offloader(settings, unit.store, DEVICE, host).offload_round()
            moved = recorder.clock.now() - before
            (sync,) = _time_syncs(unit.store)
            # Docked again, to a dock two hours off: the clock, set by a dock now, stays.
            assert str(recorder.clock.sync.source) == "dock"
            dock_clock.shift_ns += 2 * 3600 * S
            before = recorder.clock.now()
            host = RecorderHost(recorder, unit.device_key)
            Offloader(settings, unit.store, DEVICE, host).offload_round()
            assert abs(recorder.clock.now() - before) < 5
            refused = _time_syncs(unit.store)[1]
            assert refused.new_utc_ns == refused.old_utc_ns
        statement = open_time_statement(sync.statement, unit.trust)
        # The device stepped by exactly the signed offset; the entry names the dock.
        assert sync.source == "dock" and statement.dock == "DOCK-01"
        assert sync.new_utc_ns - sync.old_utc_ns == statement.offset_ns
        assert 119 < moved < 125 and 119 * S < statement.offset_ns < 121 * S
        report = _verify(unit.store, unit.trust)
        step, kept = report.time_syncs
        assert kept.step_s == 0 and kept.statement == "verified"
        assert [f.kind for f in report.findings if f.seq == kept.seq] == ["large_dock_offset"]
        assert step.dock == "DOCK-01" and step.statement == "verified"
        assert step.step_s == statement.offset_ns / 1e9
        text = render(unit.store, report)
        assert "time_sync steps:" in text and "verified (DOCK-01)" in text
        assert f"{step.step_s:+.3f} s" in text
    finally:
        dock.stop()


def test_a_step_beyond_the_bound_is_recorded_not_applied_and_flagged(world) -> None:
    _, dev, _, dock = world
    lying = dock(2 * 3600 * S)  # two hours: no clock with a reference drifts so far
    dev.record([1000])
    dev.offloader(lying.url).offload_round()
    (sync,) = _time_syncs(dev.store)
    statement = open_time_statement(sync.statement, dev.host.trust)
    assert abs(statement.offset_ns) > MAX_DOCK_STEP_NS
    assert sync.new_utc_ns == sync.old_utc_ns and dev.host.offset_ns == 0  # clock kept
    report = _verify(dev.store, dev.host.trust)
    (flag,) = [f for f in report.findings if f.kind == "large_dock_offset"]
    assert flag.severity == "warning" and "DOCK-01" in flag.message
    assert "not applied" in flag.message
    assert report.verdict == "intact"


def test_a_clock_never_set_takes_a_large_step_and_it_is_flagged(world) -> None:
    _, dev, _, dock = world
    dev.host.clock_has_reference = False  # booted with no RTC, no network: any step is better
    lying = dock(-2 * 3600 * S)
    dev.offloader(lying.url).offload_round()
    (sync,) = _time_syncs(dev.store)
    assert sync.new_utc_ns - sync.old_utc_ns == open_time_statement(
        sync.statement, dev.host.trust).offset_ns
    assert -7201 * S < dev.host.offset_ns < -7199 * S
    (flag,) = [f for f in _verify(dev.store, dev.host.trust).findings
               if f.kind == "large_dock_offset"]
    assert "(applied)" in flag.message


def _answering(monkeypatch, answer: dict) -> None:
    async def canned(self, request: web.Request) -> web.Response:
        return web.json_response(answer)

    monkeypatch.setattr(DockServer, "time", canned)


def _real_answer(dock: DockThread, device, reading: int) -> dict:
    client = DockClient(device.settings(dock.url), device.name)
    _, _, answer = client.call("POST", "/time", f'{{"device_time_ns": {reading}}}'.encode(),
                               {"Content-Type": "application/json"})
    client.close()
    return answer


def test_a_statement_for_another_device_is_refused(world, monkeypatch) -> None:
    _, dev, other, dock = world
    honest = dock()
    theirs = _real_answer(honest, other, time.time_ns() - 30 * S)  # validly signed, not ours
    _answering(monkeypatch, {**theirs, "set_clock": True})
    replaying = dock()
    dev.record([1000])
    offloader = dev.offloader(replaying.url)
    assert offloader.offload_round() is True  # the offload goes on
    assert _time_syncs(dev.store) == [] and dev.host.offset_ns == 0
    assert "for device 'DEV-0002'" in offloader.status()["time_statement_refused"]
    assert dev.media_left() == []


def test_an_old_statement_replayed_is_refused(world, monkeypatch) -> None:
    _, dev, _, dock = world
    honest = dock()
    old = _real_answer(honest, dev, time.time_ns() - 600 * S)  # ours, from an earlier docking
    _answering(monkeypatch, {**old, "set_clock": True})
    replaying = dock()
    offloader = dev.offloader(replaying.url)
    offloader.offload_round()
    assert _time_syncs(dev.store) == [] and dev.host.offset_ns == 0
    assert "out of date or replayed" in offloader.status()["time_statement_refused"]


def test_the_verifier_refuses_a_replayed_statement_in_a_ledger(world) -> None:
    """A thief of the device key writing a time_sync around an old statement."""
    _, dev, _, dock = world
    honest = dock()
    reading = time.time_ns()
    answer = _real_answer(honest, dev, reading)
    now = dev.host.now_ns()
    dev.host.append(TimeSync(old_utc_ns=now, new_utc_ns=now, source="dock",
                             statement=answer["statement"]))
    dev.host.append(TimeSync(old_utc_ns=now + 1, new_utc_ns=now + 1, source="dock",
                             statement=answer["statement"]))  # the same one again
    late = dev.host.now_ns() + 600 * S
    dev.host.append(TimeSync(old_utc_ns=late, new_utc_ns=late, source="dock",
                             statement=answer["statement"]))
    report = _verify(dev.store, dev.host.trust)
    bad = [f for f in report.findings if f.kind == "bad_time_statement"]
    assert [s.statement for s in report.time_syncs] == ["verified", "invalid", "invalid"]
    assert "used before" in bad[0].message and "replayed" in bad[1].message
    assert report.verdict == "broken"
