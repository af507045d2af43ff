"""Transport math: exact bar positions, quantized boundaries, tempo changes on the next bar."""

from fractions import Fraction

import pytest

from latentloop_daemon.playback.transport import Grid, start_grid


def test_127_bpm_bars_never_drift():
    grid = start_grid(127, 4, 44100, 1000)
    exact = Fraction(4 * 60 * 44100, 127)  # 83,338.58 frames per bar
    assert float(grid.frames_per_bar) == pytest.approx(83338.58, abs=0.01)
    for bar in (1, 7, 100, 1000, 10_000):
        assert abs(grid.bar_frame(bar) - (1000 + bar * exact)) <= Fraction(1, 2)
        assert grid.bar_frame(bar) == round(1000 + bar * exact)


def test_integer_form_matches_exact_positions():
    grid = start_grid(Fraction(127.3), 3, 48000, 12345)
    for beat in range(0, 5000, 37):
        assert abs(grid.beat_frame(beat) - grid.beat_position(beat)) <= Fraction(1, 2)


@pytest.mark.parametrize(
    ("quantize", "expected_bar"), [("bar", 3), ("2bar", 4), ("4bar", 4), ("beat", 2)]
)
def test_next_boundary(quantize, expected_bar):
    grid = start_grid(120, 4, 48000, 0)  # 96,000 frames per bar, 24,000 per beat
    frame = 2 * 96000 + 24000 + 5  # bar 2, just after beat 1
    at, beat = grid.next_boundary(frame, quantize)
    assert grid.bar_of_beat(beat) == expected_bar
    if quantize == "beat":
        assert at == 2 * 96000 + 48000 and beat == 10
    else:
        assert at == expected_bar * 96000
    assert grid.next_boundary(96000, "bar") == (96000, 4)  # on a boundary: that one
    assert grid.next_boundary(frame, "now") == (frame, 9)


def test_tempo_change_keeps_earlier_bars_and_starts_on_the_bar():
    grid = start_grid(120, 4, 48000, 0)
    changed = grid.with_tempo(90, 3, 5)
    assert [changed.bar_frame(b) for b in range(6)] == [b * 96000 for b in range(6)]
    assert changed.bar_frame(6) == 5 * 96000 + 96000  # 3 beats at 90 BPM = 2 s
    assert changed.first_beat(6) == 23 and changed.bar_at(5 * 96000 + 1) == 5
    assert changed.bar_of_beat(19) == 4 and changed.bar_of_beat(20) == 5


def test_grid_rejects_nonsense():
    with pytest.raises(ValueError):
        Grid(Fraction(0), 4, 48000, Fraction(0))
