"""A short sample recording on a real ledger, without camera or microphone.

Used by ``custody demo``, the test vectors and the tests of protocol/ that
need genuine sealed media: real H.264 + FLAC in fragmented MP4, sealed and
appended exactly as the recorder does. Each frame carries its frame index in
the top-left strip (:mod:`hardware.frame_index`), as the simulated camera's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from device.ledger import LedgerWriter
from device.sealer import SegmentSealer
from hardware.frame_index import draw_frame_index
from protocol.entries import Marker, RecordStart, RecordStop, Segment
from protocol.envelope import SignedEntry

AUDIO_RATE = 48_000


class _Bytes:
    """A write-only sink: what the muxer sees (never seeks)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)


def frame_picture(index: int, width: int, height: int) -> np.ndarray:
    """An RGB picture carrying ``index`` (:mod:`hardware.frame_index`)."""
    luma = np.full((height, width), 128, np.uint8)
    draw_frame_index(luma, index)  # read_frame_index reads it back
    img = np.repeat(luma[:, :, None], 3, axis=2)
    bar = (index * 4) % width  # something that moves, for a human looking at it
    img[height // 2:, bar:bar + 4] = (200, 40, 40)
    return img


@dataclass
class SampleMedia:
    mp4: bytes
    frames: int
    audio_samples: int


def encode_sample(first_index: int, frames: int, fps: int, width: int = 512,
                  height: int = 96) -> SampleMedia:
    """One independently playable fMP4 segment: frames from ``first_index`` on."""
    sink = _Bytes()
    with av.open(sink, "w", format="mp4", options={
        "movflags": "frag_keyframe+empty_moov+default_base_moof",
        "avoid_negative_ts": "make_non_negative",
    }) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(fps)}
        audio = out.add_stream("flac", rate=AUDIO_RATE)
        audio.layout, audio.format = "mono", "s16"
        per_frame = AUDIO_RATE // fps
        for i in range(frames):
            n = first_index + i
            pic = av.VideoFrame.from_ndarray(frame_picture(n, width, height), format="rgb24")
            pic.pts, pic.time_base = i, Fraction(1, fps)
            out.mux(video.encode(pic))
            t = (np.arange(per_frame) + n * per_frame) / AUDIO_RATE
            pcm = (np.sin(2 * np.pi * (440 + 110 * (n // fps % 4)) * t) * 8000).astype(np.int16)
            block = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            block.sample_rate, block.pts, block.time_base = AUDIO_RATE, i * per_frame, Fraction(
                1, AUDIO_RATE)
            out.mux(audio.encode(block))
        out.mux(video.encode())
        out.mux(audio.encode())
    return SampleMedia(bytes(sink.data), frames, frames * per_frame)


def record_sample(ledger: LedgerWriter, store: Path, archive_public: bytes, officer: str,
                  segments: int = 3, seconds: int = 2, fps: int = 10,
                  category: str = "scene") -> list[SignedEntry]:
    """Append a whole recording — start, markers, sealed segments, stop.

    The sample is made far faster than real time, so its capture lies before
    its entries, as a pre-record buffer's does: no segment may claim capture
    after the moment its entry was signed (docs/format.md).
    """
    period = 1_000_000_000 // fps
    start = ledger.append(RecordStart(trigger="button", category=category, officer=officer,
                                      pre_record_seconds=float(segments * seconds),
                                      pre_record_audio=True))
    rec = start.entry.seq
    entries = [start, ledger.append(Marker(phase="site", recording=rec))]
    t0 = start.entry.time.utc_ns - segments * seconds * fps * period
    for i in range(segments):
        first = i * seconds * fps
        sample = encode_sample(first, seconds * fps, fps)
        sealer = SegmentSealer(store, f"r{rec:06d}-{i:05d}.cseg", archive_public)
        sealer.write(sample.mp4)
        sealer.end_fragment()
        media = sealer.close()
        entries.append(ledger.append(Segment(
            recording=rec, span=0, index=i, media=media,
            first_capture_utc_ns=t0 + first * period,
            last_capture_utc_ns=t0 + (first + sample.frames - 1) * period,
            frame_period_ns=period, frames=sample.frames,
            audio_samples=sample.audio_samples, audio_rate=AUDIO_RATE)))
    entries.append(ledger.append(Marker(phase="questioning", recording=rec)))
    entries.append(ledger.append(RecordStop(recording=rec, trigger="button")))
    return entries
