"""Playback figures from a real daemon on JACK's dummy backend (a benchmark, not a test).

Starts jackd (dummy, real-time), then for each block size ``latentloop serve --model tiny``
with audio on JACK, ``[audio] quantize = "now"`` and ``bar_messages`` off, and measures:

- latency from ``/done`` to the first audible sample: renders with the option ``play 0`` and
  quantize ``now``; the time from receiving ``/done`` to receiving ``/latentloop/playing``
  (which the daemon sends when the launch sample reaches the listener, output latency
  included);
- underruns per minute while the model renders back to back (4 s renders, 8 steps);
- the callback's time per block (median, p99, max over the last 4096 blocks, from status).

    .venv/bin/python tools/bench_playback.py [--blocks 1024 256] [--seconds 30] [--renders 5]

Prints one table row per block size and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PLAYING, STATUS_REPLY = "/latentloop/playing", "/latentloop/status.reply"


def transport(client) -> dict[str, str]:
    client.send("/latentloop/status", [9])
    _, args = client.wait_for(9, (STATUS_REPLY,), 10)
    return dict(kv.split("=", 1) for kv in args[8].split())


def measure(server, block: int, seconds: float, renders: int) -> dict[str, float]:
    from tests.conftest import DaemonProcess

    from latentloop_bridge.client import Client

    out = Path(tempfile.mkdtemp()) / "out"
    env = {**server.env, "LATENTLOOP_AUDIO_QUANTIZE": "now"}
    daemon = DaemonProcess(out, "--format", "float", "--block-size", str(block), audio=True,
                           env=env)  # fmt: skip
    try:
        daemon.wait_ready(180)
        latencies = []
        with Client(port=daemon.port, timeout=120) as client:
            client.notify(True)
            for i in range(renders):
                done = client.render_and_wait("bench", request_id=100 + i, bpm=120, bars=1,
                                              seed=i, steps=2, play=0, timeout=180)  # fmt: skip
                t_done = time.monotonic()
                while True:  # /playing -1 <slot> <job id> <path>: when the launch is heard
                    _, args = client.wait_for(-1, (PLAYING,), 30)
                    if args[3] == done[0].path:
                        break
                latencies.append(time.monotonic() - t_done)
            before = int(transport(client)["underruns"])
            t0 = time.monotonic()
            rid = 1000
            while time.monotonic() - t0 < seconds:
                rid += 1
                client.render_and_wait("load", request_id=rid, seconds=4, steps=8, timeout=180)
            elapsed = time.monotonic() - t0
            after = transport(client)
        return {
            "block": block,
            "done_to_audible_ms_median": 1000 * statistics.median(latencies),
            "done_to_audible_ms_max": 1000 * max(latencies),
            "underruns_per_min": (int(after["underruns"]) - before) * 60 / elapsed,
            "callback_ms_p50": float(after.get("callback_p50_ms", "nan")),
            "callback_ms_p99": float(after["callback_p99_ms"]),
            "callback_ms_max": float(after["callback_max_ms"]),
            "load_renders": rid - 1000,
            "load_s": elapsed,
        }
    finally:
        daemon.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1024, 256])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--renders", type=int, default=5)
    args = ap.parse_args()
    from jackd import JackServer

    rows = []
    for block in args.blocks:
        server = JackServer(Path(tempfile.mkdtemp()), rate=44100, period=block, realtime=True)
        try:
            rows.append(measure(server, block, args.seconds, args.renders))
        finally:
            server.stop()
    print("| block | /done -> audible, median / max | underruns per min under render load | "
          "callback per block p50 / p99 / max |")  # fmt: skip
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['block']} | {r['done_to_audible_ms_median']:.1f} / "
              f"{r['done_to_audible_ms_max']:.1f} ms | {r['underruns_per_min']:.1f} "
              f"({r['load_renders']} renders in {r['load_s']:.0f} s) | "
              f"{r['callback_ms_p50']:.3f} / {r['callback_ms_p99']:.3f} / "
              f"{r['callback_ms_max']:.3f} ms |")  # fmt: skip
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
