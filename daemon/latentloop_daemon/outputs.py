"""Shared pieces of writing renders to disk, and ``--raw`` output.

Loops are written by ``loopjob.write_loops``; ``save_raw`` writes the model's full window
untouched as 32-bit float, one WAV + sidecar JSON per variation, for comparing with another
implementation given the same checkpoint, seed and settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import __version__
from .engine import RenderRequest, RenderResult
from .wavfile import slugify, unique_stem, write_json_atomic, write_wav_atomic


def to_frames_first(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The one place that turns [C, N] (engine layout) into (N, C) (soundfile/sounddevice)."""
    return np.ascontiguousarray(audio.T)


def render_meta(
    result: RenderResult, index: int, prompt: str, negative: str | None
) -> dict[str, Any]:
    """Sidecar fields common to every file: what was asked, seed, batch, settings, timings."""
    return {
        "software": f"latentloop {__version__}",
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": result.seed,
        "batch_size": result.batch_size,
        "variation_index": index,
        "reproduce": "same model, final prompt, seed, batch_size and settings give this variation",
        "settings": result.settings,
        "timings_s": result.timings_s,
    }


def save_raw(result: RenderResult, request: RenderRequest, out_dir: Path) -> list[Path]:
    """Write each variation's full window [C, N] as float WAV + sidecar; return the WAV paths."""
    out_dir = Path(out_dir)
    paths = []
    for index in range(result.batch_size):
        audio = result.audio[index]  # [C, N]
        seconds = audio.shape[-1] / result.sample_rate
        name = f"{slugify(request.prompt)}_{seconds:g}s_seed{result.seed}"
        if result.batch_size > 1:
            name += f"_v{index + 1}"
        name = unique_stem(out_dir, name + "_raw")
        meta = {
            **render_meta(result, index, request.prompt, request.negative_prompt),
            "sample_rate": result.sample_rate,
            "channels": int(audio.shape[0]),
            "frames": int(audio.shape[-1]),
            "seconds": seconds,
            "raw_window": True,
            "format": "float",
            "gain": 1.0,
        }
        wav = write_wav_atomic(
            out_dir / f"{name}.wav", to_frames_first(audio), result.sample_rate, "float"
        )
        write_json_atomic(out_dir / f"{name}.json", {"file": wav.name, **meta})
        paths.append(wav)
    return paths
