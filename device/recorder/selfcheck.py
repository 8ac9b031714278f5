"""The recorder's self-checks, every half second: sources, clock, battery, storage, hand-in.

They run on their own thread (``run``) and act on the recorder only through
the small :class:`RecorderControl` interface: a check that finds a fault
declares it (``interrupt``) or powers the device down (``power_down``), never
by setting the façade's fields.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from device.config import RecorderConfig
from device.recorder.appender import EntryAppender
from device.recorder.router import CAMERA_TIMEOUT_S, MIC_TIMEOUT_S, CaptureRouter
from device.watch import BatteryWatch, OverdueWatch, StorageWatch, voice_note_reserve_bytes
from protocol.entries import Overdue

log = logging.getLogger("device.recorder")


class RecorderControl(Protocol):
    """What the self-checks may ask of the recorder."""

    @property
    def recording_now(self) -> bool: ...

    @property
    def shutting_down(self) -> bool: ...

    def interrupt(self, reason: str, detected_by: str) -> None: ...

    def power_down(self) -> None: ...


class SelfChecks:
    """The watch thread's checks; ``battery`` and ``storage`` are set once the devices open.

    >>> # checks = SelfChecks(config, appender, router, recorder, signal)
    >>> # threading.Thread(target=checks.run, args=(stopping,)).start()
    """

    def __init__(self, config: RecorderConfig, appender: EntryAppender, router: CaptureRouter,
                 recorder: RecorderControl, signal: Callable[[str], None]):
        self.config, self.appender, self.router = config, appender, router
        self.recorder, self._signal = recorder, signal
        self.battery: Any = None
        self.storage: Any = None
        media_bytes_per_s = config.video_bitrate // 8 + config.audio_rate * 2
        self.battery_watch = BatteryWatch(config.battery_low_minutes,
                                          config.battery_critical_minutes)
        self.storage_watch = StorageWatch(
            reserve_bytes=config.storage_reserve_bytes + voice_note_reserve_bytes(
                config.voice_note_reserve_seconds, config.audio_rate),
            headroom_bytes=3 * media_bytes_per_s)
        self.overdue_watch = OverdueWatch(config.overdue_warn_hours, config.overdue_hours)
        #: A recording is near (or past) the hand-in deadline: every press says so.
        self.overdue_warning = False

    def free_bytes(self) -> int:
        try:
            return int(self.storage.status().free_bytes) if self.storage else 1 << 62
        except OSError:
            return 1 << 62  # an unreadable gauge must not stop recording

    def can_start(self) -> bool:
        """Room for a recording beyond the reserve (nothing is ever overwritten)."""
        return self.storage_watch.can_start(self.free_bytes())

    def run(self, stopping: threading.Event) -> None:
        last_overdue_check = 0.0
        while not stopping.wait(0.5):
            try:
                self.router.expire_ending()  # a source that never caught up
                self.appender.check_clock()
                self.check_sources()
                self.check_battery()
                if self.recorder.recording_now and \
                        self.storage_watch.check(self.free_bytes()) == "full":
                    self.recorder.interrupt("storage_full", "storage")
                    self._signal("storage_low")
                if time.monotonic() - last_overdue_check >= 5:
                    last_overdue_check = time.monotonic()
                    self.check_overdue()
            except Exception:
                log.exception("self-check failed")

    def check_sources(self) -> None:
        """A camera or microphone silent while recording is a declared fault."""
        camera_down, mic_down = self.router.check_sources()
        if camera_down:
            log.error("camera fault: no frame for %.1f s; recording audio alone",
                      CAMERA_TIMEOUT_S)
        if mic_down:
            log.error("microphone fault: no audio for %.1f s; video goes on", MIC_TIMEOUT_S)
        if camera_down or mic_down:
            self._signal("error")

    def check_battery(self) -> None:
        if self.battery is None:
            return
        decision = self.battery_watch.check(self.battery.read())
        if decision == "low":
            self._signal("low_battery")
        elif decision == "critical" and not self.recorder.shutting_down:
            log.error("battery critical: sealing and shutting down")
            self.recorder.interrupt("battery", "battery_gauge")
            self.recorder.power_down()

    def check_overdue(self) -> None:
        known = self.appender.known
        pending = known.unarchived_recordings()
        now = int(self.appender.clock.now() * 1e9)
        oldest = pending[0].start_utc_ns if pending else None
        decision = self.overdue_watch.check(oldest, now)
        self.overdue_warning = decision is not None
        if decision == "overdue":
            for rec in pending:
                if rec.seq in known.overdue_declared:
                    continue
                if self.overdue_watch.check(rec.start_utc_ns, now) == "overdue":
                    self.appender.append(Overdue(recording=rec.seq,
                                                 started_utc_ns=rec.start_utc_ns,
                                                 hours=self.config.overdue_hours))
                    log.error("recording %d is overdue for hand-in", rec.seq)
