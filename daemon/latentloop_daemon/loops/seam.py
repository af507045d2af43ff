"""Seam treatment and seam metrics for bar-exact loops.

The model is asked for more audio than the loop, so the frames just past the loop end are the
model's own continuation of the loop's last frame. ``make_seamless`` crossfades that
continuation into the loop start: the loop's first frame then *is* the frame that follows its
last one, and the fade hands over to the original start within ``crossfade_ms``.

Gains: equal-gain (``t``, ``1 - t``) keeps the amplitude of correlated signals constant;
equal-power (``sin``, ``cos``) keeps the energy of uncorrelated ones constant. ``mode="auto"``
picks equal-gain when the normalised zero-lag correlation of the two segments exceeds
``EQUAL_GAIN_CORRELATION`` (0.5), equal-power otherwise.

No cut-point search: moving the loop start moves the crossfaded head and the rendered tail
together (they are always ``loop_frames`` apart), so it cannot cure the one failure a
crossfade has, a tone whose period does not divide the loop meeting itself in opposite
phase. ``SeamReport.crossfade_dip_db`` reports that case instead.

Arrays are (frames, channels) float32 at ``sample_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from latentloop_daemon.config import CrossfadeMode

EQUAL_GAIN_CORRELATION = 0.5  # above: the segments add coherently -> equal gain
FLOOR_DB = -120.0  # level floor for silent windows, keeps every metric finite
_TINY = 1e-6  # amplitude floor (-120 dBFS) for ratios
_N_BANDS = 12  # log-spaced bands for the spectral distance


@dataclass(frozen=True, slots=True)
class SeamMetrics:
    """How audible the wrap from the loop's last frame to its first is (JSON-safe floats).

    ``wrap_jump``: max over channels of ``|x[0] - x[-1]|`` (full scale 1.0).
    ``wrap_jump_ratio``: that jump over the median ``|x[n+1] - x[n]|`` of the ``window_ms``
    either side of the wrap (1 = as smooth as the surrounding audio; a click is >> 1).
    ``spectral_distance_db``: RMS over log-spaced bands of the band-level difference (dB)
    between the last and the first ``window_ms`` (timbre jump).
    ``level_jump_db``: ``|RMS level(last window) - RMS level(first window)|`` in dB.
    """

    wrap_jump: float
    wrap_jump_ratio: float
    spectral_distance_db: float
    level_jump_db: float
    window_ms: float


@dataclass(frozen=True, slots=True)
class SeamReport:
    """What ``make_seamless`` did, with the seam metrics of the hard cut and of the result."""

    crossfade_frames: int
    crossfade_ms: float
    mode: str  # "equal_gain" or "equal_power": the curve actually used
    correlation: float  # normalised zero-lag correlation of loop head and rendered tail
    crossfade_dip_db: float  # worst level of the fade vs uncorrelated inputs (<< 0: cancelling)
    before: SeamMetrics  # the hard cut audio[:loop_frames]
    after: SeamMetrics


def make_seamless(
    audio: npt.NDArray[np.float32],
    loop_frames: int,
    sample_rate: int,
    crossfade_ms: float = 20.0,
    mode: CrossfadeMode = "auto",
) -> tuple[npt.NDArray[np.float32], SeamReport]:
    """Cut a ``loop_frames`` loop from ``audio`` and crossfade the rendered tail into its start.

    Args:
        audio: (frames_total, channels) float32 at ``sample_rate``; ``frames_total`` must be at
            least ``loop_frames + crossfade frames`` (the padding rendered past the loop end).
        loop_frames: exact loop length in frames (from ``loops.loop_frames``).
        crossfade_ms: fade length in ms; 0 gives the hard cut.
        mode: "auto" (by correlation), "equal_gain" or "equal_power".

    Returns:
        (loop_frames, channels) float32 loop and a ``SeamReport``.

    Raises:
        ValueError: bad shapes or arguments, or too little padding for the crossfade.
    """
    # 1. Check inputs; the crossfade reads the padding rendered past the loop end
    xfade = _crossfade_frames(audio, loop_frames, sample_rate, crossfade_ms, mode)
    loop = np.array(audio[:loop_frames], dtype=np.float32)  # (loop_frames, channels)
    head = loop[:xfade].astype(np.float64)  # (xfade, channels)
    tail = audio[loop_frames : loop_frames + xfade].astype(np.float64)  # (xfade, channels)
    # 2. Choose the curves
    correlation = _correlation(head, tail)
    used = mode if mode != "auto" else _auto_mode(correlation)
    fade_in, fade_out = crossfade_curves(xfade, used)
    # 3. Crossfade the tail into the head: frame 0 becomes the frame rendered after the last
    mixed = fade_in[:, None] * head + fade_out[:, None] * tail
    loop[:xfade] = mixed
    report = SeamReport(
        crossfade_frames=xfade,
        crossfade_ms=1000.0 * xfade / sample_rate,
        mode=used,
        correlation=correlation,
        crossfade_dip_db=_dip_db(mixed, fade_in[:, None] * head, fade_out[:, None] * tail),
        before=seam_metric(audio[:loop_frames], sample_rate),
        after=seam_metric(loop, sample_rate),
    )
    return loop, report


def _crossfade_frames(
    audio: npt.NDArray[np.float32],
    loop_frames: int,
    sample_rate: int,
    crossfade_ms: float,
    mode: str,
) -> int:
    """Validate ``make_seamless``'s arguments and return the crossfade length in frames."""
    _check_audio(audio, "audio")
    if mode not in ("auto", "equal_gain", "equal_power"):
        raise ValueError(f"mode must be auto, equal_gain or equal_power, got {mode!r}")
    if not crossfade_ms >= 0:
        raise ValueError(f"crossfade_ms must be >= 0, got {crossfade_ms}")
    xfade = round(crossfade_ms * sample_rate / 1000)
    if loop_frames < max(2, xfade):
        raise ValueError(
            f"loop_frames must be >= 2 and >= the {xfade} crossfade frames, got {loop_frames}"
        )
    if loop_frames + xfade > audio.shape[0]:
        raise ValueError(
            f"need {loop_frames + xfade} frames (loop {loop_frames} + crossfade {xfade}), "
            f"got {audio.shape[0]}: render more padding or shorten crossfade_ms"
        )
    return xfade


def crossfade_curves(
    n: int, mode: Literal["equal_gain", "equal_power"]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fade-in and fade-out gains, each (n,): fade-in is exactly 0 at frame 0 (so frame 0 is
    the rendered continuation) and reaches 1 one frame after the end."""
    t = np.arange(n, dtype=np.float64) / max(n, 1)
    if mode == "equal_gain":
        return t, 1.0 - t
    return np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)


def seam_metric(
    loop: npt.NDArray[np.float32], sample_rate: int, window_ms: float = 10.0
) -> SeamMetrics:
    """Measure the wrap of a (frames, channels) loop at ``sample_rate`` (see ``SeamMetrics``).

    The windows are ``window_ms`` long (shortened to half the loop for very short loops).
    """
    _check_audio(loop, "loop")
    x = loop.astype(np.float64)
    n = max(2, min(round(window_ms * sample_rate / 1000), x.shape[0] // 2))
    last, first = x[-n:], x[:n]
    jump = np.abs(x[0] - x[-1])  # (channels,)
    local = np.concatenate([last, first])  # the wrap in playing order
    steps = np.abs(np.diff(local, axis=0))
    steps = np.delete(steps, n - 1, axis=0)  # drop the wrap step itself
    typical = np.maximum(np.median(steps, axis=0), _TINY)
    ratio = float(np.max(jump / typical)) if float(np.max(jump)) > _TINY else 0.0
    return SeamMetrics(
        wrap_jump=float(np.max(jump)),
        wrap_jump_ratio=ratio,
        spectral_distance_db=_spectral_distance_db(last, first),
        level_jump_db=abs(_rms_db(last) - _rms_db(first)),
        window_ms=1000.0 * n / sample_rate,
    )


def _check_audio(audio: npt.NDArray[np.floating], name: str) -> None:
    """Raise ValueError unless ``audio`` is a non-empty (frames, channels) finite float array."""
    if audio.ndim != 2 or audio.shape[0] < 2 or audio.shape[1] < 1:
        raise ValueError(f"{name} must be (frames >= 2, channels >= 1), got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name} contains NaN or inf")


def _auto_mode(correlation: float) -> Literal["equal_gain", "equal_power"]:
    """Equal gain for strongly correlated segments, equal power otherwise."""
    return "equal_gain" if correlation > EQUAL_GAIN_CORRELATION else "equal_power"


def _correlation(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Normalised zero-lag correlation of two (frames, channels) segments: [-1, 1], 0 if silent."""
    energy = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / energy) if energy > _TINY**2 else 0.0


def _dip_db(
    mixed: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> float:
    """Worst level of ``mixed = a + b`` against ``|a|^2 + |b|^2``, over 4 sub-windows, in dB.

    ``a`` and ``b`` are the faded head and tail, (frames, channels). Uncorrelated inputs give
    about 0 dB, coherent ones > 0, and inputs in opposite phase (a tone whose period does not
    divide the loop) a deep negative dip that no crossfade curve avoids.
    """
    worst = 0.0
    if mixed.shape[0] == 0:
        return worst
    for idx in np.array_split(np.arange(mixed.shape[0]), min(4, mixed.shape[0])):
        ref = float(np.mean(a[idx] ** 2) + np.mean(b[idx] ** 2))
        if ref > _TINY**2:
            ratio = max(float(np.mean(mixed[idx] ** 2)) / ref, 1e-12)
            worst = min(worst, 10.0 * float(np.log10(ratio)))
    return worst


def _rms_db(x: npt.NDArray[np.float64]) -> float:
    """RMS level of all samples in dBFS, floored at ``FLOOR_DB``."""
    return max(FLOOR_DB, 10.0 * float(np.log10(np.mean(x * x) + 1e-30)))


def _band_levels_db(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hann-windowed band levels (dB, floored) of a (frames, channels) window, channels summed.

    Bands are log-spaced from 2 FFT bins up to Nyquist; summing bins per band keeps the
    estimate stable on noise, where single periodogram bins scatter by several dB.
    """
    n = x.shape[0]
    nfft = max(256, 1 << (n - 1).bit_length())
    spec = np.abs(np.fft.rfft(x * np.hanning(n)[:, None], n=nfft, axis=0)) ** 2
    power = spec.sum(axis=1) / max(float(np.sum(np.hanning(n) ** 2)) * x.shape[1], 1e-12)
    edges = np.unique(np.geomspace(2, power.shape[0], _N_BANDS + 1).astype(int))
    bands = np.add.reduceat(power, edges[:-1])  # (bands,): edges[i] .. edges[i+1]
    return np.maximum(10.0 * np.log10(bands + 1e-30), FLOOR_DB)


def _spectral_distance_db(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """RMS over bands of the band-level difference between two windows, in dB."""
    diff = _band_levels_db(a) - _band_levels_db(b)
    return float(np.sqrt(np.mean(diff**2)))
