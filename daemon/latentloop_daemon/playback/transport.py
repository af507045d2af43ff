"""Transport math: tempo, meter and bar positions on the stream's sample clock, exactly.

A bar is rarely a whole number of samples (127 BPM at 44.1 kHz: 83,338.58 frames per 4/4
bar), so positions are kept as exact fractions and only rounded when a sample index is
needed: bar ``k`` starts at ``round(origin + (k - bar0) x frames_per_bar)``. Rounding each
position from the exact value (never adding rounded lengths) keeps the drift of any bar
against the ideal grid at most half a sample, however many bars have passed.

A ``Grid`` is immutable and published to the audio callback by swapping one reference. A tempo
change makes a new grid whose first bar is the next bar boundary of the old one (the change
takes effect on the next bar); bars before it keep the old grid's positions through
``before``. The callback only evaluates ``bar_frame`` with plain integer arithmetic on the
grid's precomputed numerator and denominator (no ``Fraction`` objects on the audio thread).

Pure functions and immutable values; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd

from latentloop_bridge.spec import QUANTIZE

"""Launch quantization, as the protocol spells it (`docs/protocol.md`)."""


def frames_per_beat(bpm: float | Fraction, sample_rate: int) -> Fraction:
    """Samples per beat at ``bpm`` and ``sample_rate``, exactly (``bpm`` at its binary value)."""
    return Fraction(60 * sample_rate) / Fraction(bpm)


def _round_half_up(num: int, den: int) -> int:
    """round(num / den) with halves going up, for den > 0 (integer arithmetic only)."""
    return (2 * num + den) // (2 * den)


@dataclass(frozen=True, slots=True)
class Grid:
    """The beat grid: beat ``beat0`` (the first of bar ``bar0``) starts at exact frame
    ``origin``; ``bpm`` and the meter hold from there on.

    Beats are counted globally from bar 0 across meter changes, so a loop can be anchored to a
    beat number (``Voice.anchor_beat``). ``before`` positions everything before ``bar0`` (the
    tempo before a change).
    """

    bpm: Fraction
    beats_per_bar: int
    sample_rate: int
    origin: Fraction  # exact frame of bar ``bar0`` on the stream's clock
    bar0: int = 0
    beat0: int = 0
    before: Grid | None = None
    # integer form of origin + (n - beat0) x frames_per_beat = (num0 + n x step) / den
    _num0: int = field(init=False, repr=False, compare=False)
    _step: int = field(init=False, repr=False, compare=False)
    _den: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bpm <= 0 or self.beats_per_bar < 1 or self.sample_rate < 1:
            raise ValueError("bpm, beats_per_bar and sample_rate must be positive")
        fpb = self.frames_per_beat
        den = (
            fpb.denominator
            * self.origin.denominator
            // gcd(fpb.denominator, self.origin.denominator)
        )
        step = int(fpb * den)
        object.__setattr__(self, "_den", den)
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_num0", int(self.origin * den) - self.beat0 * step)

    @property
    def frames_per_beat(self) -> Fraction:
        return frames_per_beat(self.bpm, self.sample_rate)

    @property
    def frames_per_bar(self) -> Fraction:
        return self.frames_per_beat * self.beats_per_bar

    def first_beat(self, bar: int) -> int:
        """The global number of the first beat of ``bar``."""
        if bar < self.bar0 and self.before is not None:
            return self.before.first_beat(bar)
        return self.beat0 + (bar - self.bar0) * self.beats_per_bar

    def beat_position(self, beat: int) -> Fraction:
        """Exact frame where global beat ``beat`` starts."""
        if beat < self.beat0 and self.before is not None:
            return self.before.beat_position(beat)
        return self.origin + (beat - self.beat0) * self.frames_per_beat

    def beat_frame(self, beat: int) -> int:
        """The sample where global beat ``beat`` starts (rounded from its exact position).

        Audio-thread safe for beats at or after ``beat0``: integer arithmetic only.
        """
        if beat < self.beat0 and self.before is not None:
            return self.before.beat_frame(beat)
        return _round_half_up(self._num0 + beat * self._step, self._den)

    def beat_frame_here(self, beat: int) -> int:
        """Like ``beat_frame`` but always at this grid's tempo, also before ``beat0`` (where a
        loop re-conformed to this tempo would have started its repeat)."""
        return _round_half_up(self._num0 + beat * self._step, self._den)

    def bar_position(self, bar: int) -> Fraction:
        """Exact frame where ``bar`` starts."""
        return self.beat_position(self.first_beat(bar))

    def bar_frame(self, bar: int) -> int:
        """The sample where ``bar`` starts."""
        return self.beat_frame(self.first_beat(bar))

    def beat_at(self, frame: int | Fraction) -> int:
        """The global beat that contains ``frame`` (floor)."""
        if self.before is not None and frame < self.origin:
            return self.before.beat_at(frame)
        return self.beat0 + _floor((Fraction(frame) - self.origin) / self.frames_per_beat)

    def bar_at(self, frame: int | Fraction) -> int:
        """The bar that contains ``frame`` (floor; negative before bar 0)."""
        if self.before is not None and frame < self.origin:
            return self.before.bar_at(frame)
        return self.bar0 + _floor((Fraction(frame) - self.origin) / self.frames_per_bar)

    def beat_in_bar(self, frame: int | Fraction) -> float:
        """Position of ``frame`` within its bar, in beats: 0 <= beat < beats_per_bar."""
        bar = self.bar_at(frame)
        grid = self if bar >= self.bar0 or self.before is None else self.before
        return float((Fraction(frame) - grid.bar_position(bar)) / grid.frames_per_beat)

    def next_boundary(self, frame: int, quantize: str) -> tuple[int, int]:
        """The first launch boundary at or after sample ``frame``: (sample, global beat).

        ``now`` is ``frame`` itself (its beat is the one containing it); ``beat`` the next
        beat; ``bar``/``2bar``/``4bar`` the next bar whose index is a multiple of 1, 2 or 4
        (counted from bar 0).
        """
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
        if quantize == "now":
            return frame, self.beat_at(frame)
        if quantize == "beat":
            beat = self.beat_at(frame)
            while self.beat_frame(beat) < frame:
                beat += 1
            return self.beat_frame(beat), beat
        every = {"bar": 1, "2bar": 2, "4bar": 4}[quantize]
        bar = self.bar_at(frame)
        bar += -bar % every
        while self.bar_frame(bar) < frame:
            bar += every
        return self.bar_frame(bar), self.first_beat(bar)

    def bar_of_beat(self, beat: int) -> int:
        """The bar that global beat ``beat`` lies in."""
        if beat < self.beat0 and self.before is not None:
            return self.before.bar_of_beat(beat)
        return self.bar0 + (beat - self.beat0) // self.beats_per_bar

    def with_tempo(self, bpm: float | Fraction, beats_per_bar: int, from_bar: int) -> Grid:
        """This grid with a new tempo/meter from bar ``from_bar`` on (earlier bars unchanged)."""
        return Grid(
            Fraction(bpm), beats_per_bar, self.sample_rate, self.bar_position(from_bar),
            from_bar, self.first_beat(from_bar), before=self._trimmed(),
        )  # fmt: skip

    def shifted(self, frames: Fraction) -> Grid:
        """The same tempo with every position moved by ``frames`` (a phase correction)."""
        return Grid(
            self.bpm, self.beats_per_bar, self.sample_rate, self.origin + frames,
            self.bar0, self.beat0,
        )  # fmt: skip

    def _trimmed(self) -> Grid:
        """Self without its history: only beats just before a change are ever asked for."""
        if self.before is None:
            return self
        return Grid(
            self.bpm, self.beats_per_bar, self.sample_rate, self.origin, self.bar0, self.beat0
        )


def start_grid(bpm: float | Fraction, beats_per_bar: int, sample_rate: int, frame: int) -> Grid:
    """A grid whose bar 0 starts exactly at sample ``frame`` (a transport starting there)."""
    return Grid(Fraction(bpm), beats_per_bar, sample_rate, Fraction(frame))


def loop_bars_frames(bars: float, grid: Grid) -> int:
    """Frames of ``bars`` bars at the grid's tempo (rounded): the length a conformed clip gets."""
    return round(Fraction(bars) * grid.frames_per_bar)


def _floor(value: Fraction) -> int:
    return value.numerator // value.denominator
