"""Tempo of a rendered loop from its onset envelope (numpy and scipy only).

1. Onset envelope: spectral flux of log band energies (Blackman-Harris STFT, ~23 ms
   windows, ~2.9 ms hop, 40 log-spaced bands from ~215 Hz, a floor 50 dB under the loudest
   bin, per-band rises under ``RISE_MIN`` ignored so that steady tones give no onsets),
   minus its local mean, half-wave rectified. The frames are laid circularly over the loop
   (a frame may straddle the wrap), exactly ``T`` per loop, so the envelope is periodic in
   the loop as the loop is when it plays.
2. Circular autocorrelation of the envelope (FFT), lightly smoothed so fractional lags can
   be read by linear interpolation.
3. Salience of a beat period P: the mean autocorrelation at P, 2P, 3P, ... up to half the
   loop (a comb). Many teeth make the estimate precise: an error of e frames at lag kP is
   an error of e/k frames in P.
4. The raw estimate is the most salient period in ``[min_bpm, max_bpm]`` weighted by a broad
   log-Gaussian preference around 120 bpm: a half-tempo period scores about as well as the
   beat (its teeth are a subset of the beat's), so without an expected tempo the metrical
   level is a guess (tests accept 1/2, 2/3, 3/2 or 2 x the truth there). With an expected
   tempo, among the salient alternatives at 1/2, 2/3, 1, 3/2 or 2 x the raw estimate, the one
   closest to the expected tempo is chosen, and ``ratio_to_raw`` says so. An alternative
   must have ``MIN_SALIENCE`` of the best salience, so a loop really rendered at 80 bpm is
   not reported as 120 just because 120 was asked for.
5. The choice is refined on a 0.01 % grid with a parabolic fit.

Why no library: librosa would bring numba/llvmlite and a heavy import for a 200-line job,
and its tempo estimator neither uses the loop's periodicity nor reports a comb salience.
Accuracy on click tracks (tests/daemon/test_tempo.py): within 0.05 % at 4 bars, 0.2 % at 2
bars, 0.3 % at 1 bar.
Known limit: sustained chords whose partials beat near a multiple of the frame rate can
alias into a spurious periodicity with mid confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft
import scipy.signal

HOP_S = 128 / 44100  # envelope hop, s (~2.9 ms)
WINDOW_S = 1024 / 44100  # STFT window, s (~23 ms)
LOCAL_MEAN_S = 0.25  # the envelope's local mean is taken over this window, s
METRICAL_RATIOS = (0.5, 2 / 3, 1.0, 1.5, 2.0)
N_BANDS = 40  # log-spaced bands from LOW_BINS FFT bins (~215 Hz) to Nyquist
LOW_BINS = 5  # the Blackman-Harris main lobe is +-4 bins: a tone below leaks no further
FLOOR_DB = -50.0  # band floor under the loop's loudest FFT bin: quieter changes are ignored
RISE_MIN = 0.1  # per-band log-magnitude rise (nats, ~0.9 dB) that still counts as no onset
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0  # raw-estimate preference: centre, width in octaves
MIN_SALIENCE = 0.5  # an alternative to the raw period must have this share of its salience
_COARSE_STEP = 0.002  # relative bpm step of the coarse grid (0.2 %)
_FINE_SPAN, _FINE_STEP = 0.01, 0.0001  # fine grid: +-1 % in 0.01 % steps


@dataclass(frozen=True, slots=True)
class TempoEstimate:
    """A measured tempo (JSON-safe). ``bpm`` is None when the loop has no onsets.

    ``confidence`` is the mean normalised autocorrelation at the beat multiples, in [0, 1]:
    ~0.5-0.9 for a steady beat, ~0 for noise or a steady tone. ``deviation_pct`` is
    ``(bpm - expected) / expected * 100``. ``raw_bpm`` is the strongest periodicity before the
    expected tempo was consulted and ``ratio_to_raw`` = ``bpm / raw_bpm`` (1.0 unless a
    metrical alternative was closer to the expected tempo).
    """

    bpm: float | None
    confidence: float
    expected_bpm: float | None
    deviation_pct: float | None
    raw_bpm: float | None
    ratio_to_raw: float | None
    beats_in_loop: float | None  # bpm x loop seconds / 60: whole numbers fit the loop


def estimate_tempo(
    loop: npt.NDArray[np.float32],
    sample_rate: int,
    expected_bpm: float | None = None,
    min_bpm: float = 60.0,
    max_bpm: float = 200.0,
) -> TempoEstimate:
    """Estimate the tempo of a (frames, channels) loop at ``sample_rate`` Hz, in bpm."""
    # 1. Check inputs
    if loop.ndim != 2 or loop.shape[0] < 2:
        raise ValueError(f"loop must be (frames >= 2, channels), got shape {loop.shape}")
    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    if expected_bpm is not None and not expected_bpm > 0:
        raise ValueError(f"expected_bpm must be positive, got {expected_bpm}")
    # 2. Envelope and its autocorrelation
    env, frame_rate = onset_envelope(loop, sample_rate)
    acf = _circular_acf(env)
    if acf is None:
        return TempoEstimate(None, 0.0, expected_bpm, None, None, None, None)
    # 3. Coarse salience over the tempo range; the raw and the chosen candidate
    bpms = np.exp(np.arange(np.log(min_bpm), np.log(max_bpm), _COARSE_STEP))
    salience = _salience(acf, 60.0 * frame_rate / bpms)
    if not np.any(np.isfinite(salience)):  # loop shorter than two beats at min_bpm
        return TempoEstimate(None, 0.0, expected_bpm, None, None, None, None)
    weighted = np.maximum(salience, 0.0) * _prior(bpms)
    raw = _refine(acf, frame_rate, float(bpms[np.nanargmax(weighted)]))
    chosen = _choose(raw, expected_bpm, bpms, salience)
    # 4. Report
    bpm = raw if chosen == raw else _refine(acf, frame_rate, chosen)
    comb = _salience(acf, np.array([60.0 * frame_rate / bpm]))[0]
    seconds = loop.shape[0] / sample_rate
    return TempoEstimate(
        bpm=bpm,
        confidence=float(np.clip(comb, 0.0, 1.0)),
        expected_bpm=expected_bpm,
        deviation_pct=None if expected_bpm is None else (bpm - expected_bpm) / expected_bpm * 100,
        raw_bpm=raw,
        ratio_to_raw=bpm / raw,
        beats_in_loop=bpm * seconds / 60.0,
    )


def onset_envelope(
    loop: npt.NDArray[np.floating], sample_rate: int
) -> tuple[npt.NDArray[np.float64], float]:
    """Circular onset strength of a (frames, channels) loop: ((T,) envelope, frames per second).

    The T frame centres are ``round(t * frames / T)``, so T frames span the loop exactly and
    the envelope's period is T; windows read across the wrap. Level-independent (log band
    magnitudes, floor relative to the loudest band). A silent loop gives zeros.
    """
    mono = np.asarray(loop, dtype=np.float32).mean(axis=1)  # (frames,)
    frames = mono.shape[0]
    n_frames = max(8, round(frames / (HOP_S * sample_rate)))
    n_fft = int(2 ** round(np.log2(WINDOW_S * sample_rate)))
    centres = np.round(np.arange(n_frames) * frames / n_frames).astype(np.int64)
    idx = (centres[:, None] + np.arange(n_fft)[None, :] - n_fft // 2) % frames  # (T, n_fft)
    window = scipy.signal.windows.blackmanharris(n_fft).astype(np.float32)
    spec = scipy.fft.rfft(mono[idx] * window, axis=1)
    power = spec.real**2 + spec.imag**2  # (T, n_fft // 2 + 1)
    mag = np.sqrt(_band_matrix(n_fft, sample_rate) @ power.T).T  # (T, bands)
    floor = float(np.sqrt(np.max(power))) * 10.0 ** (FLOOR_DB / 20.0)  # vs the loudest bin
    if floor == 0.0:  # silence
        return np.zeros(n_frames), n_frames * sample_rate / frames
    level = np.log(np.maximum(mag, floor))  # (T, bands), nats
    rise = level - np.roll(level, 1, axis=0) - RISE_MIN  # circular: frame 0 follows frame T-1
    flux = np.maximum(rise, 0.0).sum(axis=1).astype(np.float64)  # (T,)
    frame_rate = n_frames * sample_rate / frames
    width = max(1, round(LOCAL_MEAN_S * frame_rate))
    local = np.real(np.fft.ifft(np.fft.fft(flux) * np.fft.fft(_box(width, n_frames))))
    return np.maximum(flux - local, 0.0), frame_rate


def _band_matrix(n_fft: int, sample_rate: int) -> npt.NDArray[np.float32]:
    """(bands, n_fft // 2 + 1) 0/1 matrix pooling FFT bins into ``N_BANDS`` log-spaced bands
    from 3 bins (~130 Hz) to Nyquist; bands without a bin are dropped. Pooling steadies the
    estimate on noise, and a broadband onset still rises in every band."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    # within ~4 bins of DC a low tone's windowed magnitude swings with its phase
    edges = np.geomspace(LOW_BINS * sample_rate / n_fft, sample_rate / 2, N_BANDS + 1)
    band = np.minimum(np.searchsorted(edges, freqs, side="right") - 1, N_BANDS - 1)
    matrix = np.zeros((N_BANDS, freqs.shape[0]), np.float32)
    keep = band >= 0
    matrix[band[keep], np.flatnonzero(keep)] = 1.0
    return matrix[matrix.sum(axis=1) > 0]


def _prior(bpms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Log-Gaussian tempo preference: 1 at ``PRIOR_BPM``, sigma ``PRIOR_OCTAVES`` octaves."""
    return np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def _box(width: int, n: int) -> npt.NDArray[np.float64]:
    """A centred, circular moving-average kernel of ``width`` taps in a length-``n`` array."""
    kernel = np.zeros(n)
    kernel[(np.arange(width) - width // 2) % n] = 1.0 / width
    return kernel


def _circular_acf(env: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Normalised (acf[0] = 1), Gaussian-smoothed circular autocorrelation, (T,); None if flat."""
    x = env - env.mean()
    spec = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(x.shape[0])  # cycles per frame
    spec *= np.exp(-((2 * np.pi * freq * 1.0) ** 2))  # Gaussian, sigma 1 frame, applied twice
    acf = np.fft.irfft(spec, n=x.shape[0])
    if not acf[0] > 1e-12 * max(float(np.sum(env**2)), 1e-300):
        return None
    return acf / acf[0]


def _acf_at(acf: npt.NDArray[np.float64], lags: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Linear interpolation of the circular ``acf`` at fractional ``lags`` (frames)."""
    n = acf.shape[0]
    lo = np.floor(lags).astype(np.int64)
    frac = lags - lo
    return (1 - frac) * acf[lo % n] + frac * acf[(lo + 1) % n]


def _salience(
    acf: npt.NDArray[np.float64], periods: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Comb salience of each beat period (frames): the mean ``acf`` at k * period, k >= 1, up
    to half the loop (past it the circular ACF mirrors itself). (P,); NaN where none fits."""
    half = acf.shape[0] / 2
    k = np.arange(1, int(half // np.min(periods)) + 1, dtype=np.float64)  # (K,)
    lags = periods[:, None] * k[None, :]  # (P, K)
    inside = lags <= half
    values = np.where(inside, _acf_at(acf, np.where(inside, lags, 0.0)), 0.0)
    count = inside.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, values.sum(axis=1) / count, np.nan)


def _refine(acf: npt.NDArray[np.float64], frame_rate: float, bpm: float) -> float:
    """The best tempo within +-``_FINE_SPAN`` of ``bpm`` on the fine grid, every tooth counted,
    with a parabolic fit through the best grid point and its neighbours."""
    rel = np.arange(-_FINE_SPAN, _FINE_SPAN + _FINE_STEP / 2, _FINE_STEP)
    grid = bpm * (1.0 + rel)
    score = _salience(acf, 60.0 * frame_rate / grid)
    i = int(np.nanargmax(score))
    if 0 < i < len(grid) - 1:
        a, b, c = score[i - 1], score[i], score[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            return float(grid[i] * (1.0 + _FINE_STEP * 0.5 * (a - c) / denom))
    return float(grid[i])


def _choose(
    raw: float,
    expected: float | None,
    bpms: npt.NDArray[np.float64],
    salience: npt.NDArray[np.float64],
) -> float:
    """The metrical alternative of ``raw`` closest to ``expected`` (raw itself if None).

    An alternative counts if it lies in the searched range and its best coarse salience
    within +-3 % is at least ``MIN_SALIENCE`` of the raw one's.
    """
    if expected is None:
        return raw
    best_salience = float(np.nanmax(salience))
    options = [raw]
    for ratio in METRICAL_RATIOS:
        near = np.abs(np.log(bpms / (raw * ratio))) < 0.03
        if ratio != 1.0 and np.any(near) and np.any(np.isfinite(salience[near])):
            j = np.flatnonzero(near)[np.nanargmax(salience[near])]
            if salience[j] >= MIN_SALIENCE * best_salience:
                options.append(float(bpms[j]))
    return min(options, key=lambda b: abs(np.log(b / expected)))
