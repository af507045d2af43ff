"""Loop length: tempo and bars -> an exact number of samples. The one place this is computed.

n = round(bars x beats_per_bar x 60 x sample_rate / bpm), in exact rational arithmetic (the
float inputs are taken at their exact binary values), rounding half to even.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class LoopLength:
    """A requested length: ``frames`` at ``sample_rate``, and the musical terms it came from."""

    frames: int
    sample_rate: int
    bpm: float | None
    bars: float | None
    beats_per_bar: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def actual_bpm(self) -> float | None:
        """The tempo the frame count really encodes: beats x 60 x rate / frames."""
        if self.bars is None:
            return None
        beats = Fraction(self.bars) * self.beats_per_bar
        return float(beats * 60 * self.sample_rate / self.frames)


def loop_frames(bpm: float, bars: float, beats_per_bar: int, sample_rate: int) -> int:
    """Samples in ``bars`` bars of ``beats_per_bar`` beats at ``bpm``, at ``sample_rate`` Hz."""
    if bpm <= 0 or bars <= 0 or beats_per_bar <= 0 or sample_rate <= 0:
        raise ValueError("bpm, bars, beats_per_bar and sample_rate must be positive")
    exact = Fraction(bars) * beats_per_bar * 60 * sample_rate / Fraction(bpm)
    return round(exact)


def loop_length(
    sample_rate: int,
    *,
    bpm: float | None = None,
    bars: float | None = None,
    beats_per_bar: int = 4,
    seconds: float | None = None,
) -> LoopLength:
    """The length of a request given either bpm + bars or seconds (exactly one of the two)."""
    if seconds is not None and (bpm is not None or bars is not None):
        raise ValueError("give bpm and bars, or seconds, not both")
    if bpm is not None and bars is not None:
        frames = loop_frames(bpm, bars, beats_per_bar, sample_rate)
    elif seconds is not None and bpm is None and bars is None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        frames = round(Fraction(seconds) * sample_rate)
    else:
        raise ValueError("give bpm and bars, or seconds")
    if frames < 1:
        raise ValueError("the requested length is shorter than one sample")
    return LoopLength(frames, sample_rate, bpm, bars, beats_per_bar)
