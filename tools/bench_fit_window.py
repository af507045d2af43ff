"""Sampling time with and without the fit window (``[sat] fit_window``), a benchmark, not a test.

Loads a full-size random model (``random:sao-small`` or ``random:sao-1.0``), plans a loop as the
loop pipeline does (default: 4 bars at 120 BPM, ``[render]`` defaults: 2 s padding, 20 ms
crossfade), and times the sampling stage alone (conditioning, noise and sampler steps; no
decode: both sides decode the same kept span) of the full window against the fit window's
latents, alternating, same seed. Prints each run and the median per side.

    .venv/bin/python tools/bench_fit_window.py --model random:sao-1.0 --steps 2 --pairs 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="random:sao-small")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cfg", type=float, default=None, help="default: the model's")
    p.add_argument("--bpm", type=float, default=120.0)
    p.add_argument("--bars", type=float, default=4.0)
    p.add_argument("--pairs", type=int, default=2, help="timed (full, fit) pairs after a warm-up")
    p.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    args = p.parse_args()

    import torch

    from latentloop_daemon.backends import load_engine
    from latentloop_daemon.backends.sat.backend import SatEngine
    from latentloop_daemon.backends.sat.model import generate
    from latentloop_daemon.config import RenderConfig
    from latentloop_daemon.loops.pipeline import LoopRequest, engine_request, resolve_length
    from latentloop_daemon.loops.plan import plan_loop

    t0 = time.perf_counter()
    engine = load_engine(args.model, device="cpu", threads=args.threads, fit_window=True)
    assert isinstance(engine, SatEngine)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", flush=True)
    settings = RenderConfig()
    loop = LoopRequest("techno loop", bpm=args.bpm, bars=args.bars, steps=args.steps, cfg=args.cfg)
    length = resolve_length(loop, engine.capabilities.sample_rate, settings)
    plan = plan_loop(loop.prompt, length, None, engine.capabilities, settings)
    request = engine_request(
        loop, prompt=plan.prompt, seconds_total=plan.seconds_total, seed=0,
        keep_frames=plan.keep_frames,
    )  # fmt: skip
    sampler = engine._settings(request)
    cond = [engine._cond_item(request.prompt, request)]
    full, fit = engine.config.latent_length, engine._latent_frames(request)
    print(
        f"{args.bars:g} bars at {args.bpm:g} BPM: seconds_total {plan.seconds_total:g} s, "
        f"keep {plan.keep_frames} samples; latents full {full}, fit {fit}; "
        f"{sampler.steps} {sampler.sampler} steps, cfg {sampler.cfg_scale:g}; "
        f"{torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    def sample(frames: int) -> float:
        start = [0.0]

        def stage(name: str) -> None:
            if name == "sampling":
                start[0] = time.perf_counter()

        generate(
            engine.model, sampler, cond, None, 0, engine.device, cast_noise=True,
            on_stage=stage, return_latents=True, latent_frames=frames,
        )  # fmt: skip
        return time.perf_counter() - start[0]

    sample(fit)  # warm-up
    times: dict[str, list[float]] = {"full": [], "fit": []}
    for i in range(args.pairs):
        for name, frames in (("full", full), ("fit", fit)):
            s = sample(frames)
            times[name].append(s)
            print(f"pair {i + 1} {name} ({frames} latents): sampling {s:.2f} s", flush=True)
    a, b = statistics.median(times["full"]), statistics.median(times["fit"])
    print(
        f"median sampling: full {a:.2f} s, fit {b:.2f} s, {a / b:.2f}x; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
