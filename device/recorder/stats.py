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
    press_us: int | None = None  # the latest record press (start or resume), capture clock
    framed_press_us: int | None = None  # the press the last press_to_frame_ms is of

    def pressed(self, press_us: int) -> None:
        """A press started (or resumed) a span: its first frame is yet to come."""
        self.press_us = press_us

    def first_frame(self, press_us: int, now_us: int) -> None:
        """The span pressed at ``press_us`` has its first frame in the muxer."""
        self.press_to_frame_ms.append((now_us - press_us) / 1000)
        self.framed_press_us = press_us

    def latest_press(self, now_us: int) -> dict[str, float | None]:
        """The latest press: ``press_to_frame_ms`` once its first frame came (None
        before: never the press before it), and ``since_press_ms``, how long ago it
        was, so that a None says "no frame within that time of the press"."""
        if self.press_us is None:
            return {"press_to_frame_ms": None, "since_press_ms": None}
        framed = self.framed_press_us == self.press_us and self.press_to_frame_ms
        return {"press_to_frame_ms": self.press_to_frame_ms[-1] if framed else None,
                "since_press_ms": round((now_us - self.press_us) / 1000, 3)}
    last_error: str = ""
