"""Draw the pictures in docs/loops.md: what the seam treatment does at the wrap point.

Usage (needs matplotlib, which is not a project dependency):

    .venv/bin/pip install matplotlib
    .venv/bin/python tools/plot_loops.py docs/img

The signal is synthetic, so the right answer is known: a "rendered window" of a 120 BPM groove
(kick-like clicks, hats, a bass tone whose period does not divide the loop) that keeps playing
past the loop end, as the model does when it is asked for loop + padding. The loop is 2 bars.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

RATE = 44100


def rendered_window(bpm: float = 120.0, bars: int = 2, padding_s: float = 2.0) -> np.ndarray:
    """(frames, 2) float32: a groove that continues ``padding_s`` past the loop end."""
    rng = np.random.default_rng(7)
    loop_s = bars * 4 * 60 / bpm
    n = int((loop_s + padding_s) * RATE)
    t = np.arange(n) / RATE
    beat = 60 / bpm
    x = 0.25 * np.sin(2 * np.pi * 55.3 * t)  # bass: 55.3 Hz never lines up with the loop
    for k in range(int(t[-1] / beat) + 1):  # kicks on beats, hats on off-beats
        i = int(k * beat * RATE)
        kick = np.exp(-np.arange(4000) / 600) * np.sin(2 * np.pi * 60 * np.arange(4000) / RATE)
        x[i : i + 4000] += 0.6 * kick[: max(0, min(4000, n - i))]
        j = int((k + 0.5) * beat * RATE)
        hat = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 200)
        x[j : j + 1500] += 0.15 * hat[: max(0, min(1500, n - j))]
    x += 0.0005 * rng.standard_normal(n)
    stereo = np.stack([x, np.roll(x, 7)], axis=1)
    return stereo.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentloop_daemon.loops.length import loop_frames
    from latentloop_daemon.loops.seam import make_seamless, seam_metric

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the PNG files")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    window = rendered_window()
    n = loop_frames(120, 2, 4, RATE)
    hard = window[:n]
    treated, report = make_seamless(window, n, RATE, crossfade_ms=20.0)
    metrics = {"hard cut": seam_metric(hard, RATE), "treated": report.after}

    # 1. Waveform around the wrap: the loop's last 15 ms followed by its first 15 ms.
    span = int(0.015 * RATE)
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for ax, (name, loop) in zip(axes, (("hard cut", hard), ("treated", treated)), strict=True):
        wrap = np.concatenate([loop[-span:, 0], loop[:span, 0]])
        ms = (np.arange(-span, span) / RATE) * 1000
        ax.plot(ms, wrap, lw=0.8)
        ax.axvline(0, color="red", lw=0.8, ls="--")
        m = metrics[name]
        ax.set_title(
            f"{name}: wrap jump {m.wrap_jump:.3f} ({m.wrap_jump_ratio:.1f}x the "
            f"typical step), spectral distance {m.spectral_distance_db:.1f} dB"
        )
        ax.set_ylabel("amplitude")
    axes[-1].set_xlabel("ms around the wrap (last sample -> first sample at 0)")
    fig.tight_layout()
    fig.savefig(args.out / "seam_waveform.png", dpi=110)
    plt.close(fig)

    # 2. Spectrogram of the loop played twice, centred on the wrap.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (name, loop) in zip(axes, (("hard cut", hard), ("treated", treated)), strict=True):
        around = np.concatenate([loop[-int(0.25 * RATE) :, 0], loop[: int(0.25 * RATE), 0]])
        ax.specgram(around, NFFT=512, Fs=RATE, noverlap=448, cmap="magma", vmin=-130)
        ax.axvline(0.25, color="cyan", lw=0.8, ls="--")
        ax.set_ylim(0, 12000)
        ax.set_title(name)
        ax.set_xlabel("s (wrap at 0.25)")
    axes[0].set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(args.out / "seam_spectrogram.png", dpi=80)
    plt.close(fig)

    for name, m in metrics.items():
        print(
            f"{name:9s} wrap_jump {m.wrap_jump:.4f} ratio {m.wrap_jump_ratio:.2f} "
            f"spectral {m.spectral_distance_db:.2f} dB level {m.level_jump_db:.2f} dB"
        )
    print(f"mode {report.mode}, correlation {report.correlation:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
