"""Benchmark the loop post-processing: ``make_seamless``, ``normalize``, ``estimate_tempo``.

The input is 8 bars at 120 bpm in 4/4, stereo, 44.1 kHz (16 s, the bar-exact length from
``loops.loop_frames``) plus 2 s of rendered padding: swung click-track drums over pink noise
and a sustained chord. Each function runs once to warm up, then ``--repeats`` times; the
table shows the median and the fastest run, and the real-time factor (audio seconds per
second of work). One JSON line with every number follows. A benchmark, not a test: it
asserts nothing::

    .venv/bin/python tools/bench_loops.py              # 15 repeats
    .venv/bin/python tools/bench_loops.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from latentloop_daemon.loops.length import loop_frames
from latentloop_daemon.loops.loudness import normalize
from latentloop_daemon.loops.seam import make_seamless
from latentloop_daemon.loops.tempo import estimate_tempo

SAMPLE_RATE = 44100
BPM, BARS, BEATS_PER_BAR = 120.0, 8, 4
PADDING_S = 2.0


def make_render(seed: int = 0) -> tuple[npt.NDArray[np.float32], int]:
    """A fake render: ((loop + padding) frames, 2) float32 at 44.1 kHz, and the loop length."""
    rng = np.random.default_rng(seed)
    n = loop_frames(BPM, BARS, BEATS_PER_BAR, SAMPLE_RATE)
    total = n + round(PADDING_S * SAMPLE_RATE)
    t = np.arange(total) / SAMPLE_RATE
    spec = np.fft.rfft(rng.standard_normal((total, 2)), axis=0)
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1))[:, None]  # pink
    x = np.fft.irfft(spec, n=total, axis=0)
    x *= 0.05 / np.std(x)
    chord = np.sin(2 * np.pi * np.outer(t, [220.0, 277.2, 329.6])).sum(axis=1)  # (total,)
    x += 0.05 * chord[:, None]
    beat = 60.0 / BPM
    hit_t = np.arange(round(0.1 * SAMPLE_RATE)) / SAMPLE_RATE
    kick = np.sin(2 * np.pi * 60 * hit_t) * np.exp(-hit_t / 0.04)
    for b in range(int(total / SAMPLE_RATE / beat)):
        for offset, amp in ((0.0, 0.8), (0.62, 0.3)):  # beat, swung eighth
            start = round((b + offset) * beat * SAMPLE_RATE)
            stop = min(total, start + kick.shape[0])
            x[start:stop] += amp * kick[: stop - start, None]
    return x.astype(np.float32), n


def time_it(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    render, n = make_render()
    loop = render[:n]
    seconds = n / SAMPLE_RATE
    cases: dict[str, Callable[[], object]] = {
        "make_seamless": lambda: make_seamless(render, n, SAMPLE_RATE),
        "normalize": lambda: normalize(loop, SAMPLE_RATE),
        "normalize(limiter)": lambda: normalize(loop, SAMPLE_RATE, target_lufs=-8.0, limiter=True),
        "estimate_tempo": lambda: estimate_tempo(loop, SAMPLE_RATE, expected_bpm=BPM),
    }
    print(f"{BARS} bars at {BPM:g} bpm, stereo, {SAMPLE_RATE} Hz: {seconds:.1f} s of audio")
    print(f"{'function':<20} {'median ms':>10} {'min ms':>8} {'x real time':>12}")
    results = {}
    for name, fn in cases.items():
        times = time_it(fn, args.repeats)
        median = statistics.median(times)
        results[name] = {"median_s": median, "min_s": min(times), "repeats": args.repeats}
        print(
            f"{name:<20} {median * 1e3:>10.1f} {min(times) * 1e3:>8.1f} {seconds / median:>12.0f}"
        )
    meta = {"audio_s": seconds, "python": platform.python_version(), "cpus": os.cpu_count()}
    print(json.dumps({"bench": "loops", **meta, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
