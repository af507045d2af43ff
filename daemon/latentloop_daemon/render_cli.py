"""``latentloop render``: load a model, render a prompt, write WAV + sidecar, print the paths."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .engine import InitAudio, RenderRequest
from .errors import RenderError
from .loopjob import LoopSettings
from .loops import LoopLength, loop_length
from .progress import progress_bar

logger = logging.getLogger(__name__)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model (render, bench, serve)."""
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny, tiny-rf, a Hugging Face repo id or alias (sao-1.0, sao-small), or a folder",
    )
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "reference", "fp32", "fp16", "bf16"],
        help="auto: fp16 on CUDA, fp32 elsewhere; reference: bit-exact with stable-audio-tools",
    )
    p.add_argument("--t5", type=Path, default=None, help="folder with the T5 encoder + tokenizer")
    p.add_argument("--offline", action="store_true", default=None, help="never contact the hub")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a .ckpt that needs full (unsafe) unpickling",
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="render a prompt to a WAV file", description=__doc__)
    p.add_argument("prompt", help="text prompt, e.g. '128 BPM tech house drum loop'")
    p.add_argument("--bpm", type=float, default=None, help="tempo; with --bars gives a loop")
    p.add_argument("--bars", type=float, default=None, help="loop length in bars (default 4)")
    p.add_argument("--beats-per-bar", type=int, default=4, help="meter numerator (default 4)")
    p.add_argument("--key", default=None, help="musical key, e.g. 'F minor' (prompt and file)")
    p.add_argument("--seconds", type=float, default=None, help="length without a tempo")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: model's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: model's)")
    p.add_argument("--sampler", default=None, help="sampler name (default: model's)")
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--init", type=Path, default=None, help="audio file to start from")
    p.add_argument("--init-noise", type=float, default=None, help="noise level for --init")
    p.add_argument("--variations", type=int, default=1, help="number of variations (one batch)")
    p.add_argument("--format", default="pcm24", choices=["pcm24", "pcm16", "float"])
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    p.add_argument("--raw", action="store_true", help="write the full window as float, uncut")
    loop = p.add_argument_group("loop processing (defaults: docs/loops.md)")
    d = LoopSettings()
    loop.add_argument(
        "--padding",
        type=float,
        default=d.padding_s,
        help=f"seconds rendered past the loop end (default {d.padding_s:g})",
    )
    loop.add_argument(
        "--crossfade-ms",
        type=float,
        default=d.crossfade_ms,
        help=f"seam crossfade, ms; 0 = hard cut (default {d.crossfade_ms:g})",
    )
    loop.add_argument(
        "--target-lufs",
        type=float,
        default=d.target_lufs,
        help=f"loudness target (default {d.target_lufs:g} LUFS)",
    )
    loop.add_argument(
        "--ceiling",
        type=float,
        default=d.ceiling_dbtp,
        help=f"true-peak ceiling (default {d.ceiling_dbtp:g} dBTP)",
    )
    loop.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="no loudness normalisation (peak-safe only)",
    )
    loop.add_argument(
        "--no-tempo-in-prompt",
        dest="tempo_in_prompt",
        action="store_false",
        help="do not add 'N BPM' to the prompt",
    )
    loop.add_argument(
        "--max-rerolls",
        type=int,
        default=d.max_rerolls,
        help="re-render with new seeds while the measured tempo is off (default 0)",
    )
    add_model_options(p)
    p.set_defaults(handler=run)


def read_init_audio(path: Path) -> InitAudio:
    """Read an audio file (any format libsndfile reads) as float32 (frames, channels)."""
    import soundfile as sf

    if not path.is_file():
        raise RenderError(f"cannot read init audio {path}: not an existing file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as e:
        raise RenderError(f"cannot read init audio {path}: {e}") from e
    return InitAudio(data=data, sample_rate=int(rate))


def run(args: argparse.Namespace) -> int:
    """Handle ``latentloop render``; return the exit code."""
    from .backends import load_engine
    from .loopjob import plan_loop, render_loops, write_loops
    from .outputs import render_meta

    if args.out.exists() and not args.out.is_dir():  # fail now, not after a long render
        raise RenderError(f"--out {args.out} is a file, not a folder")
    init = read_init_audio(args.init) if args.init else None
    if args.init_noise is not None and init is None:
        raise RenderError("--init-noise needs --init FILE")
    _check_args_before_loading(args)
    engine = load_engine(
        args.model,
        device=args.device,
        precision=args.precision,
        t5_dir=args.t5,
        offline=args.offline,
        trust_checkpoint=args.trust_checkpoint,
    )
    caps = engine.capabilities
    if caps.builtin_noise_model:
        logger.warning(
            "model %r is a built-in test model with random weights: it makes noise, not music",
            caps.model_id,
        )
    base = RenderRequest(
        prompt=args.prompt,
        seconds_total=1.0,
        negative_prompt=args.negative,
        seed=args.seed,
        steps=args.steps,
        cfg_scale=args.cfg,
        sampler=args.sampler,
        batch_size=args.variations,
        init_audio=init,
        init_noise_level=args.init_noise,
    )
    if args.raw:
        return _render_raw(engine, base, args)
    length = _length(args, caps.sample_rate, caps.max_seconds_total)
    settings = LoopSettings(
        padding_s=args.padding,
        crossfade_ms=args.crossfade_ms,
        target_lufs=args.target_lufs,
        ceiling_dbtp=args.ceiling,
        normalize=args.normalize,
        tempo_in_prompt=args.tempo_in_prompt,
        max_rerolls=args.max_rerolls,
    )
    plan = plan_loop(args.prompt, length, args.key, caps, settings)
    with progress_bar() as on_step:
        result, loops = render_loops(engine, plan, base, settings, on_step)
    wavs = write_loops(
        loops,
        plan,
        result,
        args.out,
        args.prompt,
        fmt=args.format,
        model=caps.model_id,
        meta_for=lambda index: render_meta(result, index, args.prompt, args.negative),
    )
    for wav in wavs:
        print(wav)
    logger.info(
        "rendered %d file(s) in %.1fs (seed %d)",
        len(loops),
        sum(result.timings_s.values()),
        result.seed,
    )
    return 0


def _render_raw(engine: Any, base: RenderRequest, args: argparse.Namespace) -> int:
    """--raw: the model's full window untouched, float32 (seconds_total from --seconds)."""
    import dataclasses

    from .outputs import save_raw

    caps = engine.capabilities
    seconds = args.seconds if args.seconds is not None else min(10.0, caps.max_seconds_total)
    request = dataclasses.replace(base, seconds_total=seconds)
    with progress_bar() as on_step:
        result = engine.render(request, on_step=on_step)
    for wav in save_raw(result, request, args.out):
        print(wav)
    return 0


def _length(args: argparse.Namespace, rate: int, max_seconds: float) -> LoopLength:
    """The loop's exact length from --bpm/--bars/--beats-per-bar or --seconds (shared math)."""
    bars = args.bars
    if args.bpm is not None and bars is None:
        bars = 4.0
    seconds = args.seconds
    if args.bpm is None and seconds is None:
        if bars is not None:
            raise RenderError("--bars needs --bpm")
        seconds = min(8.0, max_seconds)
    try:
        return loop_length(
            rate, bpm=args.bpm, bars=bars, beats_per_bar=args.beats_per_bar, seconds=seconds
        )
    except ValueError as e:
        raise RenderError(str(e)) from e


def _check_args_before_loading(args: argparse.Namespace) -> None:
    """Range checks that need no model, so a typo fails before a long model load."""
    if args.seconds is not None and not args.seconds > 0:
        raise RenderError(f"--seconds must be > 0, got {args.seconds:g}")
    if args.steps is not None and args.steps < 1:
        raise RenderError(f"--steps must be >= 1, got {args.steps}")
    if args.bpm is not None and not 20 <= args.bpm <= 999:
        raise RenderError(f"--bpm must be 20..999, got {args.bpm:g}")
    if args.bars is not None and not args.bars > 0:
        raise RenderError(f"--bars must be > 0, got {args.bars:g}")
    if args.seconds is not None and args.bpm is not None:
        raise RenderError("give --bpm/--bars or --seconds, not both")
    if not 1 <= args.beats_per_bar <= 32:
        raise RenderError(f"--beats-per-bar must be 1..32, got {args.beats_per_bar}")
    if not 0 <= args.padding <= 30 or not 0 <= args.crossfade_ms <= 500:
        raise RenderError("--padding must be 0..30 s and --crossfade-ms 0..500")
    if not 0 <= args.max_rerolls <= 10:
        raise RenderError(f"--max-rerolls must be 0..10, got {args.max_rerolls}")
    if args.variations < 1:
        raise RenderError(f"--variations must be >= 1, got {args.variations}")
    if args.init_noise is not None and not args.init_noise > 0:
        raise RenderError(f"--init-noise must be > 0, got {args.init_noise:g}")
