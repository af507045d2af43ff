"""``latentloop render``: load a model, render a prompt, write WAV + sidecar, print the paths."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .engine import InitAudio, RenderRequest
from .errors import RenderError

logger = logging.getLogger(__name__)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model (render, bench, serve)."""
    p.add_argument(
        "--model", default="tiny",
        help="tiny, tiny-rf, a Hugging Face repo id or alias (sao-1.0, sao-small), or a folder",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "reference", "fp32", "fp16", "bf16"],
        help="auto: fp16 on CUDA, fp32 elsewhere; reference: bit-exact with stable-audio-tools",
    )  # fmt: skip
    p.add_argument("--t5", type=Path, default=None, help="folder with the T5 encoder + tokenizer")
    p.add_argument("--offline", action="store_true", default=None, help="never contact the hub")
    p.add_argument(
        "--trust-checkpoint", action="store_true",
        help="allow a .ckpt that needs full (unsafe) unpickling",
    )  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="render a prompt to a WAV file", description=__doc__)
    p.add_argument("prompt", help="text prompt, e.g. '128 BPM tech house drum loop'")
    p.add_argument("--seconds", type=float, default=None, help="length (default: 10, or window)")
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
    from .outputs import save_result

    if args.out.exists() and not args.out.is_dir():  # fail now, not after a long render
        raise RenderError(f"--out {args.out} is a file, not a folder")
    init = read_init_audio(args.init) if args.init else None
    if args.init_noise is not None and init is None:
        raise RenderError("--init-noise needs --init FILE")
    _check_args_before_loading(args)
    engine = load_engine(
        args.model, device=args.device, precision=args.precision, t5_dir=args.t5,
        offline=args.offline, trust_checkpoint=args.trust_checkpoint,
    )  # fmt: skip
    caps = engine.capabilities
    if caps.builtin_noise_model:
        logger.warning(
            "model %r is a built-in test model with random weights: it makes noise, not music",
            caps.model_id,
        )
    seconds = args.seconds if args.seconds is not None else min(10.0, caps.max_seconds_total)
    request = RenderRequest(
        prompt=args.prompt, seconds_total=seconds, negative_prompt=args.negative, seed=args.seed,
        steps=args.steps, cfg_scale=args.cfg, sampler=args.sampler, batch_size=args.variations,
        init_audio=init, init_noise_level=args.init_noise,
    )  # fmt: skip
    with _progress_bar() as on_step:
        result = engine.render(request, on_step=on_step)
    saved = save_result(result, request, args.out, fmt=args.format, raw=args.raw)
    for clip in saved:
        print(clip.wav_path)
    logger.info(
        "rendered %d file(s) in %.1fs (seed %d)",
        len(saved), sum(result.timings_s.values()), result.seed,
    )  # fmt: skip
    return 0


def _check_args_before_loading(args: argparse.Namespace) -> None:
    """Range checks that need no model, so a typo fails before a long model load."""
    if args.seconds is not None and not args.seconds > 0:
        raise RenderError(f"--seconds must be > 0, got {args.seconds:g}")
    if args.steps is not None and args.steps < 1:
        raise RenderError(f"--steps must be >= 1, got {args.steps}")
    if args.variations < 1:
        raise RenderError(f"--variations must be >= 1, got {args.variations}")
    if args.init_noise is not None and not args.init_noise > 0:
        raise RenderError(f"--init-noise must be > 0, got {args.init_noise:g}")


class _progress_bar:  # noqa: N801 - used as a context manager like a function
    """A tqdm bar on stderr (hidden when stderr is not a terminal); yields the step callback."""

    def __enter__(self) -> Any:
        from tqdm import tqdm

        self.bar: Any = None
        self._tqdm = tqdm

        def on_step(step: int, total: int, sigma: float) -> None:
            if self.bar is None:
                self.bar = self._tqdm(total=total, unit="step", file=sys.stderr, disable=None)
            self.bar.update(step - self.bar.n)

        return on_step

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
