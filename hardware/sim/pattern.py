"""The simulator's test picture, and reading its frame index back from decoded video.

Every simulated frame carries its frame index machine-readably: 32 cells of 16x16
pixels in the top-left corner, most significant bit first, white = 1 and black = 0,
on a mid-grey picture. When the frame is narrower than 512 px the cells wrap onto
further rows of the same strip. Under the cells the index and the time since the
epoch are printed as text, and a bar moves across the middle so motion is visible.

    >>> import numpy as np
    >>> picture = TestPicture(640, 360, fps=30)
    >>> yuv = picture.render(1234)
    >>> read_frame_index(yuv[:360])
    1234
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardware.overlay import INK, PAPER, OverlayText, draw_text, overlay_scale, text_size

CELL = 16
INDEX_BITS = 32
GREY = 128
_BLACK, _WHITE = PAPER, INK
_THRESHOLD = (_BLACK + _WHITE) / 2
# A decoded cell whose mean lies this close to the threshold is not a clean bit:
# the picture is not one of ours (or was damaged), so refuse to guess.
_MARGIN = 45


def index_layout(width: int) -> tuple[int, int]:
    """Cells per row and number of rows used for the index at this frame width."""
    per_row = min(INDEX_BITS, width // CELL)
    if per_row < 1:
        raise ValueError(f"frame width {width} is too small for a {CELL}px index cell")
    rows = -(-INDEX_BITS // per_row)
    return per_row, rows


def draw_frame_index(luma: np.ndarray, index: int) -> None:
    """Write ``index`` (0 <= index < 2**32) into the top-left cells of a luma plane."""
    if not 0 <= index < 1 << INDEX_BITS:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    per_row, _ = index_layout(luma.shape[1])
    for bit in range(INDEX_BITS):
        row, col = divmod(bit, per_row)
        value = (index >> (INDEX_BITS - 1 - bit)) & 1
        luma[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = (
            _WHITE if value else _BLACK
        )


def luma_plane(frame: Any) -> np.ndarray:
    """The luma plane of an ``av.VideoFrame`` or an array (grey 2-D, or RGB HxWx3)."""
    if isinstance(frame, np.ndarray):
        if frame.ndim == 2:
            return frame
        if frame.ndim == 3:
            return frame[..., :3].mean(axis=2)
        raise ValueError(f"expected a 2-D or 3-D picture, got shape {frame.shape}")
    if getattr(frame, "format", None) is not None and frame.format.name in (
        "yuv420p", "yuvj420p", "gray", "nv12",
    ):
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return rows[:, : frame.width]
    return frame.to_ndarray(format="gray")


def read_frame_index(frame: Any) -> int:
    """Read the frame index back from a decoded simulator frame.

    Accepts an ``av.VideoFrame`` or a numpy picture. Raises ``ValueError`` when the
    cells are not clean black/white, i.e. the picture carries no readable index.
    """
    luma = luma_plane(frame)
    per_row, rows = index_layout(luma.shape[1])
    if luma.shape[0] < rows * CELL:
        raise ValueError("frame is too short to hold a frame index")
    # Average the middle 8x8 of every cell; edges blur most under compression.
    cells = luma[: rows * CELL, : per_row * CELL].astype(np.float32)
    cells = cells.reshape(rows, CELL, per_row, CELL)[:, 4:12, :, 4:12].mean(axis=(1, 3))
    means = cells.reshape(-1)[:INDEX_BITS]
    if np.any(np.abs(means - _THRESHOLD) < _MARGIN):
        raise ValueError("no readable frame index in this picture")
    value = 0
    for mean in means:
        value = (value << 1) | int(mean > _THRESHOLD)
    return value


class TestPicture:
    """Renders the simulator's frames as yuv420p arrays of shape (height*3/2, width)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int, height: int, fps: int) -> None:
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs an even width and height")
        self.width, self.height, self.fps = width, height, fps
        _, rows = index_layout(width)
        self._scale = overlay_scale(height)
        self._text_y = rows * CELL + 2 * self._scale
        self._background = np.full((height * 3 // 2, width), GREY, np.uint8)
        # A horizontal ramp in the lower half gives the encoder some texture.
        ramp = np.linspace(60, 200, width, dtype=np.float32).astype(np.uint8)
        self._background[height * 2 // 3 : height - text_size("X", self._scale)[1] - 8] = ramp
        self._buffer = self._background.copy()
        self._bar_w = max(8, width // 16)

    def render(self, index: int, overlay: OverlayText | None = None, wall: float | None = None):
        """The picture for frame ``index``; the returned buffer is reused next call."""
        buf = self._buffer
        np.copyto(buf, self._background)
        luma = buf[: self.height]
        # The bar crosses the frame every two seconds, so a stalled picture shows.
        travel = self.width - self._bar_w
        x = int((index % (2 * self.fps)) / (2 * self.fps) * travel)
        luma[self.height // 3 : self.height * 2 // 3, x : x + self._bar_w] = _WHITE
        draw_frame_index(luma, index)
        seconds = index / self.fps
        draw_text(luma, f"#{index:010d} T+{seconds:.3f}S", 0, self._text_y, self._scale)
        if overlay is not None:
            overlay.draw(luma, wall)
        return buf
