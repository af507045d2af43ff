"""Loudness normalization: LUFS target, true-peak ceiling, silence, peak-safe mode."""

import json
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from latentloop_daemon.loops.loudness import loop_loudness_lufs, normalize, true_peak_dbtp

SR = 44100


def pink_noise(seconds, channels=2, rms=0.1, seed=0):
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    spec = np.fft.rfft(rng.standard_normal((n, channels)), axis=0)
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1))[:, None]  # 1/f power
    x = np.fft.irfft(spec, n=n, axis=0)
    return (rms * x / np.std(x)).astype(np.float32)


def sine(freq_hz, seconds, amp, channels=2, phase=0.0):
    t = np.arange(round(seconds * SR)) / SR
    wave = amp * np.sin(2 * np.pi * freq_hz * t + phase)
    return np.repeat(wave[:, None], channels, 1).astype(np.float32)


def independent_true_peak_db(x):
    """8x oversampled, circular, by a different route than the module's 4x (a cross-check)."""
    padded = np.concatenate([x[-256:], x, x[:256]]).astype(np.float64)
    return 20 * np.log10(np.abs(resample_poly(padded, 8, 1, axis=0)[256 * 8 : -256 * 8]).max())


def test_meter_reads_known_levels():
    # BS.1770: a 1 kHz sine at amplitude A in both channels reads 20 log10(A) LUFS
    assert loop_loudness_lufs(sine(1000, 2.0, 0.5), SR) == pytest.approx(-6.02, abs=0.1)
    assert loop_loudness_lufs(sine(1000, 2.0, 0.1), SR) == pytest.approx(-20.0, abs=0.1)


def test_true_peak_finds_inter_sample_peaks():
    # fs/4 at 45 degrees: every sample is at 0.707, the waveform peaks at 1.0 between them
    x = sine(SR / 4, 4408 / SR, 1.0, phase=np.pi / 4)  # whole periods: the wrap is smooth too
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(x) == pytest.approx(0.0, abs=0.1)


def test_true_peak_is_circular_for_loops():
    x = sine(SR / 4, 8 / SR, 1.0, phase=np.pi / 4)  # 8 frames: only the wrap shows the peak
    assert true_peak_dbtp(x) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("rms", [0.003, 0.03, 0.3])
@pytest.mark.parametrize("target", [-23.0, -18.0])
def test_pink_noise_reaches_the_target(rms, target):
    y, report = normalize(pink_noise(6.0, rms=rms), SR, target_lufs=target)
    assert report.limited_by == "target" and report.warnings == []
    assert report.lufs_after == pytest.approx(target, abs=0.5)
    assert loop_loudness_lufs(y, SR) == pytest.approx(target, abs=0.5)
    assert report.gain_db == pytest.approx(target - report.lufs_before, abs=1e-9)


def test_default_target_on_pink_noise_is_met_or_stopped_by_the_ceiling():
    y, report = normalize(pink_noise(8.0, rms=0.05, seed=3), SR)
    assert report.target_lufs == -14.0 and report.ceiling_dbtp == -1.0
    if report.limited_by == "target":
        assert report.lufs_after == pytest.approx(-14.0, abs=0.5)
    else:
        assert report.limited_by == "ceiling" and report.lufs_after < -14.0
    assert independent_true_peak_db(y) <= -1.0 + 0.1


def test_ceiling_stops_the_gain():
    y, report = normalize(drums(), SR)
    assert report.limited_by == "ceiling" and not report.limiter
    assert report.lufs_after < -14.0 - 1.0
    assert report.gain_db == pytest.approx(-1.0 - report.true_peak_before_dbtp, abs=1e-9)
    assert report.true_peak_after_dbtp <= -1.0 + 0.1
    assert independent_true_peak_db(y) <= -1.0 + 0.1
    assert any("ceiling" in w for w in report.warnings)


def drums(seconds=4.0, every_s=0.5):
    """A quiet pink bed under decaying 60 Hz kicks: ~20 dB crest, so -14 LUFS would clip."""
    x = pink_noise(seconds, rms=0.01, seed=7).astype(np.float64)
    t = np.arange(round(0.2 * SR)) / SR
    kick = 0.9 * np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.05)
    for start in range(0, x.shape[0] - kick.shape[0], round(every_s * SR)):
        x[start : start + kick.shape[0]] += kick[:, None]
    return x.astype(np.float32)


def test_optional_limiter_reaches_the_target_under_the_ceiling():
    y, report = normalize(drums(), SR, limiter=True)
    assert report.limiter and report.limited_by == "target"
    assert report.lufs_after == pytest.approx(-14.0, abs=0.5)
    assert report.true_peak_after_dbtp <= -1.0 + 0.1
    assert independent_true_peak_db(y) <= -1.0 + 0.1


def test_limiter_is_off_by_default_and_unused_when_not_needed():
    _, report = normalize(pink_noise(4.0, rms=0.01), SR, target_lufs=-30.0, limiter=True)
    assert not report.limiter and report.limited_by == "target"


@pytest.mark.parametrize("frames", [0, 1, 100, SR])
def test_silence_does_not_blow_up(frames):
    x = np.zeros((max(frames, 1), 2), np.float32)
    y, report = normalize(x, SR)
    np.testing.assert_array_equal(y, x)
    assert report.limited_by == "silence" and report.gain_db == 0.0 and report.warnings
    assert report.lufs_before is None and report.true_peak_before_dbtp is None
    json.dumps(asdict(report), allow_nan=False)


def test_below_the_gate_is_silence():
    x = pink_noise(4.0, rms=1e-5)  # about -100 dBFS: below the -70 LUFS gate
    y, report = normalize(x, SR)
    assert report.limited_by == "silence" and report.gain_db == 0.0 and report.warnings
    np.testing.assert_array_equal(y, x)


def test_near_silence_gain_is_capped():
    _, report = normalize(pink_noise(4.0, rms=3e-4), SR)  # about -70 LUFS: 56 dB to go
    assert report.limited_by == "max_gain" and report.gain_db == 40.0
    assert any("near-silent" in w for w in report.warnings)


def test_disabled_is_peak_safe_only():
    quiet = pink_noise(4.0, rms=0.01)
    y, report = normalize(quiet, SR, enabled=False)
    np.testing.assert_array_equal(y, quiet)
    assert report.limited_by == "peak_safe" and report.gain_db == 0.0
    hot = sine(997, 2.0, 1.0)  # 0 dBTP: over the -1 dBTP ceiling
    y, report = normalize(hot, SR, enabled=False)
    assert report.limited_by == "peak_safe" and report.gain_db == pytest.approx(-1.0, abs=0.05)
    assert independent_true_peak_db(y) <= -1.0 + 0.1


def test_short_loops_measure_as_they_play():
    # a 50 ms loop of a 1 kHz sine (50 whole periods) plays as a steady tone
    assert loop_loudness_lufs(sine(1000, 0.05, 0.1), SR) == pytest.approx(-20.0, abs=0.1)
    y, report = normalize(sine(1000, 0.05, 0.1), SR, target_lufs=-18.0)
    assert report.lufs_after == pytest.approx(-18.0, abs=0.5) and y.shape == (2205, 2)
    assert report.measured_s >= 3.0


@pytest.mark.parametrize(
    "bad", [np.zeros(100, np.float32), np.zeros((100, 6), np.float32), np.full((100, 2), np.nan)]
)
def test_invalid_input_raises(bad):
    with pytest.raises(ValueError):
        normalize(bad, SR)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 1000),
    seconds=st.floats(0.05, 3.0),
    rms=st.floats(1e-3, 0.5),
    target=st.floats(-30.0, -8.0),
    channels=st.integers(1, 2),
)
def test_properties(seed, seconds, rms, target, channels):
    x = pink_noise(seconds, channels, rms, seed)
    y, report = normalize(x, SR, target_lufs=target)
    assert y.shape == x.shape and y.dtype == np.float32
    assert report.true_peak_after_dbtp <= -1.0 + 1e-6
    assert independent_true_peak_db(y) <= -1.0 + 0.1
    # what must have set the gain, from the levels before: the target's gain, at most
    # +40 dB (max_gain_db), then at most what keeps the true peak under the -1 dBTP ceiling
    wanted_db = target - report.lufs_before
    expected = "max_gain" if wanted_db > 40.0 else "target"
    if min(wanted_db, 40.0) > -1.0 - report.true_peak_before_dbtp:
        expected = "ceiling"
    assert report.limited_by == expected
    if expected == "target":
        assert report.lufs_after == pytest.approx(target, abs=0.5)
    else:
        assert report.lufs_after < target
    json.dumps(asdict(report), allow_nan=False)
