"""``Loop``: what the player plays, from a finished ``Clip`` (in memory) or a loop WAV on disk.

The player never re-reads a file the daemon just wrote: the render worker hands it the
``Clip`` (``Loop.from_clip``). A path sent by a client (``/latentloop/play <id> "<path>"``) is
read with soundfile; its musical length comes from the sidecar JSON, else from the WAV's
``acid`` chunk, else it is a seconds clip that loops on its own length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from latentloop_daemon.errors import LatentloopError

if TYPE_CHECKING:
    from latentloop_daemon.loops.clip import Clip


class LoopReadError(LatentloopError):
    """A file to play could not be read (missing, not audio)."""


@dataclass(frozen=True, slots=True, eq=False)
class Loop:
    """(frames, channels) float32 ``audio`` at ``sample_rate``; ``beats`` whole beats long
    (None for a seconds clip, which has no tempo); ``job_id`` -1 when it came from a path."""

    audio: npt.NDArray[np.float32]
    sample_rate: int
    beats: int | None
    beats_per_bar: int
    path: str
    job_id: int = -1

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    @property
    def bpm(self) -> Fraction | None:
        """The tempo the frame count encodes, exactly: beats x 60 x rate / frames."""
        if self.beats is None:
            return None
        return Fraction(self.beats * 60 * self.sample_rate, self.frames)

    @classmethod
    def from_clip(cls, clip: Clip, path: str, job_id: int) -> Loop:
        beats = None
        if clip.length.bars is not None:
            beats = round(Fraction(clip.length.bars) * clip.length.beats_per_bar)
        return cls(clip.audio, clip.sample_rate, beats, clip.beats_per_bar, path, job_id)


def read_loop(path: Path) -> Loop:
    """Read a WAV (or any soundfile format) and its musical length.

    Raises:
        LoopReadError: the file is missing or not readable audio.
    """
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as e:
        raise LoopReadError(f"cannot read {path}: {e}") from e
    if audio.shape[0] == 0:
        raise LoopReadError(f"{path} holds no audio")
    beats, beats_per_bar = _musical_length(path)
    return Loop(np.ascontiguousarray(audio), int(rate), beats, beats_per_bar, str(path))


def _musical_length(path: Path) -> tuple[int | None, int]:
    """(beats, beats per bar) from the sidecar, else the acid chunk, else (None, 4)."""
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        bars, meter = meta.get("bars"), str(meta.get("meter", "4/4"))
        beats_per_bar = int(meter.split("/")[0])
        if bars:
            return round(Fraction(bars) * beats_per_bar), beats_per_bar
        return None, beats_per_bar
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    try:
        from latentloop_daemon.files.riff import read_chunks

        acid = read_chunks(path).get("acid")
    except (OSError, ValueError):
        acid = None
    if acid and acid.get("beats"):
        return int(acid["beats"]), int(acid.get("meter_numerator") or 4)
    return None, 4
