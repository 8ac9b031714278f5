"""The recorder's ``status``: one flat dict for the control socket, the console and tests.

Built from what each part shows of itself — counters, queues, the ledger's
state, the voice note, the self-checks — never from their private fields.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from device.ledger_state import LedgerState
from device.recorder.memo import VoiceNotes
from device.recorder.router import CaptureRouter
from device.recorder.selfcheck import SelfChecks
from device.recorder.stats import RecorderStats
from hardware.camera import monotonic_us


def status_report(*, state: str, device: str, recording: int | None, stats: RecorderStats,
                  router: CaptureRouter, seal_queue: int, next_seq: int, known: LedgerState,
                  voice_notes: VoiceNotes, checks: SelfChecks, docked: bool) -> dict[str, Any]:
    s = stats
    return {
        "state": state, "device": device, "officer": known.officer,
        "recording": recording, "segments_sealed": s.segments_sealed,
        "bytes_sealed": s.bytes_sealed, "dropped_frames": s.dropped_frames,
        "dropped_samples": s.dropped_samples, "overflows": s.overflows,
        "source_losses": s.source_losses, "seal_failures": s.seal_failures,
        "refused_transitions": s.refused_transitions, "refused_presses": s.refused_presses,
        **s.latest_press(monotonic_us()),
        "capture_queue": router.queue.qsize(), "seal_queue": seal_queue,
        "prerecord_seconds": round(router.prerecord.seconds, 3),
        "next_seq": next_seq, "last_error": s.last_error,
        "unexplained": known.unexplained,
        "voice_note": voice_notes.current is not None,
        "voice_note_listening": voice_notes.listening,
        "prompts": s.prompts, "voice_notes": s.voice_notes, "freed_files": s.freed_files,
        "docked": docked, "overdue_warning": checks.overdue_warning,
        "overdue": sorted(known.overdue_declared), "free_bytes": checks.free_bytes(),
        "battery": asdict(last) if (last := checks.battery_watch.last) else None,
    }
