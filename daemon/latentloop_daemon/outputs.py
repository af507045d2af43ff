"""Turn a RenderResult into files: one WAV + one sidecar JSON per variation.

Plain (non-loop) renders keep the first ``seconds`` of the window; if the peak would clip,
the clip is scaled down to a -1 dBFS peak and the gain recorded (loop processing replaces this
in the loops module). ``raw`` keeps the full window untouched as 32-bit float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import __version__
from .engine import RenderRequest, RenderResult
from .wavfile import slugify, unique_stem, write_json_atomic, write_wav_atomic

PEAK_CEILING = 10 ** (-1 / 20)  # -1 dBFS


@dataclass(frozen=True, slots=True)
class SavedClip:
    """One written variation: its WAV, its sidecar and what was recorded."""

    wav_path: Path
    sidecar_path: Path
    index: int
    seed: int
    seconds: float
    metadata: dict[str, Any]


def to_frames_first(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The one place that turns [C, N] (engine layout) into (N, C) (soundfile/sounddevice)."""
    return np.ascontiguousarray(audio.T)


def peak_safe(audio: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], float]:
    """Scale down to a -1 dBFS peak if the peak is above it; return (audio, linear gain)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if not math.isfinite(peak):
        raise ValueError("audio contains NaN or infinite samples")
    if peak <= PEAK_CEILING:
        return audio, 1.0
    gain = PEAK_CEILING / peak
    return (audio * np.float32(gain)).astype(np.float32), gain


def save_result(
    result: RenderResult, request: RenderRequest, out_dir: Path, *, fmt: str = "pcm24",
    raw: bool = False, extra: dict[str, Any] | None = None, frames: int | None = None,
    stem: str | None = None,
) -> list[SavedClip]:  # fmt: skip
    """Write every variation of ``result``; return what was written, in variation order.

    ``frames`` cuts each clip to exactly that many samples (default: ``seconds_total``);
    ``stem`` replaces the default file name stem (prompt slug, seconds, seed).
    """
    out_dir = Path(out_dir)
    saved = []
    for index in range(result.batch_size):
        audio = result.audio[index]  # [C, N]
        gain = 1.0
        if raw:
            clip, fmt_used = audio, "float"
        else:
            n = frames if frames is not None else round(request.seconds_total * result.sample_rate)
            if n > audio.shape[-1]:
                raise ValueError(f"cannot cut {n} frames from a {audio.shape[-1]}-frame window")
            clip, gain = peak_safe(audio[:, :n])
            fmt_used = fmt
        seconds = clip.shape[-1] / result.sample_rate
        name = stem or f"{slugify(request.prompt)}_{seconds:g}s_seed{result.seed}"
        if result.batch_size > 1:
            name += f"_v{index + 1}"
        name = unique_stem(out_dir, name + ("_raw" if raw else ""))
        meta = {
            "software": f"latentloop {__version__}",
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": result.seed,
            "batch_size": result.batch_size,
            "variation_index": index,
            "reproduce": "same model, seed, batch_size and settings give this variation",
            "sample_rate": result.sample_rate,
            "channels": int(clip.shape[0]),
            "frames": int(clip.shape[-1]),
            "seconds": seconds,
            "raw_window": raw,
            "format": fmt_used,
            "gain": gain,
            "settings": result.settings,
            "timings_s": result.timings_s,
            **(extra or {}),
        }
        wav = write_wav_atomic(
            out_dir / f"{name}.wav", to_frames_first(clip), result.sample_rate, fmt_used
        )
        side = write_json_atomic(out_dir / f"{name}.json", {"file": wav.name, **meta})
        saved.append(SavedClip(wav, side, index, result.seed, seconds, meta))
    return saved
