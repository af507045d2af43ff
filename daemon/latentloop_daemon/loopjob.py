"""Loop processing: from a request's musical terms to finished loop files.

Shared by the daemon's render worker and ``latentloop render``, so both produce the same files:

1. ``plan_loop``: exact frame count, padding after the loop end (the model is told the piece
   is longer, so it does not end at the loop point), the final prompt ("N BPM" and the key added).
2. ``finish_loop``: cut, crossfade the rendered continuation into the loop start (seam),
   loudness-normalise under a true-peak ceiling, measure the tempo.
3. ``write_loop``: WAV with acid/smpl/cue/LIST chunks (or a plain WAV for seconds-only
   renders) plus a sidecar JSON holding everything needed to reproduce and judge it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .engine import Capabilities, Engine, RenderRequest, RenderResult
from .errors import RenderError
from .loops import LoopLength
from .loudness import LoudnessReport, normalize
from .outputs import to_frames_first
from .riff import describe_loop, key_root_note, write_loop_wav
from .seam import SeamReport, make_seamless
from .tempo import TempoEstimate, estimate_tempo
from .wavfile import slugify, unique_stem, write_json_atomic, write_wav_atomic

_TEMPO_IN_TEXT = re.compile(r"\b\d{2,3}(?:\.\d+)?\s*-?\s*bpm\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How loops are made (the ``[render]`` config section holds these)."""

    crossfade_ms: float = 20.0
    seam_mode: str = "auto"  # auto (by correlation), equal_gain, equal_power
    padding_s: float = 2.0  # rendered past the loop end; seconds_total = loop + padding
    normalize: bool = True
    target_lufs: float = -14.0
    ceiling_dbtp: float = -1.0
    limiter: bool = False
    tempo_in_prompt: bool = True  # add "N BPM" when the prompt names no tempo
    tempo_check: bool = True
    tempo_tolerance_pct: float = 4.0
    max_rerolls: int = 0  # new seeds tried when the measured tempo is off by more


@dataclass(frozen=True, slots=True)
class LoopPlan:
    """What to ask the model for, and how long the loop is."""

    length: LoopLength
    prompt: str  # as sent to the model
    key: str | None
    seconds_total: float  # the model's length conditioning: loop + padding
    padding_frames: int


@dataclass(frozen=True, slots=True)
class FinishedLoop:
    """One treated variation: (frames, channels) float32 audio and what was done to it."""

    audio: npt.NDArray[np.float32]
    seam: SeamReport
    loudness: LoudnessReport
    tempo: TempoEstimate | None

    @property
    def tempo_deviation_pct(self) -> float | None:
        return None if self.tempo is None else self.tempo.deviation_pct


def final_prompt(prompt: str, bpm: float | None, key: str | None, tempo_in_prompt: bool) -> str:
    """The prompt sent to the model: the user's, plus "N BPM" (if absent) and the key."""
    text = prompt.strip()
    extra = []
    if tempo_in_prompt and bpm is not None and not _TEMPO_IN_TEXT.search(text):
        extra.append(f"{bpm:g} BPM")
    if key and key.lower() not in text.lower():
        extra.append(key)
    return ", ".join([text, *extra]) if text else ", ".join(extra)


def plan_loop(
    prompt: str, length: LoopLength, key: str | None, caps: Capabilities, s: LoopSettings
) -> LoopPlan:
    """Check the loop plus its padding fits the model; build the final prompt and conditioning."""
    rate = caps.sample_rate
    if rate != length.sample_rate:
        raise ValueError("the loop length must be computed at the model's sample rate")
    if (
        length.bars is not None
        and not (Fraction(length.bars) * length.beats_per_bar).denominator == 1
    ):
        raise RenderError(
            f"bars x beats_per_bar must be a whole number of beats (the loop's tempo is written "
            f"into the file), got {length.bars:g} x {length.beats_per_bar}"
        )
    if key is not None:
        try:
            key_root_note(key)
        except ValueError as e:
            raise RenderError(f"key: {e}") from e
    limit_s = min(caps.max_seconds_total, caps.window_seconds)
    crossfade_frames = round(s.crossfade_ms * rate / 1000)
    padding_frames = max(round(s.padding_s * rate), crossfade_frames)
    total_frames = length.frames + padding_frames
    if total_frames > caps.window_samples or total_frames / rate > limit_s:
        longest = max(0.0, limit_s - padding_frames / rate)
        raise RenderError(
            f"a {length.seconds:.2f} s loop plus {padding_frames / rate:.2f} s of padding is "
            f"longer than {caps.model_id} renders ({limit_s:.2f} s); the longest loop is "
            f"{longest:.2f} s"
        )
    return LoopPlan(
        length=length,
        prompt=final_prompt(prompt, length.bpm, key, s.tempo_in_prompt),
        key=key,
        seconds_total=total_frames / rate,
        padding_frames=padding_frames,
    )


def finish_loop(window: npt.NDArray[np.float32], plan: LoopPlan, s: LoopSettings) -> FinishedLoop:
    """Model window [C, N] -> treated loop: seam crossfade, loudness, tempo measurement."""
    rate = plan.length.sample_rate
    audio = to_frames_first(window)
    loop, seam = make_seamless(audio, plan.length.frames, rate, s.crossfade_ms, s.seam_mode)  # type: ignore[arg-type]
    loop, loudness = normalize(
        loop, rate, s.target_lufs, s.ceiling_dbtp, enabled=s.normalize, limiter=s.limiter
    )
    tempo = None
    if s.tempo_check and plan.length.bpm is not None:
        expected = plan.length.actual_bpm
        assert expected is not None
        # search around the requested tempo (requests may be 20-999 BPM)
        tempo = estimate_tempo(
            loop, rate, expected_bpm=expected, min_bpm=expected / 2.5, max_bpm=expected * 2.5
        )
    return FinishedLoop(loop, seam, loudness, tempo)


def write_loop(
    loop: FinishedLoop,
    plan: LoopPlan,
    out_dir: Path,
    stem: str,
    *,
    fmt: str,
    seed: int,
    model: str,
    meta: dict[str, Any],
) -> tuple[Path, Path]:
    """Write the loop WAV (with DAW loop chunks when bars are known) and its sidecar JSON."""
    length = plan.length
    rate = length.sample_rate
    name = unique_stem(out_dir, stem)
    wav_path = out_dir / f"{name}.wav"
    if length.bars is not None:
        info = describe_loop(
            length.frames,
            rate,
            length.bars,
            beats_per_bar=length.beats_per_bar,
            key=plan.key,
            prompt=plan.prompt,
            seed=seed,
            model=model,
        )
        wav = write_loop_wav(wav_path, loop.audio, rate, info=info, fmt=fmt)
    else:
        wav = write_wav_atomic(wav_path, loop.audio, rate, fmt)
    sidecar = {
        "file": wav.name,
        **meta,
        "final_prompt": plan.prompt,
        "sample_rate": rate,
        "channels": int(loop.audio.shape[1]),
        "frames": length.frames,
        "seconds": length.seconds,
        "bpm": length.bpm,
        "actual_bpm": length.actual_bpm,
        "bars": length.bars,
        "meter": f"{length.beats_per_bar}/4",
        "key": plan.key,
        "seconds_total_conditioning": plan.seconds_total,
        "padding_frames": plan.padding_frames,
        "format": fmt,
        "measured_bpm": None if loop.tempo is None else loop.tempo.bpm,
        "tempo_deviation_pct": loop.tempo_deviation_pct,
        "tempo": _plain(loop.tempo),
        "loudness": _plain(loop.loudness),
        "seam": _plain(loop.seam),
    }
    side = write_json_atomic(out_dir / f"{name}.json", sidecar)
    return wav, side


def render_loops(
    engine: Engine,
    plan: LoopPlan,
    base: RenderRequest,
    settings: LoopSettings,
    on_step: Callable[[int, int, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_retry: Callable[[int, float], None] | None = None,
) -> tuple[RenderResult, list[FinishedLoop]]:
    """Render every variation of ``base`` (prompt, length and seed come from ``plan``) and treat
    them. With ``max_rerolls``, re-render with a new seed while a variation's measured tempo is
    off by more than the tolerance (announced through ``on_retry``), keeping the best try."""
    seed = base.seed
    best: tuple[float, RenderResult, list[FinishedLoop]] | None = None
    for attempt in range(settings.max_rerolls + 1):
        request = dataclasses.replace(
            base, prompt=plan.prompt, seconds_total=plan.seconds_total, seed=seed
        )
        result = engine.render(request, on_step, should_cancel)
        loops = [finish_loop(result.audio[i], plan, settings) for i in range(result.batch_size)]
        deviations = [abs(x.tempo_deviation_pct or 0.0) for x in loops]
        worst = max(deviations)
        if best is None or worst < best[0]:
            best = (worst, result, loops)
        if worst <= settings.tempo_tolerance_pct or attempt == settings.max_rerolls:
            break
        off = loops[deviations.index(worst)].tempo
        if on_retry is not None and off is not None and off.bpm is not None:
            on_retry(attempt + 1, off.bpm)
        seed = (result.seed + 1) % 2**32
    assert best is not None
    return best[1], best[2]


def loop_stem(prompt: str, length: LoopLength, seed: int, count: int, index: int) -> str:
    """File-name stem: prompt slug, bpm and bars (or seconds), seed, variation number."""
    if length.bpm is not None and length.bars is not None:
        stem = f"{slugify(prompt)}_{length.bpm:g}bpm_{length.bars:g}bars_seed{seed}"
    else:
        stem = f"{slugify(prompt)}_{length.seconds:g}s_seed{seed}"
    return stem + (f"_v{index + 1}" if count > 1 else "")


def write_loops(
    loops: list[FinishedLoop],
    plan: LoopPlan,
    result: RenderResult,
    out_dir: Path,
    prompt: str,
    *,
    fmt: str,
    model: str,
    meta_for: Callable[[int], dict[str, Any]],
) -> list[Path]:
    """Write every variation (``write_loop``); all of them or none: if one fails, the files
    already published for this render are removed. Returns the WAV paths in variation order."""
    published: list[Path] = []
    wavs: list[Path] = []
    try:
        for index, loop in enumerate(loops):
            stem = loop_stem(prompt, plan.length, result.seed, len(loops), index)
            wav, side = write_loop(
                loop,
                plan,
                out_dir,
                stem,
                fmt=fmt,
                seed=result.seed,
                model=model,
                meta=meta_for(index),
            )
            published += [wav, side]
            wavs.append(wav)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    return wavs


def _plain(obj: Any) -> Any:
    """A dataclass as a JSON-safe dict (NaN/inf become None)."""
    if obj is None:
        return None
    data = dataclasses.asdict(obj)
    return _finite(data)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
