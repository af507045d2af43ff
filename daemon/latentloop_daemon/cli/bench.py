"""``latentloop bench``: per-stage render timings and real-time factor. A benchmark, not a test.

Prints one line per repeat and a median summary: text encoding, one sampling step, the full
sampling, VAE decoding, the total, and the real-time factor (seconds of audio rendered per
second of wall time, for the model's full window). The first run warms up and is not counted.
``--compare-reference`` times ours against stable-audio-tools instead (``bench_compare``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

from latentloop_daemon.engine import RenderRequest
from latentloop_daemon.exit_codes import ExitCode


def add_parser(sub: Any) -> None:
    from latentloop_daemon.cli.options import add_config_option, add_model_options

    p = sub.add_parser("bench", help="time a render stage by stage", description=__doc__)
    add_config_option(p)
    add_model_options(p)
    p.add_argument("--seconds", type=float, default=None, help="seconds_total (default 10)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: model's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: model's)")
    p.add_argument("--variations", type=int, default=1, help="batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    from latentloop_daemon.cli.bench_compare import add_arguments

    add_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from latentloop_daemon.backends import load_configured
    from latentloop_daemon.cli.options import model_overrides
    from latentloop_daemon.config import load_config

    config = load_config(args.config, {**model_overrides(args), "engine.warmup": False})
    if args.compare_reference:
        from latentloop_daemon.cli.bench_compare import run_compare

        return run_compare(args, config)
    t0 = time.perf_counter()
    engine = load_configured(config)
    load_s = time.perf_counter() - t0
    caps = engine.capabilities
    seconds = args.seconds if args.seconds is not None else min(10.0, caps.max_seconds_total)
    rows = []
    for i in range(args.repeats + 1):
        request = RenderRequest(  # a new prompt each run, so text encoding is really timed
            prompt=f"128 BPM tech house drum loop with deep bass, take {i}", seed=0,
            seconds_total=seconds, steps=args.steps, cfg_scale=args.cfg,
            batch_size=args.variations,
        )  # fmt: skip
        result = engine.render(request)
        t = result.timings_s
        steps = int(result.settings["steps"])
        total = sum(t.values())
        row = {
            "text_encode_s": t.get("conditioning", 0.0),
            "step_s": t.get("sampling", 0.0) / steps,
            "sampling_s": t.get("sampling", 0.0),
            "vae_decode_s": t.get("decoding", 0.0),
            "total_s": total,
            "rtf": caps.window_seconds * args.variations / total,
        }
        label = "warm-up" if i == 0 else f"run {i}"
        print(label + ": " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
        if i > 0:
            rows.append(row)
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    meta = {
        "model": caps.model_id, "device": caps.device, "precision": caps.precision,
        "window_s": round(caps.window_seconds, 3), "steps": steps,
        "cfg": result.settings["cfg_scale"], "sampler": result.settings["sampler"],
        "batch": args.variations, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "load_s": round(load_s, 2),
    }  # fmt: skip
    if args.json:
        print(json.dumps({**meta, **{k: round(v, 5) for k, v in summary.items()}}))
    else:
        print("median: " + "  ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        print("setup:  " + "  ".join(f"{k} {v}" for k, v in meta.items()))
    return ExitCode.OK
