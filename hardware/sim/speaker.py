"""Simulated speaker: takes as long as the prompt lasts and remembers what it played.

    >>> speaker = SimSpeaker(realtime=False)
    >>> speaker.play(np.zeros(4800, np.int16), rate=48000)
    >>> speaker.played[-1].seconds
    0.1

A speaker may be wired to a :class:`~hardware.sim.microphone.SimMicrophone` with
``echo_into=mic`` so the prompt is heard in the recording, as in the real device.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hardware.speaker import Prompt, Speaker


class SimSpeaker(Speaker):
    def __init__(self, *, realtime: bool = True, echo_into: object | None = None) -> None:
        super().__init__()
        self.realtime = realtime
        self.echo_into = echo_into
        self.when_played: Callable[[Prompt], None] | None = None

    def _play(self, prompt: Prompt) -> None:
        speak = getattr(self.echo_into, "speak", None)
        if speak is not None and getattr(self.echo_into, "rate", None) == prompt.rate:
            speak(samples=(prompt.samples.astype(np.float64) / 32768) * 0.3)
        if self.realtime:
            time.sleep(prompt.seconds)
        if self.when_played is not None:
            self.when_played(prompt)
