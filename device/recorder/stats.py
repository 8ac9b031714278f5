"""What the recorder counts, for ``status`` (each stage adds to its own counters)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecorderStats:
    segments_sealed: int = 0
    bytes_sealed: int = 0
    dropped_frames: int = 0
    dropped_samples: int = 0
    overflows: int = 0  # of the capture queue
    source_losses: int = 0  # capture the camera or microphone itself lost
    seal_failures: int = 0  # segments the medium refused to go on writing
    refused_transitions: int = 0
    refused_presses: int = 0  # presses with nothing to act on (logged)
    prompts: int = 0
    voice_notes: int = 0
    freed_files: int = 0
    press_to_frame_ms: list[float] = field(default_factory=list)
    last_error: str = ""
