"""Loop length math: exact sample counts for every tempo, meter, length and rate."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentloop_daemon.loops.length import loop_frames, loop_length


def test_known_values():
    assert loop_frames(120, 4, 4, 44100) == 352800  # 8 s exactly
    assert loop_frames(90, 1, 4, 44100) == 117600
    assert loop_frames(174, 2, 4, 48000) == 132414  # 132413.79... rounds up
    assert loop_frames(100, 3, 3, 44100) == 238140
    assert loop_length(44100, seconds=1.5).frames == 66150


@given(
    bpm=st.floats(20, 999, allow_nan=False),
    bars=st.integers(1, 64),
    beats=st.integers(1, 32),
    rate=st.sampled_from([22050, 32000, 44100, 48000, 96000]),
)
def test_frames_are_the_nearest_integer_and_tempo_round_trips(bpm, bars, beats, rate):
    n = loop_frames(bpm, bars, beats, rate)
    exact = Fraction(bars * beats * 60 * rate) / Fraction(bpm)
    assert abs(n - exact) <= Fraction(1, 2)
    length = loop_length(rate, bpm=bpm, bars=bars, beats_per_bar=beats)
    assert length.frames == n
    # the tempo written to files is the one the frame count encodes: within half a sample
    assert abs(length.actual_bpm - bpm) <= bpm / (2 * n) + 1e-9 * bpm


@pytest.mark.parametrize(
    "kw",
    [{}, {"bpm": 120}, {"bars": 4}, {"bpm": 120, "bars": 4, "seconds": 2}, {"seconds": 0},
     {"bpm": -1, "bars": 4}, {"seconds": 1e-9}],
)  # fmt: skip
def test_invalid_lengths(kw):
    with pytest.raises(ValueError):
        loop_length(44100, **kw)
