"""The typed messages the recorder's stages send each other, queue by queue.

::

    façade, capture router ──► capture queue ──► mux stage ──► seal queue ──► seal stage
    (and voice notes)
            ▲                                                                   │
            └────────────── router feedback: MediumRefused ◄────────────────────┘

Nothing else passes between the stages: no stage reads another's fields.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from device.muxer import FragmentInfo, SegmentSummary
from hardware.frames import AudioBlock, VideoFrame
from protocol.entries import RecordStart
from protocol.envelope import SignedEntry


@dataclass
class Session:
    """The recording the officer has open, as the presses left it.

    A press decides from this, at the moment of the press, what it does —
    never from how far the seal stage has got with the ledger. ``seq`` is
    resolved once the seal stage has appended ``record_start`` (in order,
    after everything pressed before it).
    """

    seq: Future[int] = field(default_factory=Future)
    interrupted: bool = False  # ended by an interruption: the next press resumes it
    span: int = 0  # at boot, a recording a cut left open: its last span...
    next_index: int = 0  # ...and its next segment's index


# --- the capture queue: router and façade -> mux stage ---------------------------------


@dataclass
class StartSpan:
    """A press started a recording (``start`` is its entry) or resumes ``session``'s."""

    session: Session
    resume: bool
    start: RecordStart | None
    utc_offset_ns: int  # capture clock -> UTC, fixed for the span
    frames: list[VideoFrame]
    blocks: list[AudioBlock]
    press_us: int


@dataclass
class Stop:
    """The officer's stop: the span and the recording end."""

    trigger: str


@dataclass
class Interrupt:
    """End the span: the recording stays open, to be resumed by the next press."""

    reason: str
    detected_by: str
    cut_us: int


@dataclass
class Overflow:
    """Capture lost before the mux stage saw it: end the span, declare the gap, go on."""

    cut_us: int
    dropped_frames: int
    dropped_samples: int
    reason: str = "other"
    detected_by: str = "queue_overflow"  # our capture queue; or the source's own loss


@dataclass
class CameraFault:
    """No frame for a while: end the video span, go on with audio alone."""

    cut_us: int  # capture time of the last frame


@dataclass
class CameraBack:
    """Frames come again: a video span starts."""


@dataclass
class MicFault:
    """No audio for a while: video goes on; the silence is declared."""

    cut_us: int  # capture time just after the last sample


@dataclass
class SegmentBreak:
    """The medium refused the open file (declared already): go on in a new file."""


@dataclass
class Mark:
    """A marker press, in capture order: after the record_start it belongs to."""

    phase: str
    entry: Future[SignedEntry] = field(default_factory=Future)


@dataclass(frozen=True)
class NoteRef:
    """A voice note (or an exemption's memo) being written: its file, what it is for."""

    file: str
    interruption: int | None  # a voice note explains this interruption
    exemption: str | None = None  # or: an exemption's reason


@dataclass
class NoteAudio:
    """A block of the note's audio, in capture order: the mux stage writes it to the note."""

    note: NoteRef
    block: AudioBlock


@dataclass
class EndNote:
    """The note ends: the mux stage finishes its file and hands it to the seal stage."""

    memo: Any  # a device.recorder.memo.Memo: what the seal stage appends for it


@dataclass
class Barrier:
    """Passed once everything queued before it is muxed and sealed (``wait_idle``)."""

    passed: threading.Event = field(default_factory=threading.Event)


@dataclass
class End:
    """The stage's last message: it ends and tells the next."""


CaptureMessage = (VideoFrame | AudioBlock | StartSpan | Stop | Interrupt | Overflow
                  | CameraFault | CameraBack | MicFault | SegmentBreak | Mark | NoteAudio
                  | EndNote | Barrier | End)


# --- the seal queue: mux stage (and memos) -> seal stage ---------------------------------


@dataclass(frozen=True)
class Span:
    """Which recording and span a file or a declaration belongs to."""

    recording: int
    span: int
    utc_offset_ns: int


@dataclass(frozen=True)
class FileRef:
    """One file being written: a segment (its name, place, how it is muxed) or a note."""

    file: str
    index: int
    span: Span | None  # None: a voice note or memo (``note``), which belongs to no span
    codecs: dict[str, str] | None = None
    note: NoteRef | None = None


@dataclass
class OpenSpan:
    """Append the span's ``record_start`` (resolving the session's seq) or ``resume``."""

    start: StartSpan


@dataclass
class OpenFile:
    ref: FileRef


@dataclass
class WriteBytes:
    ref: FileRef
    data: bytes


@dataclass
class FragmentEnd:
    ref: FileRef
    info: FragmentInfo


@dataclass
class SealFile:
    """Close the file and append its ``segment`` entry (its journal goes after)."""

    ref: FileRef
    first_us: int
    last_us: int
    frames: int
    samples: int
    period_ns: int


@dataclass
class Declare:
    """An ``interruption`` cut at ``cut_us``; and at once its ``resume`` if ``resume``."""

    span: Span
    reason: str
    detected_by: str
    cut_us: int
    resume: bool


@dataclass
class FinishRecording:
    recording: int
    trigger: str


@dataclass
class AppendMarker:
    mark: Mark
    recording: int | None


@dataclass
class SealMemo:
    """Close the note's file (if any audio was said) and append its entry; journal after."""

    memo: Any  # a device.recorder.memo.Memo
    file: FileRef | None  # None: the note ended before anything was said
    summary: SegmentSummary | None


@dataclass
class PassBarrier:
    barrier: Barrier


SealMessage = (OpenSpan | OpenFile | WriteBytes | FragmentEnd | SealFile | Declare
               | FinishRecording | AppendMarker | SealMemo | PassBarrier | End)


# --- feedback: seal stage -> capture router ----------------------------------------------


@dataclass
class MediumRefused:
    """The medium refused a file of ``recording``: the router breaks to a new file."""

    recording: int
