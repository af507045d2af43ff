"""Measure written loop files independently of latentloop_daemon's own measuring code.

End-to-end tests prove that the daemon processed a loop by measuring the WAV it wrote, not by
reading back its sidecar or ``/done`` numbers. Everything here is written from the standards
and from docs/loops.md, with pyloudnorm, scipy and numpy only; it imports nothing from
latentloop_daemon (whose modules may move). tests/ is not a package: import this file by path
(``load_audio_checks()`` in the tests that use it).

Arrays are (frames, channels) float64 at ``sample_rate``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soundfile as sf
from scipy.signal import resample_poly

Audio = npt.NDArray[np.float64]

# docs/loops.md §3: a loop is measured as it plays: tiled to at least 3 s, plus the first
# 300 ms again so the gating blocks across the last wrap count
MEASURE_MIN_S = 3.0
MEASURE_WRAP_S = 0.3
OVERSAMPLE = 4  # true peak: 4x oversampling (ITU-R BS.1770-4 Annex 2)


def read_loop(path: str) -> tuple[Audio, int]:
    """The file's samples as (frames, channels) float64, and its sample rate."""
    audio, sample_rate = sf.read(path, dtype="float64", always_2d=True)
    return audio, int(sample_rate)


def as_it_plays(loop: Audio, sample_rate: int, min_s: float, wrap_s: float) -> Audio:
    """The loop repeated end to end to at least ``min_s``, then ``wrap_s`` more of it."""
    frames = loop.shape[0]
    wanted = math.ceil(min_s * sample_rate) + math.ceil(wrap_s * sample_rate)
    repeats = math.ceil(wanted / frames)
    tiled = np.tile(loop, (repeats, 1))
    whole = math.ceil(min_s * sample_rate / frames) * frames
    return tiled[: whole + math.ceil(wrap_s * sample_rate)]


def integrated_lufs(loop: Audio, sample_rate: int) -> float:
    """BS.1770 integrated loudness (pyloudnorm's gating) of the loop as it plays, in LUFS."""
    tiled = as_it_plays(loop, sample_rate, MEASURE_MIN_S, MEASURE_WRAP_S)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(tiled))


def true_peak_dbtp(loop: Audio) -> float:
    """Peak of the 4x oversampled loop in dBTP, across the wrap too (the loop plays in a cycle).

    The loop is extended by its own end before and its own start after, so the polyphase
    filter sees the real neighbours of the first and last frames.
    """
    context = min(loop.shape[0], 256)
    cyclic = np.concatenate([loop[-context:], loop, loop[:context]])
    up = resample_poly(cyclic, OVERSAMPLE, 1, axis=0)
    inner = up[context * OVERSAMPLE : (context + loop.shape[0]) * OVERSAMPLE]
    return 20.0 * math.log10(float(np.max(np.abs(inner))))


def wrap_jump_ratio(loop: Audio, sample_rate: int, around_ms: float = 10.0) -> float:
    """The jump from the last frame to the first, over the median sample-to-sample change in
    the ``around_ms`` on either side of the wrap (worst channel). ~1: as smooth as the audio
    around it; a click is many times more.
    """
    span = max(2, round(around_ms * sample_rate / 1000))
    around = np.concatenate([loop[-span:], loop[:span]])
    steps = np.abs(np.diff(around, axis=0))
    jump = steps[span - 1]  # last frame -> first frame
    typical = np.median(np.delete(steps, span - 1, axis=0), axis=0)
    return float(np.max(jump / np.maximum(typical, 1e-12)))


def click_tempo_bpm(loop: Audio, sample_rate: int, beats: int) -> float:
    """The tempo of a click track, measured on its own: onsets where the level first rises past
    a third of the peak after 50 ms below it, then the loop's length over the beats they span.

    Independent of the daemon's tempo check (``loops/tempo.py``: onset flux and circular
    autocorrelation); it reads only the file. The loop is tiled twice so a click on the seam
    counts once. ``beats`` = the number of clicks expected in one loop.
    """
    x = np.abs(np.concatenate([loop, loop]).mean(axis=1))
    loud = x > x.max() / 3
    quiet_run = round(0.050 * sample_rate)
    onsets, last = [], -quiet_run
    for i in np.flatnonzero(loud):
        if i - last >= quiet_run:
            onsets.append(i)
        last = i
    onsets = np.asarray(onsets, dtype=np.float64)
    if onsets.size < beats + 1:
        raise AssertionError(f"{onsets.size} clicks in two loops, expected >= {beats + 1}")
    intervals = np.diff(onsets[: 2 * beats])
    return float(60 * sample_rate / np.median(intervals))
