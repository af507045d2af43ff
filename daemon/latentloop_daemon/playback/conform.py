"""Get a ``Loop`` ready for the stream, off the audio thread: channels, rate, tempo.

- channels: mono is copied to every output channel; more channels than the stream has are
  averaged down (stereo -> mono) or cut;
- rate: soxr (VHQ), circularly: the loop is resampled with its own tail before it and its head
  after it, then cut, so the seam stays as seamless as it was;
- tempo (``conform = "stretch"``): Signalsmith Stretch (``python-stretch``, MIT), circularly in
  the same way, to exactly the transport's length of the loop's beats at the stream rate,
  with a 20 ms crossfade at the seam (a pitch-keeping stretch does not end tones in phase);
  ``"as_is"`` plays it at its own tempo (it loops on its own length); ``"refuse"`` raises
  ``TempoMismatch`` naming both tempos.

A loop whose length at the stream rate is within one sample of the transport's needs no
stretch: the mixer re-anchors every repeat to the exact bar positions anyway.

Threads: the player's control thread (never the callback); stretch time per second of audio
is in docs/perf.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from latentloop_daemon.config import AUDIO_CONFORM
from latentloop_daemon.errors import LatentloopError
from latentloop_daemon.playback.source import Loop

CONFORM_MODES = AUDIO_CONFORM
_PAD_S = 0.25  # circular context on each side: longer than the stretcher's and soxr's windows
_SEAM_FADE_S = 0.02  # stretched loops: crossfade at the seam (as loops/seam.py does on renders)


class TempoMismatch(LatentloopError):
    """``conform = "refuse"`` and the loop's tempo is not the transport's."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """(frames, channels) float32 audio at the stream rate; ``beats`` None: loops on its own
    length; ``stretch_s`` the time the stretch took (0 when none was needed)."""

    audio: npt.NDArray[np.float32]
    beats: int | None
    stretched: bool
    stretch_s: float


def match_channels(audio: npt.NDArray[np.float32], channels: int) -> npt.NDArray[np.float32]:
    """(frames, c) -> (frames, ``channels``): mono spread, extra channels averaged or cut."""
    have = audio.shape[1]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True, dtype=np.float32)
    if have > channels:
        return audio[:, :channels]
    return np.concatenate([audio, np.zeros((audio.shape[0], channels - have), np.float32)], 1)


def _circular(audio: npt.NDArray[np.float32], pad: int) -> npt.NDArray[np.float32]:
    """The loop with ``pad`` samples of its own tail before and head after (tiling if short)."""
    reps = -(-pad // audio.shape[0])
    tiled = np.concatenate([audio] * reps) if reps > 1 else audio
    return np.concatenate([tiled[tiled.shape[0] - pad :], audio, tiled[:pad]])


def resample_loop(
    audio: npt.NDArray[np.float32], from_rate: int, to_rate: int
) -> npt.NDArray[np.float32]:
    """Resample a seamless loop with soxr, circularly; length round(frames x to / from)."""
    if from_rate == to_rate:
        return audio
    import soxr

    pad = round(_PAD_S * from_rate)
    out = soxr.resample(_circular(audio, pad), from_rate, to_rate, quality="VHQ")
    start = round(Fraction(pad * to_rate, from_rate))
    frames = round(Fraction(audio.shape[0] * to_rate, from_rate))
    return np.ascontiguousarray(out[start : start + frames], dtype=np.float32)


def stretch_loop(
    audio: npt.NDArray[np.float32], frames: int, sample_rate: int
) -> npt.NDArray[np.float32]:
    """Time-stretch a seamless loop to exactly ``frames`` samples (pitch kept), circularly."""
    from python_stretch.Signalsmith import Stretch

    have = audio.shape[0]
    pad = round(_PAD_S * sample_rate)
    stretcher = Stretch(0)  # seeded: the same loop conforms to the same samples
    stretcher.preset(audio.shape[1], float(sample_rate))
    factor = have / frames  # > 1 shortens (faster)
    stretcher.timeFactor = factor
    out = np.asarray(stretcher.process(np.ascontiguousarray(_circular(audio, pad).T)))  # (ch, n)
    start = round(pad / factor)
    cut = out[:, start : start + frames]
    if cut.shape[1] < frames:  # the stretcher's output was a sample short at the end
        cut = np.concatenate([cut, cut[:, -1:].repeat(frames - cut.shape[1], 1)], 1)
    # The stretcher keeps pitch, so tones do not end in phase with how they start: crossfade
    # the loop's last samples into what the stretcher made just before ``start`` (the same
    # part of the loop, flowing into sample 0), so the last sample leads into the first.
    fade = min(round(_SEAM_FADE_S * sample_rate), frames // 4, start)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        lead_in = out[:, start - fade : start]
        cut = cut.copy()
        cut[:, frames - fade :] = cut[:, frames - fade :] * (1 - ramp) + lead_in * ramp
    return np.ascontiguousarray(cut.T, dtype=np.float32)


def prepare(
    loop: Loop,
    sample_rate: int,
    channels: int,
    transport_frames_per_beat: Fraction | None,
    mode: str,
    transport_bpm: float | None = None,
) -> Prepared:
    """``loop`` as the stream plays it: its channels and rate, conformed to the transport.

    ``transport_frames_per_beat`` None (no tempo yet, or a seconds clip): no conform.

    Raises:
        TempoMismatch: ``mode`` is "refuse" and the tempos differ by more than a sample.
    """
    import time

    audio = resample_loop(match_channels(loop.audio, channels), loop.sample_rate, sample_rate)
    if loop.beats is None or transport_frames_per_beat is None:
        return Prepared(audio, loop.beats, False, 0.0)
    target = round(loop.beats * transport_frames_per_beat)
    if abs(audio.shape[0] - target) <= 1:
        return Prepared(audio, loop.beats, False, 0.0)
    if mode == "as_is":
        return Prepared(audio, None, False, 0.0)
    if mode == "refuse":
        bpm = float(loop.bpm or 0)
        raise TempoMismatch(
            f"the loop is at {bpm:.3f} BPM and the transport at {transport_bpm or 0:.3f} BPM "
            '(audio.conform = "refuse")'
        )
    t0 = time.perf_counter()
    stretched = stretch_loop(audio, target, sample_rate)
    return Prepared(stretched, loop.beats, True, time.perf_counter() - t0)
