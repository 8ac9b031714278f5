"""At start, before capture: seal what a power cut or crash left behind, declare the cut.

>>> # recover_cut(appender, clock)   # in Recorder.start(), before the first press
"""

from __future__ import annotations

import logging

from device import recovery
from device.ledger import boot_id
from device.recorder.appender import EntryAppender
from device.sealer import PENDING_DIR
from hardware.clock import Clock
from hardware.host.durable import remove_temporaries

log = logging.getLogger("device.recorder")

# Interruptions the recorder declares and records on through (it was still running).
CAPTURE_FAULTS = ("camera_fault", "mic_fault")


def recover_cut(appender: EntryAppender, clock: Clock) -> None:
    """Remove what a cut left of unfinished durable writes; seal the cut files,
    declare the cut.

    The segment left in ``pending/`` keeps its complete fragments and is sealed
    ``recovered``; so is a voice note or memo cut short (its entry first). A
    recording left open gets ``interruption`` (``power_loss`` if the kernel
    booted since its last entry, else ``crash``), unless an interruption
    already ended it (battery, storage); a capture fault still waiting for its
    camera or microphone ended nothing, so the cut after it is declared too.
    """
    # A temporary file of a durable write a cut interrupted is never evidence
    # (hardware/host/durable.py): nothing else writes the store yet, so it goes.
    for folder in (appender.store, appender.store / PENDING_DIR):
        remove_temporaries(folder)
    known = appender.known
    reason = recovery.cut_reason(known.last_boot_id, boot_id())
    # Only what the device's journal key authenticates is sealed (docs/recovery.md).
    recovered = recovery.recover_pending(appender.store,
                                         journal_key=appender.ledger.journal_key)
    for r in recovered:  # voice notes and memos first, then segments in order
        if isinstance(r, recovery.RecoveredNote):
            appender.append(r.body)
        elif r.segment is not None:
            appender.append(r.segment)
    rec = known.open_recording
    if rec is None:
        return
    ended = known.unresumed(rec.seq)
    # A battery or storage interruption ended the capture on purpose: the cut after
    # it is that one's. A capture fault (camera, microphone) did not: the recorder
    # was still running, so the cut is an event of its own and is declared.
    if ended is not None and known.interruptions[ended].reason not in CAPTURE_FAULTS:
        return
    # A cut time only from a record that authenticates (None: nothing says).
    cuts = [r for r in recovered if isinstance(r, recovery.RecoveredSegment)
            and r.recording == rec.seq and r.cut_utc_ns is not None]
    if not cuts:
        cuts = [recovery.RecoveredSegment(
            None, recording=rec.seq, file="",
            cut_utc_ns=rec.last_capture_utc_ns or int(clock.now() * 1e9))]
    appender.append(recovery.interruption_for(cuts, reason))
    log.warning("recording %d was cut (%s); declared", rec.seq, reason)
