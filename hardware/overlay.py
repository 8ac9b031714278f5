"""Burned-in text for video frames: a tiny bitmap font drawn into the luma plane.

Both the real camera (in picamera2's ``pre_callback``) and the simulator draw the
overlay with this module, so what a technician sees on the simulator is what the
Pi burns in. It needs nothing but numpy: no OpenCV or Pillow on the recorder.

    >>> import numpy as np
    >>> luma = np.zeros((180, 320), np.uint8)
    >>> width = draw_text(luma, "DEV-0001", x=4, y=4, scale=2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

# 5x7 glyphs, one string of five cells per row; "#" is ink. Lower case is drawn as
# upper case: the overlay must stay legible at 1 px per cell, not be pretty.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    " ": (".....",) * 7,
    ":": (".....", "..#..", "..#..", ".....", "..#..", "..#..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "/": ("....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "#": (".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
}

GLYPH_W, GLYPH_H = 5, 7
ADVANCE = GLYPH_W + 1  # one blank column between characters
INK, PAPER = 235, 16  # video-range white on black, so the text survives any grey


@lru_cache(maxsize=512)
def _glyph(char: str, scale: int) -> np.ndarray:
    rows = _GLYPHS.get(char.upper(), _GLYPHS["?"])
    cells = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    return np.kron(cells, np.ones((scale, scale), dtype=bool))


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """Width and height in pixels that :func:`draw_text` covers, background included."""
    return (len(text) * ADVANCE + 1) * scale, (GLYPH_H + 2) * scale


def draw_text(
    luma: np.ndarray, text: str, x: int, y: int, scale: int = 1, *, background: bool = True
) -> int:
    """Draw ``text`` into a 2-D uint8 plane with its top-left corner at (x, y).

    Characters outside the font show as ``?``; anything off the plane is clipped.
    Returns the width drawn in pixels.
    """
    height, width = luma.shape[:2]
    box_w, box_h = text_size(text, scale)
    if background:
        luma[max(0, y) : min(height, y + box_h), max(0, x) : min(width, x + box_w)] = PAPER
    top = y + scale
    for i, char in enumerate(text):
        left = x + (i * ADVANCE + 1) * scale
        if left >= width:
            break
        mask = _glyph(char, scale)
        # Clip the glyph to the plane.
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(height, top + mask.shape[0]), min(width, left + mask.shape[1])
        if y1 <= y0 or x1 <= x0:
            continue
        region = luma[y0:y1, x0:x1]
        region[mask[y0 - top : y1 - top, x0 - left : x1 - left]] = INK
    return box_w


def overlay_scale(height: int) -> int:
    """A text scale readable at every size: 1 at 180p, 2 at 360p, 3 at 720p, 4 at 1080p."""
    return max(1, round(height / 240))


@dataclass(slots=True)
class OverlayText:
    """What the camera burns into the bottom-left of every frame.

    Time (UTC, to the second), device id and officer id: what GA/T practice expects
    a reviewer to see in the picture itself.
    """

    device_id: str = ""
    officer_id: str = ""
    wall_clock: Callable[[], float] = field(default=time.time)  # POSIX seconds

    def line(self, wall: float | None = None) -> str:
        now = self.wall_clock() if wall is None else wall
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        parts = [stamp]
        if self.device_id:
            parts.append(f"DEV {self.device_id}")
        if self.officer_id:
            parts.append(f"OFC {self.officer_id}")
        return "  ".join(parts)

    def draw(self, luma: np.ndarray, wall: float | None = None) -> None:
        """Draw the overlay line into the bottom-left corner of a luma plane."""
        height = luma.shape[0]
        scale = overlay_scale(height)
        _, box_h = text_size("X", scale)
        draw_text(luma, self.line(wall), x=2 * scale, y=height - box_h - 2 * scale, scale=scale)
