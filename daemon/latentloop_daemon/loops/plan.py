"""Planning a loop: what to ask the model for, given the loop's exact length and the settings.

The model is told the piece is longer than the loop (``padding_s`` past the loop end), so it
does not end at the loop point; the rendered continuation is what the seam crossfades into the
loop start. The final prompt gains "N BPM" (when it names no tempo) and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from latentloop_daemon.engine import Capabilities
from latentloop_daemon.errors import RenderError
from latentloop_daemon.files.riff import key_root_note
from latentloop_daemon.loops.length import LoopLength

if TYPE_CHECKING:
    from latentloop_daemon.config import RenderConfig

_TEMPO_IN_TEXT = re.compile(r"\b\d{2,3}(?:\.\d+)?\s*-?\s*bpm\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LoopPlan:
    """What to ask the model for, and how long the loop is."""

    length: LoopLength
    prompt: str  # as sent to the model
    key: str | None
    seconds_total: float  # the model's length conditioning: loop + padding
    padding_frames: int
    keep_frames: int = 0  # what the seam reads of the window: loop + crossfade (0 = all)


def final_prompt(prompt: str, bpm: float | None, key: str | None, tempo_in_prompt: bool) -> str:
    """The prompt sent to the model: the user's, plus "N BPM" (if absent) and the key (if
    absent), joined with ", "."""
    text = prompt.strip()
    extra = []
    if tempo_in_prompt and bpm is not None and not _TEMPO_IN_TEXT.search(text):
        extra.append(f"{bpm:g} BPM")
    if key and key.lower() not in text.lower():
        extra.append(key)
    return ", ".join([text, *extra]) if text else ", ".join(extra)


def plan_loop(
    prompt: str, length: LoopLength, key: str | None, caps: Capabilities, s: RenderConfig
) -> LoopPlan:
    """Check the loop plus its padding fits the model; build the final prompt and conditioning.

    Raises:
        RenderError: a fractional number of beats, an unreadable key, or too long for the model.
    """
    rate = caps.sample_rate
    if rate != length.sample_rate:
        raise ValueError("the loop length must be computed at the model's sample rate")
    if length.bars is not None and (Fraction(length.bars) * length.beats_per_bar).denominator != 1:
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
        keep_frames=length.frames + crossfade_frames,
    )
