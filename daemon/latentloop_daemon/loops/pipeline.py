"""The loop pipeline: one ``LoopRequest`` in, finished ``Clip``s and their files out.

The one entry point for making loops, shared by the daemon's render worker and
``latentloop render``; callers only map its outcomes (exceptions) to their replies or exit codes.
``make_loops`` runs, in order:

1. length: the request's bpm/bars/meter (or seconds), defaults from ``[render]``, as an exact
   frame count at the model's rate (``loops.length``);
2. plan: padding past the loop end, the final prompt, and a check that it fits the model;
3. engine request: the model-level ``RenderRequest`` (length conditioning = loop + padding;
   the engine is told the pipeline keeps only loop + crossfade of the window);
4. render and finish: ``engine.render``, then per variation seam, loudness and tempo check
   (``finish_clip``); with ``max_rerolls``, re-render with new seeds while the tempo is off;
5. cancel check: a cancel that came after the last sampler step stops here, before any file;
6. write: every variation's WAV + sidecar, all or none (``files.writer``).

Threads: runs on the caller's thread (the render worker in the daemon); the callbacks in
``LoopCallbacks`` are called on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from latentloop_bridge.spec import RANGES
from latentloop_daemon.engine import (
    CancelFn,
    Capabilities,
    Engine,
    InitAudio,
    RenderRequest,
    RenderResult,
    StepFn,
    to_frames_first,
)
from latentloop_daemon.errors import BadOutputError, RenderCancelled, RenderError
from latentloop_daemon.loops.clip import Clip
from latentloop_daemon.loops.length import LoopLength, loop_length
from latentloop_daemon.loops.loudness import normalize
from latentloop_daemon.loops.plan import LoopPlan, plan_loop
from latentloop_daemon.loops.seam import make_seamless
from latentloop_daemon.loops.tempo import estimate_tempo

if TYPE_CHECKING:
    from latentloop_daemon.config import RenderConfig

RetryFn = Callable[[int, float], None]  # (attempt, measured bpm)
MetaFn = Callable[[int], dict[str, Any]]  # variation index -> sidecar fields of the caller


@dataclass(frozen=True, slots=True)
class LoopRequest:
    """What a user asks for, in musical terms. ``None`` takes the ``[render]`` or model default.

    At most one length: ``seconds``, or ``bpm`` with optional ``bars`` (default
    ``render.bars``); neither gives ``render.seconds``. Ranges are protocol v1's
    (``latentloop_bridge.spec.RANGES``); out-of-range values raise ``RenderError``.
    """

    prompt: str
    negative: str | None = None
    bpm: float | None = None
    bars: float | None = None
    beats_per_bar: int | None = None
    seconds: float | None = None
    key: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    variations: int = 1
    init_audio: InitAudio | None = None
    init_noise_level: float | None = None

    def __post_init__(self) -> None:
        for name in ("bpm", "bars", "beats_per_bar", "seconds", "steps", "cfg", "variations"):
            value = getattr(self, name)
            r = RANGES[name]
            if value is not None and not r.contains(value):
                raise RenderError(f"{name} must be {r.describe()}, got {value:g}")
        if self.seconds is not None and (self.bpm is not None or self.bars is not None):
            raise RenderError("give bpm (and bars) or seconds, not both")
        if self.bars is not None and self.bpm is None:
            raise RenderError("bars needs bpm (or give seconds instead)")
        if self.init_noise_level is not None and self.init_audio is None:
            raise RenderError("init_noise_level needs init audio")
        if self.init_noise_level is not None and not self.init_noise_level > 0:
            raise RenderError(f"init_noise_level must be > 0, got {self.init_noise_level:g}")


@dataclass(frozen=True, slots=True)
class LoopCallbacks:
    """Hooks the caller gives the pipeline; all are called on the pipeline's thread."""

    on_step: StepFn | None = None  # (step, total, sigma) after each sampler step
    should_cancel: CancelFn | None = None  # polled between steps and before writing
    on_retry: RetryFn | None = None  # a re-roll starts: (attempt from 1, measured bpm)


@dataclass(frozen=True, slots=True)
class LoopsMade:
    """The pipeline's outcome: one clip and one WAV path per variation, in order."""

    clips: list[Clip]
    wavs: list[Path]
    result: RenderResult  # the engine's result the clips came from (seed, settings, timings)
    plan: LoopPlan


def resolve_length(request: LoopRequest, rate: int, settings: RenderConfig) -> LoopLength:
    """Step 1: the exact length at ``rate``, with the ``[render]`` defaults filled in."""
    bpm, bars, seconds = request.bpm, request.bars, request.seconds
    if seconds is None and bpm is None:
        seconds = settings.seconds
    elif seconds is None and bars is None:
        bars = settings.bars
    beats_per_bar = request.beats_per_bar or settings.beats_per_bar
    try:
        return loop_length(rate, bpm=bpm, bars=bars, beats_per_bar=beats_per_bar, seconds=seconds)
    except ValueError as e:
        raise RenderError(str(e)) from e


def engine_request(
    request: LoopRequest,
    *,
    prompt: str,
    seconds_total: float,
    seed: int | None,
    keep_frames: int | None = None,
) -> RenderRequest:
    """Step 3: the model-level request: ``prompt``, ``seconds_total`` and ``keep_frames`` (what
    the loop keeps of the window) come from the plan (or, for ``--raw``, from the user: the
    whole window), the rest from ``request``."""
    return RenderRequest(
        prompt=prompt,
        seconds_total=seconds_total,
        negative_prompt=request.negative or None,
        seed=seed,
        steps=request.steps,
        cfg_scale=request.cfg,
        sampler=request.sampler,
        batch_size=request.variations,
        init_audio=request.init_audio,
        init_noise_level=request.init_noise_level,
        keep_frames=keep_frames,
    )


def finish_clip(
    window: npt.NDArray[np.float32], plan: LoopPlan, s: RenderConfig, seed: int, variation: int
) -> Clip:
    """Model window [C, N] -> a treated clip: seam crossfade, loudness, tempo measurement."""
    rate = plan.length.sample_rate
    audio = to_frames_first(window)
    loop, seam = make_seamless(audio, plan.length.frames, rate, s.crossfade_ms, s.seam_mode)  # type: ignore[arg-type]
    loop, loudness = normalize(
        loop, rate, s.target_lufs, s.ceiling_dbtp, enabled=s.normalize, limiter=s.limiter
    )
    tempo = None
    expected = plan.length.actual_bpm
    if s.tempo_check and expected is not None:
        # search around the requested tempo (requests may be 20-999 BPM)
        tempo = estimate_tempo(
            loop, rate, expected_bpm=expected, min_bpm=expected / 2.5, max_bpm=expected * 2.5
        )
    return Clip(
        loop, rate, plan.length, plan.key, plan.prompt, seed, variation, seam, loudness, tempo
    )


def render_clips(
    engine: Engine, request: LoopRequest, plan: LoopPlan, s: RenderConfig, hooks: LoopCallbacks
) -> tuple[RenderResult, list[Clip]]:
    """Step 4: render every variation and finish it. With ``max_rerolls``, re-render with the
    next seed while a variation's measured tempo is off by more than ``tempo_tolerance_pct``
    (announced through ``on_retry``), and keep the attempt whose worst variation is best."""
    seed = request.seed
    best: tuple[float, RenderResult, list[Clip]] | None = None
    for attempt in range(s.max_rerolls + 1):
        result = engine.render(
            engine_request(
                request,
                prompt=plan.prompt,
                seconds_total=plan.seconds_total,
                seed=seed,
                keep_frames=plan.keep_frames or None,
            ),
            hooks.on_step,
            hooks.should_cancel,
        )
        if not np.isfinite(result.audio).all():
            raise BadOutputError("the model produced NaN or infinite samples; nothing written")
        clips = [
            finish_clip(result.audio[i], plan, s, result.seed, i) for i in range(result.batch_size)
        ]
        deviations = [abs(c.tempo_deviation_pct or 0.0) for c in clips]
        worst = max(deviations)
        if best is None or worst < best[0]:
            best = (worst, result, clips)
        if worst <= s.tempo_tolerance_pct or attempt == s.max_rerolls:
            break
        measured = clips[deviations.index(worst)].tempo
        if hooks.on_retry is not None and measured is not None and measured.bpm is not None:
            hooks.on_retry(attempt + 1, measured.bpm)
        seed = (result.seed + 1) % 2**32
    assert best is not None
    return best[1], best[2]


def make_loops(
    engine: Engine,
    request: LoopRequest,
    settings: RenderConfig,
    out_dir: Path,
    meta_for: MetaFn,
    hooks: LoopCallbacks | None = None,
) -> LoopsMade:
    """Make the loops ``request`` asks for and write them to ``out_dir`` (steps in the module
    docstring). ``meta_for(variation)`` adds the caller's fields to each sidecar.

    Raises:
        RenderError: the request does not fit the model (length, key, beats) or is invalid.
        RenderCancelled: ``should_cancel`` became true (before any file is written).
        OutputError: a file could not be written (then none of the job's files remain).
    """
    from latentloop_daemon.files.writer import write_clips

    hooks = hooks or LoopCallbacks()
    caps: Capabilities = engine.capabilities
    # 1. length
    length = resolve_length(request, caps.sample_rate, settings)
    # 2. plan
    plan = plan_loop(request.prompt, length, request.key, caps, settings)
    # 3-4. engine request, render, finish (with tempo re-rolls)
    result, clips = render_clips(engine, request, plan, settings, hooks)
    # 5. a cancel that arrived after the last sampler step still stops the job
    if hooks.should_cancel is not None and hooks.should_cancel():
        raise RenderCancelled("cancelled before the files were written")
    # 6. write: all variations or none
    wavs = write_clips(
        clips,
        plan,
        result,
        out_dir,
        fmt=settings.format,
        model=caps.model_id,
        prompt=request.prompt,
        negative=request.negative,
        extra_meta=meta_for,
    )
    return LoopsMade(clips, wavs, result, plan)
