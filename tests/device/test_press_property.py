"""Any press, at any speed: random shifts on simulated hardware, in process.

A Hypothesis state machine draws sequences of record, marker, function and
held-function presses, battery and storage events, with delays from nothing
to a few seconds between them, and runs each on a real Recorder (simulated
camera, microphone, battery and storage). After each run:

- ``verify`` has no error finding;
- every interruption it reports is one the sequence really caused (a battery
  or storage event while recording, a declared stop the officer armed), or a
  fault the device really detected and logged (a camera or microphone that
  did not deliver, a full queue: on a loaded machine these happen);
- every press either acted (its effect is there) or was refused and logged.

The shapes it found failing before the fix are kept as plain tests below it
(and the double tap itself in ``test_double_tap.py``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from daemon.provision import create_unit, enrol_device
from device.config import RecorderConfig
from device.ledger import LedgerWriter, entry_clock
from device.recorder import Recorder, State
from hardware.sim.factory import SimFactory
from hardware.sim.storage import directory_bytes
from tests.conftest import DEVICE, DOCK, OFFICER, StepClock, Unit

DELAYS = st.sampled_from([0.0, 0.0, 0.01, 0.03, 0.2, 0.7, 1.5, 3.0])
OFFICER_REASONS = {"weather", "location_change", "other"}
#: What the device detects on its own; allowed only if it also logged it.
DEVICE_FAULTS = {"camera_watchdog", "mic_watchdog", "audio_late", "frame_index", "audio_overflow",
                 "queue_overflow"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def messages(self, since: int = 0, level: int = logging.WARNING) -> list[str]:
        with self._lock:
            return [r.getMessage() for r in self.records[since:] if r.levelno >= level]

    def __len__(self) -> int:
        with self._lock:
            return len(self.records)


class Shift:
    """One device on simulated hardware, switched off and on as a battery does."""

    def __init__(self, root: Path):
        keys, store = root / "keys", root / "device"
        self.clock = StepClock()
        create_unit(keys, "test-unit", [DOCK])
        enrol_device(keys, DEVICE, store, self.clock, officer=OFFICER, by="TECH-01")
        self.unit = Unit(keys, store, self.clock)
        self.hw: SimFactory | None = None
        self.ledger: LedgerWriter | None = None
        self.recorder: Recorder | None = None
        self.powered_down = threading.Event()

    def power_on(self) -> Recorder:
        config = RecorderConfig.from_toml("").with_overrides({
            "device_id": DEVICE, "store": str(self.unit.store), "hardware": "sim",
            "video": "320x180@10", "pre_record_seconds": 0, "segment_seconds": 1})
        self.hw = SimFactory(camera_isolation="thread")
        self.ledger = LedgerWriter(self.unit.store, DEVICE, self.unit.device_key,
                                   entry_clock(self.hw.clock()))
        self.recorder = Recorder(config, self.hw, self.ledger, self.unit.archive_public,
                                 trust=self.unit.trust)
        self.powered_down.clear()
        self.recorder.on_power_down = self.powered_down.set
        self.recorder.start()
        return self.recorder

    def power_off(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.ledger is not None:
            self.ledger.close()
        if self.hw is not None:
            self.hw.close()
        self.recorder = self.ledger = self.hw = None


class Presses(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="custody-presses-"))
        self.shift = Shift(self.root)
        self.log = Records()
        logging.getLogger("device").addHandler(self.log)
        self.caused: set[str] = set()  # interruption reasons the sequence caused
        self.storage_event = False

    @property
    def recorder(self) -> Recorder:
        assert self.shift.recorder is not None
        return self.shift.recorder

    @initialize()
    def boot(self) -> None:
        self.shift.power_on()

    def _press(self, delay: float, press: Callable[[], object],
               acted: Callable[[object], bool]) -> None:
        time.sleep(delay)
        since = len(self.log)
        result = press()  # a press never raises
        if not acted(result):
            assert any(m.startswith("refused") for m in self.log.messages(since)), (
                f"a press neither acted nor was refused and logged: {press.__name__}")

    @rule(delay=DELAYS)
    def press_record(self, delay: float) -> None:
        r = self.recorder
        before = r.state
        if before == State.RECORDING and (r._interrupt_reason or r._menu):
            self.caused |= OFFICER_REASONS
        self._press(delay, r.press_record, lambda state: state != before)

    @rule(delay=DELAYS, chord=st.booleans())
    def press_marker(self, delay: float, chord: bool) -> None:
        r = self.recorder
        self._press(delay, lambda: r.mark("other" if chord else None),
                    lambda entry: entry.entry.kind == "marker")

    @rule(delay=DELAYS)
    def press_function(self, delay: float) -> None:
        self._press(delay, self.recorder.press_function, bool)

    @rule(delay=DELAYS)
    def hold_function(self, delay: float) -> None:
        r = self.recorder
        if r.state == State.RECORDING:
            self.caused |= OFFICER_REASONS
        self._press(delay, r.hold_function, bool)

    @rule(delay=DELAYS)
    def battery_critical(self, delay: float) -> None:
        """The battery runs down: the device seals, declares and switches off; the
        charger goes in and it boots again."""
        time.sleep(delay)
        assert self.shift.hw is not None
        if self.recorder.state == State.RECORDING:
            self.caused.add("battery")
        self.shift.hw.battery().set_level(2)
        assert self.shift.powered_down.wait(20), "the device did not switch off"
        self.shift.power_off()
        self.shift.power_on()

    @precondition(lambda self: not self.storage_event)
    @rule(delay=DELAYS)
    def storage_fills(self, delay: float) -> None:
        time.sleep(delay)
        storage = self.recorder.storage
        self.caused.add("storage_full")
        self.storage_event = True
        storage.capacity_bytes = directory_bytes(storage.path) + 1_000_000

    @precondition(lambda self: self.storage_event)
    @rule(delay=DELAYS)
    def storage_freed(self, delay: float) -> None:
        time.sleep(delay)
        storage = self.recorder.storage
        storage.capacity_bytes = directory_bytes(storage.path) + (1 << 40)
        self.storage_event = False

    def teardown(self) -> None:
        try:
            if self.shift.recorder is not None:
                self.shift.power_off()
            report = self.shift.unit.verify()
            assert not report.errors, report.errors
            logged = " ".join(self.log.messages(level=logging.ERROR))
            for cut in report.interruptions:
                if cut.detected_by in DEVICE_FAULTS:
                    word = "microphone" if cut.reason == "mic_fault" else (
                        "camera" if cut.reason == "camera_fault" else "queue")
                    assert word in logged, (cut, "a fault the device never logged")
                elif cut.detected_by == "storage_write":
                    assert "storage_full" in self.caused, cut
                else:
                    assert cut.reason in self.caused, (cut, self.caused)
        finally:
            logging.getLogger("device").removeHandler(self.log)


Presses.TestCase.settings = settings(
    max_examples=int(os.environ.get("PRESSES_EXAMPLES", "4")), stateful_step_count=8, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], database=None)
test_any_press_at_any_speed_leaves_a_record_that_verifies = Presses.TestCase


# --- the shapes it fails on without the fix, as plain tests ------------------------------------


@pytest.fixture
def presses():
    machine = Presses()
    machine.boot()
    yield machine
    machine.teardown()


def test_a_declared_stop_resumed_at_once_is_one_interruption(presses: Presses):
    """A resume pressed while the interruption is still on its way to the ledger: judged
    from the ledger, it took the recording for one cut without a stop."""
    presses.press_record(0)
    presses.hold_function(1.5)
    presses.press_record(0)  # the declared stop (weather)...
    presses.press_record(0)  # ...resumed at once
    presses.press_record(1.5)
    presses.teardown()
    report = presses.shift.unit.verify()
    assert [(c.reason, c.detected_by) for c in report.interruptions
            if c.detected_by not in DEVICE_FAULTS] == [("weather", "officer")]
    assert all(c.resumed_by is not None for c in report.interruptions)


def test_a_double_tap_then_a_battery_shutdown_and_a_resume_after_boot(presses: Presses):
    presses.press_record(0)
    presses.press_record(1.5)
    presses.press_record(0)  # the double tap
    presses.battery_critical(1.0)  # switched off while recording, then on again
    presses.press_record(0.5)  # resumes the interrupted recording
    presses.press_marker(0, chord=False)
    presses.press_record(1.0)
    presses.teardown()
    report = presses.shift.unit.verify()
    assert [c.reason for c in report.interruptions
            if c.detected_by not in DEVICE_FAULTS] == ["battery"]
    assert len(report.recordings) == 2
