"""``Clip``: one finished loop in memory, what the pipeline hands to the file writer and player.

The audio is the exact bytes-to-be of the WAV file (before its PCM encoding): a player that
queues a ``Clip`` plays what the file holds without re-reading it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from latentloop_daemon.loops.length import LoopLength
from latentloop_daemon.loops.loudness import LoudnessReport
from latentloop_daemon.loops.seam import SeamReport
from latentloop_daemon.loops.tempo import TempoEstimate


@dataclass(frozen=True, slots=True)
class Clip:
    """A seamless loop: (frames, channels) float32 ``audio`` at ``sample_rate`` Hz.

    ``length`` carries the musical terms (bpm, bars, beats per bar) the frame count came from;
    ``bpm`` is the tempo that frame count encodes exactly (None for a seconds-only clip).
    """

    audio: npt.NDArray[np.float32]
    sample_rate: int
    length: LoopLength
    key: str | None
    prompt: str  # as sent to the model (the final prompt)
    seed: int
    variation: int  # index in the render's batch, 0-based
    seam: SeamReport
    loudness: LoudnessReport
    tempo: TempoEstimate | None  # measured; None when the tempo check is off or no bpm

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    @property
    def channels(self) -> int:
        return int(self.audio.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def bpm(self) -> float | None:
        """The tempo the frame count encodes: beats x 60 x rate / frames."""
        return self.length.actual_bpm

    @property
    def beats_per_bar(self) -> int:
        return self.length.beats_per_bar

    @property
    def is_loop(self) -> bool:
        """True when the clip has a tempo and bars (a DAW loop), False for a seconds clip."""
        return self.length.bars is not None

    @property
    def tempo_deviation_pct(self) -> float | None:
        return None if self.tempo is None else self.tempo.deviation_pct
