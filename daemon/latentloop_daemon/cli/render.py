"""``latentloop render``: render loops in this process (no daemon), write them, print the paths.

Reads the same config file as ``serve`` (``--config``, then ``LATENTLOOP_*``; flags override),
so a user's ``[engine]``, ``[render]`` and backend settings apply to both. The loop is made by
the same pipeline as the daemon's (``loops.pipeline.make_loops``); ``--raw`` instead writes the
model's full window untouched.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from latentloop_daemon.cli.options import add_config_option, add_model_options, model_overrides
from latentloop_daemon.engine import InitAudio
from latentloop_daemon.errors import RenderError
from latentloop_daemon.exit_codes import ExitCode
from latentloop_daemon.files.formats import FORMAT_NAMES

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="render a prompt to loop files", description=__doc__)
    p.add_argument("prompt", help="text prompt, e.g. '128 BPM tech house drum loop'")
    p.add_argument("--bpm", type=float, default=None, help="tempo; with --bars gives a loop")
    p.add_argument("--bars", type=float, default=None, help="loop length in bars (render.bars)")
    p.add_argument(
        "--beats-per-bar",
        type=int,
        default=None,
        help="meter numerator (render.beats_per_bar, default 4)",
    )
    p.add_argument("--key", default=None, help="musical key, e.g. 'F minor' (prompt and file)")
    p.add_argument(
        "--seconds", type=float, default=None, help="length without a tempo (render.seconds)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: model's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: model's)")
    p.add_argument("--sampler", default=None, help="sampler name (default: model's)")
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--init", type=Path, default=None, help="audio file to start from")
    p.add_argument("--init-noise", type=float, default=None, help="noise level for --init")
    p.add_argument("--variations", type=int, default=1, help="number of variations (one batch)")
    p.add_argument(
        "--format", default=None, choices=FORMAT_NAMES, help="render.format (default pcm24)"
    )
    p.add_argument("--out", type=Path, default=None, help="render.out_dir (default: out)")
    p.add_argument("--raw", action="store_true", help="write the full window as float, uncut")
    loop = p.add_argument_group("loop processing ([render] section; docs/loops.md)")
    loop.add_argument(
        "--padding",
        type=float,
        default=None,
        help="render.padding_s: seconds rendered past the loop end",
    )
    loop.add_argument(
        "--crossfade-ms",
        type=float,
        default=None,
        help="render.crossfade_ms: seam crossfade; 0 = hard cut",
    )
    loop.add_argument(
        "--target-lufs", type=float, default=None, help="render.target_lufs: loudness target"
    )
    loop.add_argument(
        "--ceiling", type=float, default=None, help="render.ceiling_dbtp: true-peak ceiling"
    )
    loop.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        default=None,
        help="render.normalize = false: no loudness normalisation",
    )
    loop.add_argument(
        "--no-tempo-in-prompt",
        dest="tempo_in_prompt",
        action="store_false",
        default=None,
        help="render.tempo_in_prompt = false",
    )
    loop.add_argument(
        "--max-rerolls",
        type=int,
        default=None,
        help="render.max_rerolls: new seeds while the measured tempo is off",
    )
    add_config_option(p)
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
    from latentloop_daemon.backends import load_configured
    from latentloop_daemon.cli.progress import progress_bar
    from latentloop_daemon.config import load_config
    from latentloop_daemon.loops.pipeline import LoopCallbacks, LoopRequest, make_loops

    # 1. settings and the request, checked before the (long) model load
    config = load_config(args.config, _overrides(args))
    out_dir = Path(config.render.out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise RenderError(f"the output folder {out_dir} is a file")
    init = read_init_audio(args.init) if args.init else None
    if args.raw and args.bpm is not None:
        raise RenderError("--raw writes the model's window: give --seconds, not --bpm")
    request = LoopRequest(
        prompt=args.prompt,
        negative=args.negative,
        bpm=args.bpm,
        bars=args.bars,
        beats_per_bar=args.beats_per_bar,
        seconds=args.seconds,
        key=args.key,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        sampler=args.sampler,
        variations=args.variations,
        init_audio=init,
        init_noise_level=args.init_noise,
    )
    # 2. the model
    engine = load_configured(config)
    caps = engine.capabilities
    if caps.builtin_noise_model:
        logger.warning(
            "model %r is a built-in test model with random weights: it makes noise, not music",
            caps.model_id,
        )
    # 3. render: the raw window, or loops through the daemon's pipeline
    if args.raw:
        return _render_raw(engine, request, out_dir, config.render.seconds)
    with progress_bar() as on_step:
        made = make_loops(
            engine, request, config.render, out_dir, lambda _: {}, LoopCallbacks(on_step=on_step)
        )
    for wav in made.wavs:
        print(wav)
    logger.info(
        "rendered %d file(s) in %.1fs (seed %d)",
        len(made.wavs),
        sum(made.result.timings_s.values()),
        made.result.seed,
    )
    return ExitCode.OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **model_overrides(args),
        "engine.warmup": False,
        "render.out_dir": str(args.out) if args.out is not None else None,
        "render.format": args.format,
        "render.padding_s": args.padding,
        "render.crossfade_ms": args.crossfade_ms,
        "render.target_lufs": args.target_lufs,
        "render.ceiling_dbtp": args.ceiling,
        "render.normalize": args.normalize,
        "render.tempo_in_prompt": args.tempo_in_prompt,
        "render.max_rerolls": args.max_rerolls,
    }


def _render_raw(engine: Any, request: Any, out_dir: Path, default_s: float) -> int:
    """--raw: the model's full window untouched, float32 (seconds_total = ``--seconds``, else
    ``render.seconds``)."""
    from latentloop_daemon.cli.progress import progress_bar
    from latentloop_daemon.files.writer import save_raw
    from latentloop_daemon.loops.pipeline import engine_request

    caps = engine.capabilities
    seconds = request.seconds if request.seconds is not None else default_s
    if seconds > caps.max_seconds_total:
        raise RenderError(
            f"{seconds:g} s is longer than {caps.model_id} renders ({caps.max_seconds_total:g} s)"
        )
    raw = engine_request(request, prompt=request.prompt, seconds_total=seconds, seed=request.seed)
    with progress_bar() as on_step:
        result = engine.render(raw, on_step=on_step)
    for wav in save_raw(result, raw, out_dir):
        print(wav)
    return ExitCode.OK
