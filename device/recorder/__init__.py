"""The recorder: one press records continuous, segmented, sealed audio and video.

The package reads like the pipeline (docs/architecture.md)::

    camera, microphone ─► router ─► capture queue ─► mux ─► seal queue ─► seal ─► appender
                          (pre-record buffer)          (fMP4, FLAC)       (sealer)   (ledger)

- :mod:`~device.recorder.facade` — :class:`Recorder`: states and the officer's actions;
- :mod:`~device.recorder.router` — where each captured frame and block goes;
- :mod:`~device.recorder.mux` — the mux stage (segments, audio-only spans);
- :mod:`~device.recorder.seal` — the seal stage (sealers, a refused medium);
- :mod:`~device.recorder.appender` — :class:`EntryAppender`, the one place entries are appended;
- :mod:`~device.recorder.messages` — every message that passes between them;
- :mod:`~device.recorder.memo`, :mod:`~device.recorder.menu` — voice notes and the function menu.
"""

from device.recorder.appender import EntryAppender
from device.recorder.facade import ALLOWED, OFFICER_REASONS, Recorder, State
from device.recorder.stats import RecorderStats

__all__ = ["ALLOWED", "OFFICER_REASONS", "EntryAppender", "Recorder", "RecorderStats", "State"]
