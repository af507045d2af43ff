"""Tempo estimation on synthetic signals whose tempo is known: click tracks, bursts, tones."""

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentloop_daemon.loops.length import loop_frames
from latentloop_daemon.loops.tempo import estimate_tempo

SR = 44100
METRICAL = (0.5, 2 / 3, 1.0, 1.5, 2.0)


def click(freq_hz, sample_rate=SR):
    t = np.arange(round(0.03 * sample_rate)) / sample_rate
    return np.sin(2 * np.pi * freq_hz * t) * np.exp(-t / 0.006)


def click_track(
    bpm,
    bars=2,
    beats_per_bar=4,
    swing=None,
    noise_db=None,
    content_bpm=None,
    sample_rate=SR,
    seed=0,
):
    """A bar-exact loop at ``bpm`` holding clicks at ``content_bpm`` (default: ``bpm``).

    Accented downbeat (1.0), beats (0.6) and quieter off-beat eighths (0.35) placed at
    ``swing`` of the beat (0.5 = straight; 0.6-0.66 = swung), plus white noise at
    ``noise_db`` dBFS.
    """
    n = loop_frames(bpm, bars, beats_per_bar, sample_rate)
    beat_s = 60.0 / (content_bpm or bpm)
    x = np.zeros(n)
    high, low = click(2000, sample_rate), click(1200, sample_rate)
    for b in range(int(n / sample_rate / beat_s) + 2):
        downbeat = b % beats_per_bar == 0
        events = [(b * beat_s, 1.0 if downbeat else 0.6, high if downbeat else low)]
        events.append(((b + (swing or 0.5)) * beat_s, 0.35, low))
        for start_s, amp, sound in events:
            start = round(start_s * sample_rate)
            stop = min(n, start + sound.shape[0])
            if start < n:
                x[start:stop] += amp * sound[: stop - start]
    if noise_db is not None:
        x += 10 ** (noise_db / 20) * np.random.default_rng(seed).standard_normal(n)
    return np.repeat(0.5 * x[:, None], 2, 1).astype(np.float32)


CASES = [
    (bpm, meter, swing, noise)
    for bpm in (90, 120, 174)
    for meter in (4, 3)
    for swing in (None, 0.6, 0.66)
    for noise in (None, -26)
]


@pytest.mark.parametrize("bpm,meter,swing,noise", CASES)
def test_click_tracks_with_expected_tempo(bpm, meter, swing, noise):
    est = estimate_tempo(click_track(bpm, 4, meter, swing, noise), SR, expected_bpm=bpm)
    assert abs(est.deviation_pct) < 0.05
    assert est.confidence > (0.8 if noise is None else 0.3)
    assert est.beats_in_loop == pytest.approx(4 * meter, abs=0.01)


@pytest.mark.parametrize("bpm,meter,swing,noise", CASES)
def test_click_tracks_without_expected_tempo_are_right_up_to_the_metrical_level(
    bpm, meter, swing, noise
):
    est = estimate_tempo(click_track(bpm, 4, meter, swing, noise), SR)
    assert est.deviation_pct is None and est.ratio_to_raw == 1.0
    assert min(abs(est.bpm / (bpm * r) - 1) for r in METRICAL) < 0.002


@pytest.mark.parametrize("bpm", [90, 120])
def test_unambiguous_tempos_need_no_hint(bpm):
    assert estimate_tempo(click_track(bpm, swing=0.62), SR).bpm == pytest.approx(bpm, rel=1e-3)


@pytest.mark.parametrize("content_bpm", [117.0, 118.5, 122.0])
def test_measures_the_rendered_tempo_not_the_grid(content_bpm):
    # 4 bars cut for 120 bpm, but the model played at another tempo
    x = click_track(120, 4, swing=0.62, content_bpm=content_bpm)
    est = estimate_tempo(x, SR, expected_bpm=120)
    assert est.bpm == pytest.approx(content_bpm, rel=5e-4)
    assert est.deviation_pct == pytest.approx((content_bpm - 120) / 1.2, abs=0.06)


def test_expected_tempo_does_not_hide_a_wrong_tempo():
    # rendered at 80 (2/3 of 120): reported as a 33 % error, never as 120
    est = estimate_tempo(click_track(120, 4, swing=0.62, content_bpm=80), SR, expected_bpm=120)
    assert abs(est.deviation_pct) > 30


def test_noise_bursts():
    rng = np.random.default_rng(0)
    x = 0.02 * rng.standard_normal(8 * SR)
    decay = np.exp(-np.arange(2000) / 400)
    for start in range(0, 8 * SR, SR // 2):  # 120 bpm
        x[start : start + 2000] += rng.standard_normal(2000) * decay
    est = estimate_tempo(np.repeat(x[:, None], 2, 1).astype(np.float32), SR, expected_bpm=120)
    assert abs(est.deviation_pct) < 0.1 and est.confidence > 0.5


@pytest.mark.parametrize("freq_hz", [41.0, 55.0, 110.0, 440.0, 3000.0])
def test_steady_sine_has_no_tempo(freq_hz):
    t = np.arange(4 * SR) / SR
    x = np.repeat(np.sin(2 * np.pi * freq_hz * t)[:, None], 2, 1).astype(np.float32)
    est = estimate_tempo(x, SR, expected_bpm=120)
    assert est.bpm is None and est.confidence == 0.0 and est.deviation_pct is None


def test_white_noise_has_low_confidence():
    x = np.random.default_rng(1).standard_normal((4 * SR, 2)).astype(np.float32)
    assert estimate_tempo(x, SR).confidence < 0.2


def test_silence():
    est = estimate_tempo(np.zeros((2 * SR, 2), np.float32), SR, expected_bpm=120)
    assert est.bpm is None and est.confidence == 0.0
    json.dumps(asdict(est), allow_nan=False)


def test_level_rate_and_channels_do_not_matter():
    loud = click_track(120, swing=0.6)
    ref = estimate_tempo(loud, SR, 120).bpm
    assert estimate_tempo(loud * 1e-3, SR, 120).bpm == pytest.approx(ref, rel=1e-4)
    assert estimate_tempo(loud[:, :1], SR, 120).bpm == pytest.approx(ref, rel=1e-4)
    at_48k = click_track(120, swing=0.6, sample_rate=48000)
    assert estimate_tempo(at_48k, 48000, 120).bpm == pytest.approx(120, rel=1e-3)


@pytest.mark.parametrize("bars,max_error_pct", [(1, 0.3), (2, 0.2)])
def test_short_loops(bars, max_error_pct):
    for bpm in (90, 120, 174):
        for meter in (3, 4):
            est = estimate_tempo(click_track(bpm, bars, meter), SR, bpm)
            assert abs(est.deviation_pct) < max_error_pct


def test_loop_too_short_for_the_range():
    # 0.5 s cannot hold two beats at 60-100 bpm
    est = estimate_tempo(click_track(120, 0.25), SR, min_bpm=60, max_bpm=100)
    assert est.bpm is None


@pytest.mark.parametrize(
    "kw", [{"expected_bpm": 0.0}, {"min_bpm": 200.0, "max_bpm": 100.0}, {"min_bpm": -1.0}]
)
def test_invalid_arguments(kw):
    with pytest.raises(ValueError):
        estimate_tempo(np.zeros((SR, 2), np.float32), SR, **kw)


def test_bad_shape():
    with pytest.raises(ValueError):
        estimate_tempo(np.zeros(SR, np.float32), SR)


@settings(max_examples=12, deadline=None)
@given(
    bpm=st.floats(70.0, 190.0),
    meter=st.sampled_from([3, 4]),
    swing=st.sampled_from([None, 0.6, 0.64, 0.66]),
    seed=st.integers(0, 100),
)
def test_any_tempo_in_range(bpm, meter, swing, seed):
    x = click_track(bpm, 4, meter, swing, noise_db=-30, seed=seed)
    est = estimate_tempo(x, SR, expected_bpm=bpm)
    assert abs(est.deviation_pct) < 0.1
    json.dumps(asdict(est), allow_nan=False)
