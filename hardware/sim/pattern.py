"""The simulator's test picture.

Every simulated frame carries its frame index machine-readably
(:mod:`hardware.frame_index`, re-exported here) on a mid-grey picture. Under
the cells the index and the time since the epoch are printed as text, and a bar
moves across the middle so motion is visible.

    >>> import numpy as np
    >>> picture = TestPicture(640, 360, fps=30)
    >>> yuv = picture.render(1234)
    >>> read_frame_index(yuv[:360])
    1234
"""

from __future__ import annotations

import numpy as np

from hardware.frame_index import (  # noqa: F401 - re-exported: the simulator's picture format
    _WHITE,
    CELL,
    GREY,
    INDEX_BITS,
    draw_frame_index,
    index_layout,
    luma_plane,
    read_frame_index,
)
from hardware.overlay import OverlayText, draw_text, overlay_scale, text_size


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
