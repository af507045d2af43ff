"""Conform: channels, circular resampling and stretching keep the loop's seam seamless."""

from fractions import Fraction

import numpy as np
import pytest

from latentloop_daemon.playback.conform import (
    TempoMismatch,
    match_channels,
    prepare,
    resample_loop,
    stretch_loop,
)
from latentloop_daemon.playback.source import Loop

RATE = 44100


def sine_loop(frames, cycles, channels=2):
    t = np.arange(frames) / frames
    x = 0.5 * np.sin(2 * np.pi * cycles * t)
    return np.repeat(x[:, None], channels, 1).astype(np.float32)


def seam_jump(audio):
    """The step across the seam relative to the largest step inside the loop."""
    inside = np.abs(np.diff(audio, axis=0)).max()
    return float(np.abs(audio[0] - audio[-1]).max() / inside)


def test_channels():
    mono = np.ones((4, 1), np.float32)
    assert match_channels(mono, 2).shape == (4, 2)
    assert match_channels(np.ones((4, 2), np.float32), 1).shape == (4, 1)


def test_circular_resample_keeps_the_seam():
    loop = sine_loop(RATE, 110)
    out = resample_loop(loop, RATE, 48000)
    assert out.shape == (48000, 2)
    assert seam_jump(out) < 1.05


def test_circular_stretch_gives_the_exact_length_and_a_seamless_seam():
    loop = sine_loop(2 * RATE, 220)
    target = round(2 * RATE * 120 / 127)
    out = stretch_loop(loop, target, RATE)
    assert out.shape == (target, 2)
    assert seam_jump(out) < 1.5


def test_prepare_stretches_only_when_the_tempo_differs_by_more_than_a_sample():
    loop = Loop(sine_loop(88200, 440), RATE, 4, 4, "x")  # one bar at 120 BPM
    same = prepare(loop, RATE, 2, Fraction(60 * RATE, 120), "stretch")
    assert not same.stretched and same.audio is loop.audio
    other = prepare(loop, RATE, 2, Fraction(60 * RATE, 127), "stretch", 127.0)
    assert other.stretched and other.audio.shape[0] == round(4 * Fraction(60 * RATE, 127))
    as_is = prepare(loop, RATE, 2, Fraction(60 * RATE, 127), "as_is", 127.0)
    assert as_is.beats is None and as_is.audio.shape[0] == 88200
    with pytest.raises(TempoMismatch, match="120.000 BPM and the transport at 127.000 BPM"):
        prepare(loop, RATE, 2, Fraction(60 * RATE, 127), "refuse", 127.0)
