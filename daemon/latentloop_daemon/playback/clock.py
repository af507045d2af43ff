"""The stream's sample clock against the other clocks (stream time, wall clock, Link's clock).

Two sources of error make a single reading unreliable on a loaded machine, and each is filtered
here instead of being trusted:

- A callback's ``outputBufferDacTime`` is taken when the callback *runs*. Some host APIs
  (PortAudio's JACK backend among them) derive it from "now" rather than from the period's
  start, so a callback that is woken late reports its block as heard later than it is. Lateness
  only ever adds, so ``StreamClock`` keeps the smallest ``dac - frame / rate`` of the blocks of
  the last half second: the least-delayed block's view of when frame 0 is heard.
- Converting between two clocks reads both; a thread preempted between the two reads (the
  interpreter lock, a busy core) puts milliseconds between them. ``paired`` reads the pair
  again until the two reads are close together, and keeps the closest pair it saw.

Threads: ``StreamClock.observe`` runs on the player's control thread; ``offset`` is one float
attribute, replaced whole, so any thread may read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

WINDOW_S = 0.5  # blocks older than this (stream samples) no longer vote on the offset
TIGHT_PAIR_S = 2e-4  # two clock reads closer than this are taken as simultaneous
PAIR_TRIES = 8


def paired(read_a: Callable[[], float], read_b: Callable[[], float]) -> tuple[float, float]:
    """``(read_a(), read_b())`` taken as nearly at the same moment as this thread can manage.

    Reads the pair up to ``PAIR_TRIES`` times and returns the one whose two reads were closest
    together (stopping at the first within ``TIGHT_PAIR_S``).
    """
    best = (float("inf"), 0.0, 0.0)
    for _ in range(PAIR_TRIES):
        t0 = time.perf_counter()
        a = read_a()
        b = read_b()
        gap = time.perf_counter() - t0
        if gap < best[0]:
            best = (gap, a, b)
        if gap < TIGHT_PAIR_S:
            break
    return best[1], best[2]


class StreamClock:
    """When each sample of the stream is heard, in stream time (seconds, PortAudio's clock).

    ``offset`` is the stream time at which frame 0 would be heard: frame ``f`` is heard at
    ``f / rate + offset``. It is the minimum over the blocks of the last ``WINDOW_S`` of
    ``dac_time - first_frame / rate``, so one late callback cannot move it, and a real change
    (an xrun that drops samples) is followed within ``WINDOW_S``.
    """

    def __init__(self, rate: int, capacity: int = 512) -> None:
        self.rate = rate
        self.offset: float | None = None
        self._frames = np.full(capacity, -np.inf)  # -inf: an empty entry never votes
        self._offsets = np.zeros(capacity)
        self._count = 0
        self._last_frame = -1
        self._reported = False  # has any block carried a DAC time?

    def observe(self, frame0: int, dac_time: float, now_time: float, latency_s: float) -> None:
        """Take the last block's clock reading (``Mixer.read_clock``); control thread only.

        A host API that reports no DAC time (``dac_time <= now_time``) is read as heard
        ``latency_s`` after the callback, until a block carries a real DAC time: from then on
        only real ones count (PortAudio's JACK backend reports none for the first block, and
        its stream latency is shorter than the real one).
        """
        if frame0 == self._last_frame or frame0 < 0:
            return
        self._last_frame = frame0
        if dac_time <= now_time:  # no DAC time in this report
            if self._reported:
                return  # the host reports DAC times: a guess never votes among them
            dac_time = now_time + latency_s
        elif not self._reported:  # the first real report: forget the guesses before it
            self._reported = True
            self._frames.fill(-np.inf)
        i = self._count % self._frames.shape[0]
        self._frames[i] = frame0
        self._offsets[i] = dac_time - frame0 / self.rate
        self._count += 1
        recent = self._frames >= frame0 - WINDOW_S * self.rate
        self.offset = float(self._offsets[recent].min())

    def heard_at(self, frame: int) -> float:
        """The stream time at which ``frame`` is heard (``observe`` must have run once)."""
        assert self.offset is not None
        return frame / self.rate + self.offset

    def frame_heard_at(self, stream_time: float) -> int:
        """The frame heard at ``stream_time`` (floor)."""
        assert self.offset is not None
        return int(np.floor((stream_time - self.offset) * self.rate))
