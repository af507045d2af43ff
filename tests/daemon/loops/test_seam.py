"""Seam treatment and seam metrics on synthetic signals whose right answer is known."""

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentloop_daemon.loops.seam import crossfade_curves, make_seamless, seam_metric

SR = 44100


def sine(freq_hz, frames, channels=2, amp=0.5):
    t = np.arange(frames) / SR
    return np.repeat((amp * np.sin(2 * np.pi * freq_hz * t))[:, None], channels, 1).astype(
        np.float32
    )


def noise_burst_render(seed=0, loop_frames=2 * SR, pad=SR // 2):
    """A quiet noise floor with a loud burst straddling the loop end (a hard cut clicks)."""
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal((loop_frames + pad, 2))
    start, stop = loop_frames - SR // 10, loop_frames + SR // 10
    audio[start:stop] += 0.5 * rng.standard_normal((stop - start, 2))
    return audio.astype(np.float32), loop_frames


def test_metric_separates_hard_cut_noise_burst_from_treated():
    hard_jumps, treated_jumps = [], []
    for seed in range(12):
        audio, n = noise_burst_render(seed)
        loop, report = make_seamless(audio, n, SR)
        hard, treated = seam_metric(audio[:n], SR), seam_metric(loop, SR)
        assert report.before == hard and report.after == treated
        assert report.mode == "equal_power"  # noise: uncorrelated head and tail
        # the level and timbre terms separate every single render by > 20 dB
        assert hard.level_jump_db > 30 and treated.level_jump_db < 3
        assert hard.spectral_distance_db > 30 and treated.spectral_distance_db < 5
        hard_jumps.append(hard.wrap_jump_ratio)
        treated_jumps.append(treated.wrap_jump_ratio)
    # one white-noise step can be large by chance, so the click term separates in the median
    assert np.median(hard_jumps) > 5 * np.median(treated_jumps)
    assert np.median(treated_jumps) < 2.5


def test_sine_not_dividing_the_loop_clicks_without_treatment_not_after():
    n = 88225  # 441 Hz has a 100-frame period: the loop ends a quarter period early
    audio = sine(441.0, n + SR)
    hard = seam_metric(audio[:n], SR)
    assert hard.wrap_jump > 0.45 and hard.wrap_jump_ratio > 10  # a full-scale step: a click
    loop, report = make_seamless(audio, n, SR)
    assert report.after.wrap_jump < 0.04  # one sample step of the sine
    assert report.after.wrap_jump_ratio < 1.5  # as smooth as the sine itself
    assert report.after.level_jump_db < 0.5
    assert report.crossfade_dip_db > -1.0  # quarter period apart: equal power, no dip


def test_frames_are_the_rendered_continuation_and_the_rest_is_untouched():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((5000, 2)).astype(np.float32)
    loop, report = make_seamless(audio, 4000, SR, crossfade_ms=10.0)
    xf = report.crossfade_frames
    assert xf == 441 and loop.shape == (4000, 2) and loop.dtype == np.float32
    np.testing.assert_array_equal(loop[0], audio[4000])  # frame after the last one, rendered
    np.testing.assert_array_equal(loop[xf:], audio[xf:4000])
    np.testing.assert_array_equal(loop[-1], audio[3999])


def test_correlated_segments_get_equal_gain_and_keep_their_amplitude():
    audio = sine(441.0, 3 * SR)  # 100-frame period divides the 2 s loop: head == tail
    loop, report = make_seamless(audio, 2 * SR, SR)
    assert report.mode == "equal_gain" and report.correlation > 0.99
    np.testing.assert_allclose(loop, audio[: 2 * SR], atol=1e-6)
    assert report.after.wrap_jump_ratio < 1.5


def test_opposite_phase_tone_is_reported_as_a_dip():
    # 441 Hz, loop = 20 000.5 periods: head and tail cancel half-way through any crossfade
    n = 2 * SR + 50
    _, report = make_seamless(sine(441.0, n + SR), n, SR)
    assert report.correlation < -0.99 and report.crossfade_dip_db < -10


@pytest.mark.parametrize("mode", ["equal_gain", "equal_power"])
def test_curves_start_at_the_tail_and_end_at_the_head(mode):
    fade_in, fade_out = crossfade_curves(100, mode)
    assert fade_in[0] == 0.0 and fade_out[0] == 1.0
    assert np.all(np.diff(fade_in) > 0) and np.all(np.diff(fade_out) < 0)
    total = fade_in + fade_out if mode == "equal_gain" else fade_in**2 + fade_out**2
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_forced_mode_is_used():
    audio, n = noise_burst_render()
    _, report = make_seamless(audio, n, SR, mode="equal_gain")
    assert report.mode == "equal_gain"


def test_zero_crossfade_is_the_hard_cut():
    audio, n = noise_burst_render()
    loop, report = make_seamless(audio, n, SR, crossfade_ms=0.0)
    np.testing.assert_array_equal(loop, audio[:n])
    assert report.after == report.before


@pytest.mark.parametrize(
    "args",
    [
        (np.zeros((1000, 2), np.float32), 990, {}),  # 20 ms needs 882 frames of padding
        (np.zeros((1000,), np.float32), 500, {}),  # not (frames, channels)
        (np.full((5000, 1), np.nan, np.float32), 1000, {}),
        (np.zeros((5000, 1), np.float32), 1000, {"mode": "cosine"}),
        (np.zeros((5000, 1), np.float32), 1000, {"crossfade_ms": -1.0}),
        (np.zeros((5000, 1), np.float32), 100, {}),  # loop shorter than the crossfade
    ],
)
def test_invalid_inputs_raise(args):
    audio, n, kw = args
    with pytest.raises(ValueError):
        make_seamless(audio, n, SR, **kw)


def test_padding_error_says_what_to_do():
    with pytest.raises(ValueError, match="padding"):
        make_seamless(np.zeros((1000, 2), np.float32), 990, SR)


def test_silence_gives_finite_zero_metrics():
    m = seam_metric(np.zeros((SR, 2), np.float32), SR)
    assert m.wrap_jump == 0 and m.wrap_jump_ratio == 0
    assert m.level_jump_db == 0 and m.spectral_distance_db == 0


def test_metric_handles_tiny_loops():
    m = seam_metric(np.array([[0.0], [1.0], [0.0]], np.float32), SR)
    assert np.isfinite(list(asdict(m).values())).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loop_frames=st.integers(900, 6000),
    extra=st.integers(0, 3000),
    channels=st.integers(1, 2),
    crossfade_ms=st.floats(0.0, 20.0),
    scale=st.sampled_from([0.0, 1e-7, 0.3, 1.0]),
)
def test_properties(seed, loop_frames, extra, channels, crossfade_ms, scale):
    rng = np.random.default_rng(seed)
    xf = round(crossfade_ms * SR / 1000)
    audio = (scale * rng.standard_normal((loop_frames + xf + extra, channels))).astype(np.float32)
    loop, report = make_seamless(audio, loop_frames, SR, crossfade_ms=crossfade_ms)
    assert loop.shape == (loop_frames, channels) and loop.dtype == np.float32
    assert report.crossfade_frames == xf
    np.testing.assert_array_equal(loop[xf:], audio[xf:loop_frames])
    if xf:
        np.testing.assert_array_equal(loop[0], audio[loop_frames])
    # the crossfade never exceeds its inputs' combined peak
    assert np.max(np.abs(loop)) <= np.max(np.abs(audio[: loop_frames + xf])) * np.sqrt(2) + 1e-6
    data = json.loads(json.dumps(asdict(report), allow_nan=False))
    assert data["after"]["window_ms"] > 0
