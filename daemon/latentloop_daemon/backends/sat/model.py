"""The conditioned diffusion model (DiT + conditioners + VAE) and its generation routine.

``StableAudioModel`` mirrors stable-audio-tools' ``ConditionedDiffusionModelWrapper`` so that
``state_dict()`` has exactly the released checkpoint keys (``model.model.*``,
``conditioner.conditioners.*``, ``pretransform.model.*``). ``generate`` follows
``generate_diffusion_cond`` step by step, including the order in which the global RNG is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import RenderError
from .conditioners import CondTensors, MultiConditioner
from .config import ModelConfig
from .dit import DiTWrapper
from .oobleck import AutoencoderPretransform
from .sampling import (
    RF_SAMPLERS,
    SAMPLERS,
    V_SAMPLERS,
    StepCallback,
    VDenoiser,
    get_rf_times,
    get_sigmas_polyexponential,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """Everything that steers one sampling run besides the conditioning."""

    steps: int
    cfg_scale: float
    sampler: str
    sigma_min: float = 0.3
    sigma_max: float = 500.0
    rho: float = 1.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    scale_phi: float = 0.0


class StableAudioModel(nn.Module):
    """DiT (``.model``), conditioners (``.conditioner``) and VAE (``.pretransform``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DiTWrapper(config.dit, config.objective)
        self.conditioner = MultiConditioner(config)
        self.pretransform = AutoencoderPretransform(config.pretransform)

    @property
    def dit_dtype(self) -> torch.dtype:
        return self.model.model.dtype

    def conditioning_inputs(self, tensors: CondTensors) -> dict[str, torch.Tensor | None]:
        """Concatenate cross-attention tokens along the sequence, global conds along channels."""
        cfg = self.config
        cross = mask = glob = None
        if cfg.cross_attention_cond_ids:
            cross = torch.cat([tensors[k][0] for k in cfg.cross_attention_cond_ids], dim=1)
            mask = torch.cat([tensors[k][1] for k in cfg.cross_attention_cond_ids], dim=1)
        if cfg.global_cond_ids:
            glob = torch.cat([tensors[k][0] for k in cfg.global_cond_ids], dim=-1)
            if glob.ndim == 3:
                glob = glob.squeeze(1)
        return {"cross_attn_cond": cross, "cross_attn_mask": mask, "global_cond": glob}


ProgressFn = StepCallback


@contextmanager
def reference_backend_flags() -> Iterator[None]:
    """Disable TF32, reduced-precision reductions and cudnn.benchmark for one render; restore."""
    matmul = torch.backends.cuda.matmul
    saved = (
        matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        matmul.allow_fp16_reduced_precision_reduction,
        torch.backends.cudnn.benchmark,
    )
    matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (
            matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            matmul.allow_fp16_reduced_precision_reduction,
            torch.backends.cudnn.benchmark,
        ) = saved


@torch.no_grad()
def generate(
    model: StableAudioModel,
    settings: SamplerSettings,
    conditioning: Sequence[dict[str, Any]],
    negative_conditioning: Sequence[dict[str, Any]] | None,
    seed: int,
    device: torch.device,
    init_audio: torch.Tensor | None = None,
    init_noise_level: float = 1.0,
    cast_noise: bool = True,
    callback: ProgressFn | None = None,
    on_stage: Callable[[str], None] | None = None,
    return_latents: bool = False,
    keep_samples: int | None = None,
    latent_frames: int | None = None,
) -> torch.Tensor:
    """Sample audio [B, A, sample_size] (float32) for B = len(conditioning) items.

    Follows ``generate_diffusion_cond``: seed, initial noise, conditioning, init-audio encoding
    (VAE sampling uses the RNG), sampling, decoding. ``init_audio`` is [A, sample_size] at the
    model's rate. ``cast_noise`` False keeps the sampler state in fp32 when the DiT runs in half
    precision (the reference casts it to the DiT dtype). ``keep_samples`` decodes only the
    latents that determine the first ``keep_samples`` samples and returns [B, A, keep_samples].
    ``latent_frames`` (the fit window; None = the model's window) samples only that many latent
    frames: the noise is drawn for [B, 64, latent_frames], so even the same seed gives other
    audio than the full window (and than the reference); init latents are cut to it.
    """
    cfg = model.config
    batch_size = len(conditioning)
    stage = on_stage or (lambda name: None)
    # 1. Seed and initial noise (the first use of the global RNG).
    torch.manual_seed(seed)
    frames = cfg.latent_length if latent_frames is None else latent_frames
    if not 1 <= frames <= cfg.latent_length:
        raise RenderError(f"latent_frames must be 1..{cfg.latent_length}, got {frames}")
    noise = torch.randn([batch_size, cfg.io_channels, frames], device=device)
    with reference_backend_flags():
        # 2. Conditioning (no RNG).
        stage("conditioning")
        cond = model.conditioning_inputs(model.conditioner(conditioning, device))
        neg: dict[str, torch.Tensor | None] = {}
        if negative_conditioning is not None:
            n = model.conditioning_inputs(model.conditioner(negative_conditioning, device))
            neg = {
                "negative_cross_attn_cond": n["cross_attn_cond"],
                "negative_cross_attn_mask": n["cross_attn_mask"],
            }
        # 3. Init audio: VAE encoding samples from the global RNG.
        init_latents = None
        sigma_max = settings.sigma_max
        if init_audio is not None:
            stage("encoding")
            init_latents = model.pretransform.encode(init_audio.to(device).unsqueeze(0))
            init_latents = init_latents.repeat(batch_size, 1, 1)[..., :frames]
            sigma_max = init_noise_level
        dtype = model.dit_dtype
        if cast_noise:
            noise = noise.type(dtype)
        cond = {k: (v.type(dtype) if v is not None else v) for k, v in cond.items()}
        # 4. Sampling.
        stage("sampling")
        extra: dict[str, Any] = {**cond, **neg, "cfg_scale": settings.cfg_scale}
        extra.pop("cross_attn_mask")  # never applied by the DiT (reference behaviour)
        if settings.cfg_interval != (0.0, 1.0):
            extra["cfg_interval"] = settings.cfg_interval
        if settings.scale_phi:
            extra["scale_phi"] = settings.scale_phi
        if cfg.objective == "v":
            sampled = _sample_v(model, noise, init_latents, settings, sigma_max, extra, callback)
        else:
            sampled = _sample_rf(model, noise, init_latents, settings, sigma_max, extra, callback)
        if return_latents:
            return sampled
        # 5. Decode.
        stage("decoding")
        sampled = sampled.to(model.pretransform.dtype)
        return model.pretransform.decode(sampled, keep_samples)


def _sample_v(
    model: StableAudioModel, noise: torch.Tensor, init: torch.Tensor | None,
    s: SamplerSettings, sigma_max: float, extra: dict[str, Any], callback: ProgressFn | None,
) -> torch.Tensor:  # fmt: skip
    if s.sampler not in V_SAMPLERS:
        raise RenderError(
            f"sampler {s.sampler!r} does not fit a v-objective model; use one of {V_SAMPLERS}"
        )
    denoiser = VDenoiser(model.model)
    sigmas = get_sigmas_polyexponential(s.steps, s.sigma_min, sigma_max, s.rho, noise.device)
    noise = noise * sigmas[0]
    x = init + noise if init is not None else noise
    return SAMPLERS[s.sampler](denoiser, x, sigmas, extra, callback)


def _sample_rf(
    model: StableAudioModel, noise: torch.Tensor, init: torch.Tensor | None,
    s: SamplerSettings, sigma_max: float, extra: dict[str, Any], callback: ProgressFn | None,
) -> torch.Tensor:  # fmt: skip
    if s.sampler not in RF_SAMPLERS:
        raise RenderError(
            f"sampler {s.sampler!r} does not fit a rectified-flow model; use one of {RF_SAMPLERS}"
        )
    sigma_max = min(sigma_max, 1) if init is not None else 1  # sample_rf's default is 1
    x = init * (1 - sigma_max) + noise * sigma_max if init is not None else noise
    t = get_rf_times(s.steps, sigma_max)
    return SAMPLERS[s.sampler](model.model, x, t, extra, callback)
