"""``latentloop bench --compare-reference``: ours vs stable-audio-tools, side by side.

The same checkpoint (a folder; ``random:<name>`` is written to one first), seed, steps, length
and device for both, one loop (``--bpm``/``--bars``, default 4 bars at 120 BPM) made end to end:

- **fresh**: one new process per render, load included: ``latentloop render`` vs
  ``reference_worker.py --once`` in the reference virtualenv;
- **warm**: load excluded: our engine in this process (the loop pipeline's render and finish)
  vs a long-lived reference worker, which idles on its stdin while ours runs.

Runs alternate (ours first in even pairs, the reference first in odd ones); the summary is the
median over pairs of each pair's ratio (reference time / ours). Not part of CI: needs the
reference virtualenv (``../shared/tools/make-ref-venv.sh``) and its offline T5 cache.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latentloop_daemon.config import RenderConfig

WORKER = Path(__file__).with_name("reference_worker.py")
PROMPT = "120 BPM tech house drum loop with deep bass"


def add_arguments(p: Any) -> None:
    g = p.add_argument_group("--compare-reference (needs the reference virtualenv; not in CI)")
    g.add_argument("--compare-reference", action="store_true", help="time ours vs the reference")
    g.add_argument(
        "--reference-python",
        default=os.environ.get("LATENTLOOP_REFERENCE_PYTHON", ".refvenv/bin/python"),
        help="the reference venv's python (env LATENTLOOP_REFERENCE_PYTHON)",
    )
    g.add_argument(
        "--reference-hf-home",
        default=os.environ.get("LATENTLOOP_REFERENCE_HF_HOME", ".hf_home"),
        help="HF_HOME holding t5-base for the reference (offline); also our T5",
    )
    g.add_argument("--bpm", type=float, default=120.0, help="loop tempo (default 120)")
    g.add_argument("--bars", type=float, default=RenderConfig().bars,
                   help="loop length in bars (default: render.bars)")  # fmt: skip
    g.add_argument("--pairs", type=int, default=3, help="alternating pairs per mode")
    g.add_argument("--modes", default="fresh,warm", help="fresh, warm or both (comma-separated)")
    g.add_argument("--workdir", type=Path, default=None, help="where the checkpoint is written")


def run_compare(args: Any, config: Any) -> int:
    """Prepare the checkpoint, then time each mode; print pairs and medians (JSON with --json)."""
    import torch

    from latentloop_daemon.backends import load_configured
    from latentloop_daemon.exit_codes import ExitCode

    work = args.workdir or Path(tempfile.mkdtemp(prefix="latentloop-compare-"))
    model_dir = _checkpoint(config.engine.model, work, Path(args.reference_hf_home))
    config = _with_model(config, model_dir)
    engine = load_configured(config)
    threads = torch.get_num_threads()
    plan, loop_request, reference_request = _requests(engine, config, args)
    report: dict[str, Any] = {
        "model": str(model_dir), "source": args.model, "precision": engine.capabilities.precision,
        "threads": threads, "steps": reference_request["steps"], "loop_s": plan.length.seconds,
        "seconds_total": plan.seconds_total, "keep_frames": plan.keep_frames,
        "torch": torch.__version__, "cpu": _cpu_name(),
    }  # fmt: skip
    env = {**os.environ, "HF_HOME": str(Path(args.reference_hf_home).resolve())}
    env["HF_HUB_OFFLINE"] = "1"
    ref = [args.reference_python, str(WORKER), str(model_dir), "--threads", str(threads)]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "warm" in modes:
        report["warm"] = _warm(
            engine, config, plan, loop_request, reference_request, ref, env, args
        )
    engine.close()
    del engine
    if "fresh" in modes:
        report["fresh"] = _fresh(args, config, model_dir, reference_request, ref, env)
    print(json.dumps(report) if args.json else _format(report))
    return ExitCode.OK


def _checkpoint(model: str, work: Path, hf_home: Path) -> Path:
    """A folder both implementations load: model_config.json, model.safetensors, T5."""
    if model.startswith("random:"):
        from latentloop_daemon.backends.sat.backend import save_random_model

        folder = work / model.removeprefix("random:")
        if not (folder / "model.safetensors").is_file():
            save_random_model(model.removeprefix("random:"), folder)
    else:
        folder = Path(model).expanduser()
    snapshots = sorted((hf_home / "hub" / "models--t5-base" / "snapshots").glob("*"))
    if not snapshots:
        raise SystemExit(f"bench: no t5-base in {hf_home} (../shared/tools/make-t5-cache.py)")
    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            shutil.copytree(snapshots[-1], folder / sub)
    return folder


def _with_model(config: Any, model_dir: Path) -> Any:
    import dataclasses

    return dataclasses.replace(
        config, engine=dataclasses.replace(config.engine, model=str(model_dir))
    )


def _requests(engine: Any, config: Any, args: Any) -> tuple[Any, Any, dict[str, Any]]:
    from latentloop_daemon.loops.pipeline import LoopRequest, resolve_length
    from latentloop_daemon.loops.plan import plan_loop

    caps = engine.capabilities
    loop_request = LoopRequest(PROMPT, bpm=args.bpm, bars=args.bars, steps=args.steps, seed=0)
    length = resolve_length(loop_request, caps.sample_rate, config.render)
    plan = plan_loop(PROMPT, length, None, caps, config.render)
    reference_request = {
        "prompt": plan.prompt, "seconds_total": plan.seconds_total, "keep": plan.keep_frames,
        "sample_size": caps.window_samples,
        "steps": args.steps or caps.default_steps,
        "cfg": args.cfg if args.cfg is not None else caps.default_cfg_scale,
        "sampler": caps.default_sampler,
    }  # fmt: skip
    return plan, loop_request, reference_request


def _warm(
    engine: Any, config: Any, plan: Any, loop_request: Any, ref_request: dict[str, Any],
    ref_cmd: list[str], env: dict[str, str], args: Any,
) -> dict[str, Any]:  # fmt: skip
    import dataclasses

    from latentloop_daemon.loops.pipeline import LoopCallbacks, render_clips

    worker = subprocess.Popen(
        [*ref_cmd, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )  # fmt: skip
    assert worker.stdin is not None and worker.stdout is not None
    load = _read_json(worker.stdout)
    rows = []
    try:
        for i in range(args.pairs + 1):  # the first pair warms up both sides
            request = dataclasses.replace(loop_request, seed=i)

            def ours(request: Any = request) -> dict[str, float]:
                t0 = time.perf_counter()
                result, _ = render_clips(engine, request, plan, config.render, LoopCallbacks())
                return {"total_s": time.perf_counter() - t0, **result.timings_s}

            def reference(i: int = i) -> dict[str, float]:
                worker.stdin.write(json.dumps({**ref_request, "seed": i}) + "\n")  # type: ignore[union-attr]
                worker.stdin.flush()  # type: ignore[union-attr]
                return _read_json(worker.stdout)

            pair = _pair(i, ours, reference)
            print(f"warm {'warm-up' if i == 0 else i}: {_pair_line(pair)}", flush=True)
            if i > 0:
                rows.append(pair)
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    return {"reference_load_s": load.get("load_s"), **_summary(rows)}


def _fresh(
    args: Any, config: Any, model_dir: Path, ref_request: dict[str, Any], ref_cmd: list[str],
    env: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="latentloop-compare-out-"))
    rows = []
    for i in range(args.pairs):
        ours_cmd = [
            sys.executable, "-m", "latentloop_daemon", "render", PROMPT, "--model", str(model_dir),
            "--bpm", f"{args.bpm:g}", "--bars", f"{args.bars:g}", "--seed", str(i),
            "--steps", str(ref_request["steps"]), "--out", str(out), "--device", "cpu",
            "--precision", config.engine.precision,
        ]  # fmt: skip
        if args.config is not None:
            ours_cmd += ["--config", str(args.config)]
        reference_cmd = [*ref_cmd, "--once", json.dumps({**ref_request, "seed": i})]
        pair = _pair(
            i + 1,
            lambda cmd=ours_cmd: _timed_process(cmd, os.environ.copy()),
            lambda cmd=reference_cmd: _timed_process(cmd, env),
        )
        print(f"fresh {i + 1}: {_pair_line(pair)}", flush=True)
        rows.append(pair)
    shutil.rmtree(out, ignore_errors=True)
    return _summary(rows)


def _read_json(stream: Any) -> dict[str, Any]:
    """The worker's next JSON line (the reference's libraries print lines of their own)."""
    for line in stream:
        if line.startswith("{"):
            return dict(json.loads(line))
    raise SystemExit("bench: the reference worker exited (see its stderr above)")


def _timed_process(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench: {cmd[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    if "--once" in cmd and '"total_s"' not in done.stdout:  # it must have rendered
        raise SystemExit(f"bench: the reference worker rendered nothing: {done.stderr[-2000:]}")
    return {"total_s": wall}


def _pair(i: int, ours: Any, reference: Any) -> dict[str, dict[str, float]]:
    if i % 2 == 0:
        a = ours()
        return {"ours": a, "reference": reference()}
    b = reference()
    return {"ours": ours(), "reference": b}


def _pair_line(pair: dict[str, dict[str, float]]) -> str:
    o, r = pair["ours"], pair["reference"]
    parts = [f"ours {o['total_s']:.2f}s", f"reference {r['total_s']:.2f}s"]
    for key, name in (("sampling", "sampling_s"), ("decoding", "decoding_s")):
        if key in o and name in r:
            parts.append(f"{key} {o[key]:.2f}/{r[name]:.2f}s")
    return "  ".join(parts) + f"  ratio {r['total_s'] / o['total_s']:.2f}x"


def _summary(rows: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    med = statistics.median
    out: dict[str, Any] = {
        "pairs": len(rows),
        "ours_s": med(p["ours"]["total_s"] for p in rows),
        "reference_s": med(p["reference"]["total_s"] for p in rows),
        "ratio": med(p["reference"]["total_s"] / p["ours"]["total_s"] for p in rows),
    }
    for ours_key, ref_key in (
        ("conditioning", "conditioning_s"), ("sampling", "sampling_s"),
        ("decoding", "decoding_s"),
    ):  # fmt: skip
        if all(ours_key in p["ours"] and ref_key in p["reference"] for p in rows):
            out[f"{ours_key}_ours_s"] = med(p["ours"][ours_key] for p in rows)
            out[f"{ours_key}_reference_s"] = med(p["reference"][ref_key] for p in rows)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def _format(report: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in report.items() if not isinstance(v, dict)]
    for mode in ("warm", "fresh"):
        if mode in report:
            lines.append(f"{mode}: " + "  ".join(f"{k} {v}" for k, v in report[mode].items()))
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
