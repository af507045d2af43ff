"""Loudness normalization of loops: an integrated-loudness target under a true-peak ceiling.

Loudness is ITU-R BS.1770-4 / EBU R128 integrated loudness measured by pyloudnorm (K-weighting,
400 ms blocks, 75 % overlap, -70 LUFS absolute and -10 LU relative gates). A loop is measured
*as it plays*: tiled end to end to at least ``MIN_MEASURE_S`` (3 s), then ``WRAP_S`` (300 ms,
a block less one hop) of its start appended, so the blocks that span the wrap count and loops
shorter than one 400 ms gating block still measure.

True peak is a 4x oversampled peak estimate (``scipy.signal.resample_poly``, as BS.1770-4
Annex 2 describes), taken circularly: the inter-sample peak between the last and first frames
counts, since the loop plays across it.

Arrays are (frames, channels) float32 at ``sample_rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

LimitedBy = Literal["target", "ceiling", "peak_safe", "silence", "max_gain"]

MIN_MEASURE_S = 3.0  # measure loops tiled to at least this long
WRAP_S = 0.3  # ...plus this much of the start again, so blocks across the last wrap count
OVERSAMPLE = 4  # true-peak oversampling factor (BS.1770-4 Annex 2)
SILENCE_DBFS = -120.0  # a true peak below this is silence: no gain, a warning
_CONTEXT = 64  # frames of circular context around the loop for the oversampling filter


@dataclass(slots=True)
class LoudnessReport:
    """What ``normalize`` measured and did; ``None`` where silence has no level (JSON-safe)."""

    enabled: bool
    target_lufs: float
    ceiling_dbtp: float
    lufs_before: float | None  # integrated loudness, LUFS, the loop as it plays
    lufs_after: float | None
    true_peak_before_dbtp: float | None  # 4x oversampled, circular, dBTP
    true_peak_after_dbtp: float | None
    gain_db: float  # applied gain, dB (before the limiter, if one ran)
    limited_by: LimitedBy  # what set the gain
    limiter: bool  # whether the optional peak limiter ran
    measured_s: float  # length of the tiled loop the loudness was measured on, s
    warnings: list[str] = field(default_factory=list)


def normalize(
    loop: npt.NDArray[np.float32],
    sample_rate: int,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
    enabled: bool = True,
    limiter: bool = False,
    max_gain_db: float = 40.0,
) -> tuple[npt.NDArray[np.float32], LoudnessReport]:
    """Scale a loop to ``target_lufs`` without its true peak passing ``ceiling_dbtp``.

    Args:
        loop: (frames, channels) float32 at ``sample_rate``, at most 5 channels (BS.1770).
        target_lufs: integrated-loudness target, LUFS (-14 suits streaming; R128 is -23).
        ceiling_dbtp: true-peak ceiling, dBTP. Without the limiter the gain stops here
            (``limited_by="ceiling"``), leaving the loop quieter than the target.
        enabled: False: no loudness gain, only attenuation to the ceiling ("peak_safe").
        limiter: reach the target and hold the ceiling with a look-ahead peak limiter.
        max_gain_db: the most gain ever applied, so near-silence is not boosted into noise.

    Returns:
        The scaled (frames, channels) float32 loop and a ``LoudnessReport``.
    """
    # 1. Check inputs and measure
    _check_loop(loop)
    x = loop.astype(np.float64)
    peak_before = true_peak_dbtp(x)
    lufs_before = loop_loudness_lufs(x, sample_rate) if peak_before is not None else None
    warnings: list[str] = []
    # 2. Choose the gain: the target's, capped by max_gain_db, then by the ceiling
    wanted_db, limited_by = _wanted_gain(lufs_before, target_lufs, enabled, max_gain_db, warnings)
    headroom_db = ceiling_dbtp - peak_before if peak_before is not None else 0.0
    gain_db = wanted_db
    if wanted_db > headroom_db:  # peak-safe in every mode: never above the ceiling
        gain_db = headroom_db
        limited_by = "ceiling" if limited_by in ("target", "max_gain") else limited_by
    # 3. Apply it; or, with the limiter, the wanted gain and the limiter on top
    ran_limiter = limiter and limited_by == "ceiling"
    if ran_limiter:
        limited_by = "max_gain" if wanted_db >= max_gain_db else "target"
        gain_db, y = _limit_to_target(
            x, sample_rate, lufs_before or 0.0, wanted_db, ceiling_dbtp, max_gain_db
        )
    else:
        y = x * 10.0 ** (gain_db / 20.0)
        if limited_by == "ceiling":
            warnings.append(
                f"true-peak ceiling {ceiling_dbtp:g} dBTP stopped the gain at {gain_db:.2f} dB, "
                f"{wanted_db - gain_db:.2f} dB short of the target"
            )
    # 4. Measure the result (a plain gain moves the true peak by exactly the gain)
    peak_after = true_peak_dbtp(y) if ran_limiter else _moved(peak_before, gain_db)
    report = LoudnessReport(
        enabled=enabled,
        target_lufs=target_lufs,
        ceiling_dbtp=ceiling_dbtp,
        lufs_before=lufs_before,
        lufs_after=loop_loudness_lufs(y, sample_rate) if peak_after is not None else None,
        true_peak_before_dbtp=peak_before,
        true_peak_after_dbtp=peak_after,
        gain_db=gain_db,
        limited_by=limited_by,
        limiter=ran_limiter,
        measured_s=_tile(x[:, :1], sample_rate).shape[0] / sample_rate,
        warnings=warnings,
    )
    return y.astype(np.float32), report


def _limit_to_target(
    x: npt.NDArray[np.float64],
    sample_rate: int,
    lufs: float,
    gain_db: float,
    ceiling_dbtp: float,
    max_gain_db: float,
    passes: int = 3,
) -> tuple[float, npt.NDArray[np.float64]]:
    """Gain, then the limiter; the limiter takes loudness away, so the gain is raised by what
    the result misses (up to ``passes`` times, never past ``max_gain_db``).

    ``x`` is (frames, channels) at ``lufs``. The oversampled peaks are found once: under a
    plain gain they scale with it. Returns the final gain in dB (before limiting) and the
    limited (frames, channels) audio.
    """
    peaks = _frame_peaks(x)
    target = lufs + gain_db
    for i in range(passes):
        scale = 10.0 ** (gain_db / 20.0)
        y = x * (scale * _limiter_gain(peaks * scale, sample_rate, ceiling_dbtp))[:, None]
        missing = target - (loop_loudness_lufs(y, sample_rate) or target)
        if missing < 0.1 or gain_db >= max_gain_db or i == passes - 1:
            break
        gain_db = min(gain_db + missing, max_gain_db)
    return gain_db, _trim(y, ceiling_dbtp)


def _moved(level_db: float | None, gain_db: float) -> float | None:
    """A level after a gain, keeping None (silence) as None."""
    return None if level_db is None else level_db + gain_db


def _wanted_gain(
    lufs: float | None, target_lufs: float, enabled: bool, max_gain_db: float, warnings: list[str]
) -> tuple[float, LimitedBy]:
    """The gain in dB the target asks for, before the ceiling, and what set it.

    Disabled: 0 dB ("peak_safe"). Silence or below the -70 LUFS gate: 0 dB ("silence"), with
    a warning. Near-silence needing more than ``max_gain_db``: capped ("max_gain"), warned.
    """
    if lufs is None:
        warnings.append("loop is silent (below the -70 LUFS gate): no loudness gain applied")
        return 0.0, "silence"
    if not enabled:
        return 0.0, "peak_safe"
    wanted = target_lufs - lufs
    if wanted > max_gain_db:
        warnings.append(f"loop is near-silent ({lufs:.1f} LUFS): gain capped at {max_gain_db:g} dB")
        return max_gain_db, "max_gain"
    return wanted, "target"


def loop_loudness_lufs(loop: npt.NDArray[np.floating], sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) of a (frames, channels) loop played in a cycle.

    The loop is tiled to at least ``MIN_MEASURE_S``, plus ``WRAP_S`` of its start. Returns None
    when every gating block is below the -70 LUFS absolute gate (silence or near-silence).
    """
    import pyloudnorm

    tiled = _tile(np.asarray(loop, dtype=np.float64), sample_rate)
    with np.errstate(divide="ignore", invalid="ignore"):  # silent blocks: log10(0), gated out
        lufs = float(pyloudnorm.Meter(sample_rate).integrated_loudness(tiled))
    return lufs if math.isfinite(lufs) else None


def true_peak_dbtp(audio: npt.NDArray[np.floating], circular: bool = True) -> float | None:
    """4x oversampled peak of (frames, channels) audio in dBTP; None below ``SILENCE_DBFS``."""
    up = _oversampled(np.asarray(audio), circular)
    peak = max(float(np.max(up)), -float(np.min(up)))
    return 20.0 * math.log10(peak) if peak > 10.0 ** (SILENCE_DBFS / 20.0) else None


def limit_peaks(
    audio: npt.NDArray[np.float64], sample_rate: int, ceiling_dbtp: float
) -> npt.NDArray[np.float64]:
    """Hold a (frames, channels) loop's true peak at ``ceiling_dbtp`` with a look-ahead limiter."""
    gain = _limiter_gain(_frame_peaks(audio), sample_rate, ceiling_dbtp)
    return _trim(audio * gain[:, None], ceiling_dbtp)


def _limiter_gain(
    peaks: npt.NDArray[np.float64], sample_rate: int, ceiling_dbtp: float, window_ms: float = 5.0
) -> npt.NDArray[np.float64]:
    """Smooth per-frame gain (frames,) that keeps ``peaks`` (frames,) under the ceiling.

    The gain each frame needs (ceiling over its peak) goes through a circular minimum filter
    and then a moving average of the same ``window_ms``: the average over a window only
    covers frames whose minimum window contains the peak, so the smooth gain is never above
    what any frame needs, and it ramps over ``window_ms`` instead of stepping.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    width = max(1, round(window_ms * sample_rate / 1000)) | 1  # odd, centred windows
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    return uniform_filter1d(minimum_filter1d(need, width, mode="wrap"), width, mode="wrap")


def _frame_peaks(audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per-frame oversampled peak of (frames, channels) audio, channels linked: (frames,)."""
    up = np.abs(_oversampled(audio, circular=True))  # (channels, frames * OVERSAMPLE)
    return up.reshape(audio.shape[1], audio.shape[0], OVERSAMPLE).max(axis=(0, 2)).astype(float)


def _trim(audio: npt.NDArray[np.float64], ceiling_dbtp: float) -> npt.NDArray[np.float64]:
    """Scale audio down uniformly if its true peak is still over the ceiling (the gain curve
    varies between frames, so oversampling can find a little more than the frame peaks)."""
    over = 10.0 ** (((true_peak_dbtp(audio) or SILENCE_DBFS) - ceiling_dbtp) / 20.0)
    return audio / over if over > 1.0 else audio


def _oversampled(x: npt.NDArray[np.floating], circular: bool) -> npt.NDArray[np.float32]:
    """(frames, channels) ``x`` at ``OVERSAMPLE`` x the rate, as (channels, frames * OVERSAMPLE).

    Circular: the filter sees the loop's end before its start and its start after its end.

    resample_poly's windowed-sinc filter is zero at multiples of ``OVERSAMPLE`` taps, so every
    ``OVERSAMPLE``-th output is the input sample itself: the estimate is never below the sample
    peak. It runs on float32 (channels, frames) rows: contiguous rows filter fastest.
    """
    from scipy.signal import resample_poly

    n = x.shape[0]
    ctx = min(_CONTEXT, n) if circular else 0
    padded = np.concatenate([x[n - ctx :], x, x[:ctx]]) if ctx else x
    rows = np.ascontiguousarray(padded.T, dtype=np.float32)  # (channels, n + 2 ctx)
    up = resample_poly(rows, OVERSAMPLE, 1, axis=-1)  # (channels, (n + 2 ctx) * OVERSAMPLE)
    return up[:, ctx * OVERSAMPLE : (ctx + n) * OVERSAMPLE]


def _tile(loop: npt.NDArray[np.float64], sample_rate: int) -> npt.NDArray[np.float64]:
    """The loop repeated to >= ``MIN_MEASURE_S``, then ``WRAP_S`` of its start once more."""
    frames = loop.shape[0]
    reps = max(1, math.ceil(MIN_MEASURE_S * sample_rate / frames))
    wrap = round(WRAP_S * sample_rate)
    return np.tile(loop, (reps + math.ceil(wrap / frames), 1))[: reps * frames + wrap]


def _check_loop(loop: npt.NDArray[np.floating]) -> None:
    """Raise ValueError unless ``loop`` is a finite (frames >= 1, 1..5 channels) float array."""
    if loop.ndim != 2 or loop.shape[0] < 1 or not 1 <= loop.shape[1] <= 5:
        raise ValueError(f"loop must be (frames, 1..5 channels), got shape {loop.shape}")
    if not np.all(np.isfinite(loop)):
        raise ValueError("loop contains NaN or inf")
