"""The engine interface every model backend implements. No torch import.

A backend takes a :class:`RenderRequest` (length in seconds; loop logic lives in the daemon) and
returns a :class:`RenderResult` holding float32 audio [B, C, N] at its native rate: the model's
full window, for the caller to cut, or, when the request sets ``keep_frames``, at least that
many leading samples of it (a backend may skip computing the rest). Backends declare what they
can do in :class:`Capabilities`.
Threads: ``render`` runs on the render worker only; ``on_step`` and ``should_cancel`` are called
on that thread between sampler steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from latentloop_bridge.values import SEED_MAX as SEED_MAX  # the protocol's seed range

StepFn = Callable[[int, int, float], None]  # (step, total, sigma)
CancelFn = Callable[[], bool]

PRECISIONS = ("auto", "reference", "fp32", "fp16", "bf16")
"""Precision modes every backend accepts: ``reference`` is bit-exact with the backend's reference
implementation; ``auto`` is the backend's choice for the device (docs/models.md)."""


@dataclass(frozen=True, slots=True)
class InitAudio:
    """Audio to start from: float32 (frames, channels) at ``sample_rate`` Hz, any rate/channels."""

    data: npt.NDArray[np.float32]
    sample_rate: int


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """One render. ``None`` fields take the model's defaults (see Capabilities)."""

    prompt: str
    seconds_total: float
    negative_prompt: str | None = None
    seconds_start: float = 0.0
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    batch_size: int = 1
    init_audio: InitAudio | None = None
    init_noise_level: float | None = None
    # the caller keeps only the window's first ``keep_frames`` samples (loop + crossfade): a
    # backend may then compute less and return fewer samples, but never fewer than these
    keep_frames: int | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a loaded model is and supports; defaults come from the model, not a global."""

    model_id: str
    revision: str | None
    objective: str
    sample_rate: int
    channels: int
    window_samples: int
    max_seconds_total: float
    fixed_window: bool
    default_steps: int
    default_cfg_scale: float
    default_sampler: str
    samplers: tuple[str, ...]
    conditioning: tuple[str, ...]
    supports_negative_prompt: bool
    supports_init_audio: bool
    max_batch_size: int
    device: str
    precision: str
    builtin_noise_model: bool = False

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Float32 audio [B, C, N] at ``sample_rate`` and every setting needed to reproduce it.

    N is the model's window, or with ``RenderRequest.keep_frames`` at least ``keep_frames``."""

    audio: npt.NDArray[np.float32]
    sample_rate: int
    seed: int
    settings: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.audio.shape[0])


class Engine(Protocol):
    """A loaded model that renders audio. Only the render worker thread calls ``render``."""

    @property
    def capabilities(self) -> Capabilities: ...

    def render(
        self,
        request: RenderRequest,
        on_step: StepFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> RenderResult: ...

    def close(self) -> None: ...


def to_frames_first(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The one place that turns [C, N] (engine layout) into (N, C) (soundfile/sounddevice)."""
    return np.ascontiguousarray(audio.T)
