"""Sidecar JSON: everything needed to reproduce a file and judge it, next to every WAV."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from latentloop_daemon import __version__
from latentloop_daemon.engine import RenderResult

if TYPE_CHECKING:
    from latentloop_daemon.loops.clip import Clip
    from latentloop_daemon.loops.plan import LoopPlan


def render_meta(
    result: RenderResult, index: int, prompt: str, negative: str | None
) -> dict[str, Any]:
    """Fields common to every file: what was asked, seed, batch, settings, timings.

    A batch split after running out of memory (``service.worker.SplitOnOutOfMemory``) rendered
    each variation alone with its own seed: the sidecar gives that seed and batch size 1.
    """
    seeds = result.settings.get("variation_seeds")
    split = bool(result.settings.get("split_after_out_of_memory")) and seeds is not None
    return {
        "software": f"latentloop {__version__}",
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": seeds[index] if split and seeds is not None else result.seed,
        "batch_size": 1 if split else result.batch_size,
        "variation_index": index,
        "reproduce": (
            "rendered alone after the batch ran out of memory: same model, final prompt, this "
            "seed, batch_size 1 and settings give this variation"
            if split
            else "same model, final prompt, seed, batch_size and settings give this variation"
        ),
        "settings": result.settings,
        "timings_s": result.timings_s,
    }


def clip_meta(clip: Clip, plan: LoopPlan, fmt: str) -> dict[str, Any]:
    """Fields that describe a finished loop: length, tempo, meter, key and the loop reports."""
    length = clip.length
    return {
        "final_prompt": clip.prompt,
        "sample_rate": clip.sample_rate,
        "channels": clip.channels,
        "frames": clip.frames,
        "seconds": clip.seconds,
        "bpm": length.bpm,
        "actual_bpm": length.actual_bpm,
        "bars": length.bars,
        "meter": f"{length.beats_per_bar}/4",
        "key": clip.key,
        "seconds_total_conditioning": plan.seconds_total,
        "padding_frames": plan.padding_frames,
        "format": fmt,
        "measured_bpm": None if clip.tempo is None else clip.tempo.bpm,
        "tempo_deviation_pct": clip.tempo_deviation_pct,
        "tempo": plain(clip.tempo),
        "loudness": plain(clip.loudness),
        "seam": plain(clip.seam),
    }


def plain(obj: Any) -> Any:
    """A dataclass as a JSON-safe dict (NaN/inf become None)."""
    if obj is None:
        return None
    return _finite(dataclasses.asdict(obj))


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
