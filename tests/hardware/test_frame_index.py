"""The simulator's machine-readable frame index, and the burned-in overlay text."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from hardware.camera import CameraConfig
from hardware.overlay import INK, OverlayText, draw_text, overlay_scale, text_size
from hardware.sim.camera import open_encoder
from hardware.sim.pattern import (
    CELL,
    GREY,
    TestPicture,
    draw_frame_index,
    index_layout,
    read_frame_index,
)


@pytest.mark.parametrize("width", [320, 512, 640, 1280])
@pytest.mark.parametrize("index", [0, 1, 0x80000000, 0xFFFFFFFF, 123_456_789])
def test_index_round_trips_in_raw_pictures(width: int, index: int) -> None:
    luma = np.full((360, width), GREY, np.uint8)
    draw_frame_index(luma, index)
    assert read_frame_index(luma) == index


def test_layout_is_32_cells_msb_first() -> None:
    assert index_layout(640) == (32, 1)
    assert index_layout(320) == (20, 2)  # narrower frames wrap onto a second row
    luma = np.full((64, 640), GREY, np.uint8)
    draw_frame_index(luma, 1 << 31)
    first, second = luma[8, 8], luma[8, CELL + 8]
    assert first > 200 and second < 50  # bit 31 is the first (left-most) cell
    assert luma[8, 31 * CELL + 8] < 50 and luma[CELL + 8, 8] == GREY  # 32 cells, one strip


def test_pictures_without_an_index_are_refused() -> None:
    with pytest.raises(ValueError):
        read_frame_index(np.full((180, 320), GREY, np.uint8))
    noise = np.random.default_rng(1).integers(0, 256, (180, 320), dtype=np.uint8)
    with pytest.raises(ValueError):
        read_frame_index(noise)
    with pytest.raises(ValueError):
        draw_frame_index(np.zeros((32, 640), np.uint8), 1 << 32)


def test_index_survives_h264_at_low_bitrate() -> None:
    config = CameraConfig(width=320, height=180, fps=30, bitrate=150_000, keyframe_interval=15)
    ctx = open_encoder(config)
    picture = TestPicture(320, 180, 30)
    overlay = OverlayText("BWC-7", "OFC-1")
    indices = [5_000_000 + 7 * i for i in range(40)]
    stream = b""
    for i in indices:
        frame = av.VideoFrame.from_ndarray(picture.render(i, overlay), format="yuv420p")
        frame.pts = i
        stream += b"".join(bytes(p) for p in ctx.encode(frame))
    stream += b"".join(bytes(p) for p in ctx.encode(None))
    decoded = [read_frame_index(f) for f in av.open(io.BytesIO(stream), format="h264").decode()]
    assert decoded == indices
    rgb = av.open(io.BytesIO(stream), format="h264")
    first = next(rgb.decode(video=0)).to_ndarray(format="rgb24")
    assert read_frame_index(first) == indices[0]  # RGB pictures are read too


def test_text_is_drawn_inside_its_box_and_clipped() -> None:
    luma = np.full((40, 100), GREY, np.uint8)
    width = draw_text(luma, "12:34", 2, 3, scale=2)
    box_w, box_h = text_size("12:34", 2)
    assert width == box_w
    ink = np.argwhere(luma == INK)
    assert len(ink) > 50
    assert ink[:, 0].min() >= 3 and ink[:, 0].max() < 3 + box_h
    assert ink[:, 1].min() >= 2 and ink[:, 1].max() < 2 + box_w
    draw_text(luma, "X" * 100, 90, 35, scale=3)  # off the edge: clipped, no error
    assert luma.shape == (40, 100)


def test_overlay_line_carries_time_device_and_officer() -> None:
    overlay = OverlayText("BWC-0001", "4711", wall_clock=lambda: 1_700_000_000.0)
    assert overlay.line() == "2023-11-14 22:13:20Z  DEV BWC-0001  OFC 4711"
    a = np.full((360, 640), GREY, np.uint8)
    b = a.copy()
    overlay.draw(a)
    OverlayText("BWC-0001", "4712", wall_clock=lambda: 1_700_000_000.0).draw(b)
    bottom = slice(360 - 12 * overlay_scale(360), 360)
    assert (a[bottom] == INK).sum() > 100
    assert not np.array_equal(a[bottom], b[bottom])  # another officer, another picture
    assert np.array_equal(a[:300], b[:300])  # the overlay stays at the bottom
