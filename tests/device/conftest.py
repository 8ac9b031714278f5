"""Fixtures for the device tests: real H.264 from libx264 and PCM from numpy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import pytest

from device.muxer import FragmentInfo
from hardware.frames import AudioBlock, VideoFrame

WIDTH, HEIGHT, FPS = 320, 180, 15
GOP = 15  # a keyframe every second
AUDIO_RATE = 48_000
CLIP_FRAMES = 8 * FPS
COUNTER_BITS = 16
STRIPE = WIDTH // COUNTER_BITS
CAPTURE_EPOCH_US = 5_000_000_000  # an arbitrary monotonic-clock reading


def counter_picture(number: int) -> np.ndarray:
    """A grey picture showing ``number`` in binary as 16 black/white vertical stripes."""
    luma = np.full((HEIGHT, WIDTH), 16, np.uint8)
    for bit in range(COUNTER_BITS):
        if number >> bit & 1:
            luma[:, bit * STRIPE : (bit + 1) * STRIPE] = 235
    return luma


def read_counter(luma: np.ndarray) -> int:
    """Inverse of :func:`counter_picture`, robust to compression noise."""
    number = 0
    for bit in range(COUNTER_BITS):
        stripe = luma[:, bit * STRIPE + 4 : (bit + 1) * STRIPE - 4]
        if stripe.mean() > 128:
            number |= 1 << bit
    return number


@dataclass(frozen=True)
class EncodedClip:
    """Camera-like output: access units in capture order, frame i shows counter i."""

    access_units: list[bytes]
    keyframes: list[bool]

    def frames(self, jitter_us: int = 0, seed: int = 0) -> list[VideoFrame]:
        """VideoFrames on the capture clock, each timestamp moved by up to ``jitter_us``."""
        rng = np.random.default_rng(seed)
        frames = []
        for i, (data, keyframe) in enumerate(zip(self.access_units, self.keyframes, strict=True)):
            nominal = CAPTURE_EPOCH_US + i * 1_000_000 // FPS
            jitter = int(rng.integers(-jitter_us, jitter_us + 1)) if jitter_us else 0
            frames.append(VideoFrame(data, nominal + jitter, keyframe, 1000 + i))
        return frames


def encode_clip(gop: int) -> EncodedClip:
    """Encode CLIP_FRAMES counter pictures with a keyframe every ``gop`` frames."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = WIDTH, HEIGHT
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, FPS)
    encoder.framerate = Fraction(FPS)
    # Like the Pi's encoder: no B-frames, fixed GOP, SPS/PPS repeated at every IDR.
    encoder.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
    }
    units: list[bytes] = []
    keyframes: list[bool] = []
    chroma = np.full((HEIGHT // 2, WIDTH // 2), 128, np.uint8)
    for i in range(CLIP_FRAMES):
        luma = counter_picture(i)
        planes = np.concatenate([luma.ravel(), chroma.ravel(), chroma.ravel()])
        frame = av.VideoFrame.from_ndarray(
            planes.reshape(HEIGHT * 3 // 2, WIDTH), format="yuv420p"
        )
        frame.pts = i
        frame.time_base = Fraction(1, FPS)
        for packet in encoder.encode(frame):
            units.append(bytes(packet))
            keyframes.append(packet.is_keyframe)
    for packet in encoder.encode(None):
        units.append(bytes(packet))
        keyframes.append(packet.is_keyframe)
    assert len(units) == CLIP_FRAMES
    return EncodedClip(units, keyframes)


@pytest.fixture(scope="session")
def clip() -> EncodedClip:
    """8 s at 15 fps, a keyframe every second."""
    return encode_clip(GOP)


@pytest.fixture(scope="session")
def long_gop_clip() -> EncodedClip:
    """8 s at 15 fps, a keyframe every 3 s: fragments must be cut between keyframes."""
    return encode_clip(3 * FPS)


def audio_blocks(
    pcm: np.ndarray, start_us: int, seed: int = 0, sizes: tuple[int, int] = (700, 2500)
) -> list[AudioBlock]:
    """Cut ``pcm`` into blocks of random length stamped with their capture time."""
    rng = np.random.default_rng(seed)
    blocks, at = [], 0
    while at < len(pcm):
        size = int(rng.integers(*sizes))
        timestamp = start_us + at * 1_000_000 // AUDIO_RATE
        blocks.append(AudioBlock(pcm[at : at + size], timestamp, AUDIO_RATE))
        at += size
    return blocks


@pytest.fixture(scope="session")
def pcm() -> np.ndarray:
    """8.5 s of a tone with noise: realistic enough for FLAC, unique sample by sample."""
    rng = np.random.default_rng(7)
    t = np.arange(int(8.5 * AUDIO_RATE)) / AUDIO_RATE
    tone = 6000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 800, t.size)
    return np.clip(tone, -32768, 32767).astype(np.int16)


@dataclass
class StrictSink:
    """The muxer's sink in tests: keeps what it is given; notes any call a stream writer
    must not make (seek, tell, seekable and flush are there so a writer would find them)."""

    data: bytearray = field(default_factory=bytearray)
    forbidden_calls: list[str] = field(default_factory=list)
    fragment_ends: list[FragmentInfo] = field(default_factory=list)

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def on_fragment_end(self, fragment: FragmentInfo) -> None:
        assert fragment.end_offset == len(self.data)  # signalled after its last byte
        self.fragment_ends.append(fragment)

    def seek(self, *args: object) -> int:
        self.forbidden_calls.append("seek")
        return 0

    def tell(self) -> int:
        self.forbidden_calls.append("tell")
        return len(self.data)

    def seekable(self) -> bool:
        self.forbidden_calls.append("seekable")
        return True

    def flush(self) -> None:
        self.forbidden_calls.append("flush")


def wait_for(condition, timeout: float = 2.0) -> bool:
    """True once ``condition()`` holds, polling for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()
