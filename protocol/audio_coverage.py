"""Whether each segment's sound covers its time: a hole in the audio track is a gap too.

A ``segment`` entry does not say *where* its audio lies, only how much it
holds (``audio_samples`` at ``audio_rate``) and how long the segment is
(``last_capture − first_capture + frame_period``). The device cuts audio at
the exact sample at every segment boundary, so a segment of a recording that
has sound holds audio for its whole time. What it holds less than that (its
*shortfall*) is audio that is missing: a microphone that went silent, or
sound the device could not place. The verifier can tell that and how much,
not where in the segment it is (ADR 0064).

The rule, per recording:

* A recording none of whose segments so far holds any audio is video only (a
  device without a microphone, or one silent from the start: the device's
  watchdog declares that with a ``mic_fault``); nothing is judged.
* The first segment of a span may begin before the span's ``record_start`` or
  ``resume`` entry, by up to the recording's ``pre_record_seconds`` (its
  pre-record buffer): audio from before that entry's time is optional
  (``pre_record_audio`` off, a microphone started after the camera) and
  counts as held.
* A shortfall above the tolerance is an *audio gap*. It is declared by an
  interruption of the recording that lies in the ledger between the segment
  before it and the segment after it; a silence that goes on into the next
  segments stays declared until a segment holds its audio in full. Otherwise
  it is the error ``undeclared_audio_gap``.

Pure: entries in, gaps and findings out.

    >>> track = AudioTrack(tolerance_ns=250_000_000, pre_record_ns=0)
    >>> track.span_begins(0)
    >>> track.segment(7, first_ns=0, last_ns=9 * 10**8, period_ns=10**8,
    ...               samples=48_000, rate=48_000, interruption=None)
    []
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.report import AudioGap


@dataclass
class AudioTrack:
    """One recording's audio coverage, as its entries come (ledger order)."""

    tolerance_ns: int
    pre_record_ns: int  # the recording's pre_record_seconds
    recording: int = 0
    gaps: list[AudioGap] = field(default_factory=list)  # every audio gap found, in order
    heard: bool = False  # some segment of it held audio: it records sound
    _span_from_ns: int | None = None  # the span's entry time, for its first segment only
    _open: AudioGap | None = None  # a declared hole that may go on into the next segment
    _unclaimed: list[AudioGap] = field(default_factory=list)  # holes awaiting a declaration

    def span_begins(self, entry_utc_ns: int) -> None:
        """A ``record_start`` or ``resume`` of this recording, at its entry's time."""
        self._span_from_ns = entry_utc_ns

    def segment(self, seq: int, *, first_ns: int, last_ns: int, period_ns: int, samples: int,
                rate: int, interruption: int | None) -> list[AudioGap]:
        """Judge one segment. ``interruption``: the first interruption of the recording
        since its previous segment, if any. Returns the audio gaps now known to be
        undeclared (earlier holes that a full segment, not a declaration, followed)."""
        span_from, self._span_from_ns = self._span_from_ns, None
        self.heard = self.heard or samples > 0
        if not self.heard or rate <= 0:
            return []
        duration_ns = last_ns - first_ns + period_ns
        if span_from is not None:  # the pre-record part of a span's first segment
            duration_ns -= min(max(0, span_from - first_ns), self.pre_record_ns, duration_ns)
        shortfall_ns = duration_ns - samples * 1_000_000_000 // rate
        if shortfall_ns <= self.tolerance_ns:
            self._open = None
            undeclared, self._unclaimed = self._unclaimed, []
            return undeclared
        gap = AudioGap(self.recording, seq, first_ns, shortfall_ns / 1e9, declared=False)
        if interruption is not None:
            self._declare(gap, interruption)
        elif self._open is not None and self._open.interruption is not None:
            self._declare(gap, self._open.interruption)  # the silence goes on
        else:
            self._unclaimed.append(gap)
        self.gaps.append(gap)
        return []

    def interrupted(self, interruption: int) -> None:
        """An interruption of this recording: it declares the holes just before it."""
        for gap in self._unclaimed:
            self._declare(gap, interruption)
        self._unclaimed = []

    def finish(self) -> list[AudioGap]:
        """The ledger ends: holes no interruption followed are undeclared."""
        undeclared, self._unclaimed = self._unclaimed, []
        return undeclared

    def _declare(self, gap: AudioGap, interruption: int) -> None:
        gap.declared, gap.interruption = True, interruption
        self._open = gap
