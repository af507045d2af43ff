"""A picture of a quantized swap, made from a real capture (docs/img/swap.png).

Starts a JACK dummy server, the daemon's player on it and a JACK capture client; plays loop A
(a 220 Hz tone with a click on every beat) in slot 0, queues loop B (a 330 Hz tone, clicks
off-beat) into the same slot on the next bar, and captures what the player sends to JACK. The
plot shows the samples around the bar line: B's sample 0 on the boundary at full gain, A
fading out after it over ``[audio] launch_fade_ms``. It prints where the swap landed.

Usage (needs jackd, and matplotlib, which is not a project dependency)::

    .venv/bin/pip install matplotlib
    .venv/bin/python tools/plot_swap.py [--out docs/img/swap.png] [--fade-ms 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

RATE = 44100
BPM = 120
BAR = 4 * 60 * RATE // BPM  # 88,200 frames: 2 s


def tone(freq: float, click_offset_beats: float) -> np.ndarray:
    """One bar (BAR, 2): a quiet tone plus a short click on every beat (shifted by an offset)."""
    t = np.arange(BAR) / RATE
    x = 0.25 * np.sin(2 * np.pi * freq * t)
    beat = BAR // 4
    for k in range(4):
        at = round((k + click_offset_beats) * beat) % BAR
        n = min(200, BAR - at)
        x[at : at + n] += 0.5 * np.exp(-np.arange(n) / 40)
    return np.stack([x, x], axis=1).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "swap.png"))
    ap.add_argument("--fade-ms", type=float, default=5.0)
    args = ap.parse_args()

    from jackd import Capture, JackServer, first_sound

    server = JackServer(Path(tempfile.mkdtemp()), rate=RATE, period=1024, realtime=True)
    os.environ.update(server.env)
    import sounddevice as sd

    sd._terminate()  # PortAudio lists JACK only if it runs when PortAudio initialises
    sd._initialize()
    from latentloop_daemon.config import AudioConfig
    from latentloop_daemon.playback.player import Player
    from latentloop_daemon.playback.source import Loop

    class Events:
        played: list[tuple[int, int, str]] = []

        def playing(self, slot: int, job_id: int, path: str) -> None:
            self.played.append((slot, job_id, path))

        def bar(self, *a: object) -> None: ...

        def audio_off(self, *a: object) -> None: ...

    events = Events()
    player = Player(AudioConfig(launch_fade_ms=args.fade_ms), events)
    player.start()
    cap = Capture(server, 4 * BAR / RATE)
    try:
        cap.connect("^PortAudio:")
        a, b = tone(220, 0.0), tone(330, 0.5)
        loop_a = Loop(a, RATE, 4, 4, "/loops/a.wav", 1)
        loop_b = Loop(b, RATE, 4, 4, "/loops/b.wav", 2)
        player.submit(lambda: player.play(0, loop_a, "bar")).result(30)
        deadline = time.monotonic() + 30
        while not events.played:  # A is audible: B goes on a later bar
            if time.monotonic() > deadline:
                raise SystemExit(f"A never became audible: {player.transport_text()}")
            time.sleep(0.01)
        _, swap_bar = player.submit(lambda: player.play(0, loop_b, "bar")).result(30)
        got = cap.wait(30)
    finally:
        cap.close()
        player.close()
        sd._terminate()
        server.stop()

    start = first_sound(got)
    swap = start + swap_bar * BAR
    fade = round(args.fade_ms * RATE / 1000)
    b_exact = bool(np.array_equal(got[swap + fade : swap + BAR], b[fade:]))
    print(f"A from sample {start}; B queued on bar {swap_bar} -> boundary sample {swap}; "
          f"B equals its file after the {fade}-sample fade: {b_exact}")  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = round(0.030 * RATE)
    idx = np.arange(swap - span, swap + span)
    ms = (idx - swap) / RATE * 1000
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    ax.plot(ms, got[idx, 0], lw=1.0, color="black", label="captured output (left channel)")
    a_tail = np.zeros(idx.size, np.float32)
    after = idx >= swap
    rel = idx[after] - swap
    ramp = np.clip(1 - rel / fade, 0, 1)
    a_tail[~after] = a[(idx[~after] - start) % BAR, 0]
    a_tail[after] = a[rel % BAR, 0] * ramp
    ax.plot(ms, a_tail, lw=0.8, ls="--", color="tab:blue", label="A, fading out after the bar")
    ax.plot(ms[after], b[rel, 0], lw=0.8, ls=":", color="tab:orange", label="B from its sample 0")
    ax.axvline(0, color="red", lw=1.0)
    ax.text(0.3, 0.9, f"bar {swap_bar} (sample {swap})", color="red", fontsize=8,
            transform=ax.get_xaxis_transform())  # fmt: skip
    ax.axvspan(0, fade / RATE * 1000, color="tab:blue", alpha=0.08)
    ax.set_xlabel("ms from the bar line")
    ax.set_ylabel("sample value")
    ax.set_title(
        f"A quantized swap captured from JACK ({BPM} BPM, launch fade {args.fade_ms:g} ms)"
    )
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0 if b_exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
