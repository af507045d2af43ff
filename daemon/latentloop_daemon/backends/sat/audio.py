"""Init-audio preparation: resample with soxr, match channels, pad or crop. numpy only."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...errors import RenderError


def prepare_init_audio(
    data: npt.NDArray[np.float32], in_rate: int, out_rate: int, channels: int, length: int
) -> npt.NDArray[np.float32]:
    """(frames, ch) at in_rate -> [channels, length] float32 at out_rate.

    Mono becomes stereo by repetition, more than two channels keep the first two (as
    stable-audio-tools' ``set_audio_channels``); the end is zero-padded or cropped.
    """
    audio = np.asarray(data, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise RenderError(f"init audio must be (frames, channels) with data, got {audio.shape}")
    if not np.isfinite(audio).all():
        raise RenderError("init audio contains NaN or infinite samples")
    if in_rate <= 0:
        raise RenderError(f"init audio sample rate must be positive, got {in_rate}")
    if in_rate != out_rate:
        import soxr

        audio = soxr.resample(audio, in_rate, out_rate, quality="VHQ").astype(np.float32)
    if channels == 1:
        audio = audio.mean(axis=1, keepdims=True)
    elif audio.shape[1] == 1:
        audio = np.repeat(audio, channels, axis=1)
    else:
        audio = audio[:, :channels]
    out = np.zeros((channels, length), dtype=np.float32)
    n = min(length, audio.shape[0])
    out[:, :n] = audio[:n].T
    return out
