"""A machine-readable frame index in a picture: drawn into a frame, read back after decoding.

32 cells of 16x16 pixels in the top-left corner, most significant bit first,
white = 1 and black = 0. When the frame is narrower than 512 px the cells wrap
onto further rows of the same strip. The simulated camera's test picture
(``hardware.sim.pattern``) and the sample recording (``device.sample``) carry
it, so a decoded file says which frames it holds: a format, like
:mod:`hardware.overlay`'s text, not a device.

    >>> import numpy as np
    >>> luma = np.full((64, 640), GREY, np.uint8)
    >>> draw_frame_index(luma, 1234)
    >>> read_frame_index(luma)
    1234
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardware.overlay import INK, PAPER

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
    """Read the frame index back from a decoded frame.

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
