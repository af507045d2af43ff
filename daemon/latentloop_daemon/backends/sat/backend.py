"""``SatEngine``: the Engine for stable-audio-tools-format checkpoints (SAO 1.0, SAO Small, ...).

Loading: config -> modules on the meta device -> strict, memory-mapped weights -> precision and
device -> T5. Rendering: validate the request, fill in the model's defaults, run ``generate``.
Only the render worker thread may call ``render``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...engine import (
    PRECISIONS,
    SEED_MAX,
    CancelFn,
    Capabilities,
    InitAudio,
    RenderRequest,
    RenderResult,
    StepFn,
)
from ...errors import ModelLoadError, RenderCancelled, RenderError
from .checkpoint import load_into, read_state_dict, unwrap_training_keys
from .conditioners import T5CondConfig, load_t5
from .config import ModelConfig, load_model_config
from .model import SamplerSettings, StableAudioModel, generate
from .options import SatOptions
from .sampling import RF_SAMPLERS, V_SAMPLERS
from .tiny import TINY_MODELS, build_tiny_model, build_tiny_t5, build_tiny_tokenizer

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_BATCH = 16
MAX_STEPS = 1000
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class SamplerDefaults:
    """A model's own sampling defaults (engine-spec §8.2, §8.3, §16)."""

    steps: int
    cfg_scale: float
    sampler: str
    sigma_min: float = 0.3
    sigma_max: float = 500.0


def defaults_for(objective: str) -> SamplerDefaults:
    """SAO 1.0 model-card settings for v, SAO Small's for rf_denoiser, base-RF ones otherwise."""
    if objective == "v":
        return SamplerDefaults(steps=100, cfg_scale=7.0, sampler="dpmpp-3m-sde")
    if objective == "rf_denoiser":
        return SamplerDefaults(steps=8, cfg_scale=1.0, sampler="pingpong")
    return SamplerDefaults(steps=50, cfg_scale=4.0, sampler="euler")


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda > mps > cpu; an explicit device must be available."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ModelLoadError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' requested but MPS is not available")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA (the upstream UI's half mode), fp32 on CPU and MPS."""
    if name not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    return "fp16" if device.type == "cuda" else "fp32"


def apply_precision(model: StableAudioModel, precision: str) -> None:
    """Cast DiT and VAE: ``reference`` = fp32 DiT, VAE fp16 iff the config's ``model_half``.

    Every precision but ``reference`` also uses the fused Snake in the VAE (a few fp32 ulp from
    the reference's op chain). The decoder's weight-normed weights are cached in every precision
    (bit-identical)."""
    model.pretransform.set_fast_snake(precision != "reference")
    model.pretransform.cache_decoder_weights(True)
    if precision == "reference":
        model.float()
        if model.config.pretransform.model_half:
            model.pretransform.half()
        return
    dtype = _DTYPES[precision]
    model.float()
    model.model.to(dtype)
    model.pretransform.to(dtype)


def load(
    model: str, *, device: str = "auto", precision: str = "auto", offline: bool | None = None,
    token: str | None = None, options: SatOptions | None = None,
) -> SatEngine:  # fmt: skip
    """The registry's entry point (``backends.BACKENDS["sat"]``): ``SatEngine.load`` with the
    ``[sat]`` section's options."""
    o = options or SatOptions()
    set_cpu_threads(o.threads)
    return SatEngine.load(
        model, device=device, precision=precision, offline=offline, token=token,
        trust_checkpoint=o.trust_checkpoint, t5_dir=Path(o.t5).expanduser() if o.t5 else None,
        kept_decode=not o.full_decode, text_cache=o.text_cache, fit_window=o.fit_window,
    )  # fmt: skip


def physical_cores() -> int:
    """Physical CPU cores (Linux: distinct (package, core) pairs in /proc/cpuinfo), else the
    logical count; SMT siblings share one core's vector units, so they add little to GEMMs."""
    import os

    logical = os.cpu_count() or 1
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return logical
    cores, package = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            cores.add((package, value.strip()))
    return min(len(cores), logical) if cores else logical


def set_cpu_threads(threads: int) -> None:
    """Set torch's CPU thread count (process-wide): ``threads``; if 0, the physical cores, unless
    the user set ``OMP_NUM_THREADS`` (torch already follows it, and so do we)."""
    if not threads and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        logger.debug("torch CPU threads: %d (OMP_NUM_THREADS)", torch.get_num_threads())
        return
    n = threads or physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    logger.debug("torch CPU threads: %d%s", n, " (physical cores)" if not threads else "")


class SatEngine:
    """A loaded stable-audio-tools-format model, warm on its device."""

    def __init__(
        self, model: StableAudioModel, model_id: str, revision: str | None,
        device: torch.device, precision: str, builtin: bool = False, kept_decode: bool = True,
        fit_window: bool = False,
    ) -> None:  # fmt: skip
        self.model = model
        self.device = device
        self.precision = precision
        # decode only the kept span (never in reference precision: it decodes the full window)
        self.kept_decode = kept_decode and precision != "reference"
        # sample only the latents a kept span needs (experimental; never in reference precision)
        self.fit_window = fit_window and precision != "reference"
        if fit_window and precision == "reference":
            logger.warning(
                "[sat] fit_window is ignored in reference precision: the fit window changes the "
                "output, and reference stays bit-exact with stable-audio-tools"
            )
        elif fit_window:
            logger.warning(
                "[sat] fit_window is on (experimental): renders that keep part of the window "
                "sample only the latents they need, which changes the output versus the full "
                "window, even for the same seed; random weights can't tell whether the real "
                "model keeps its quality on a shorter window (docs/perf.md)"
            )
        self.defaults = defaults_for(model.config.objective)
        self._caps = _capabilities(model.config, model_id, revision, device, precision, builtin)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @classmethod
    def load(
        cls, source: str, *, device: str = "auto", precision: str = "auto",
        trust_checkpoint: bool = False, t5_dir: Path | None = None,
        offline: bool | None = None, token: str | None = None, kept_decode: bool = True,
        text_cache: int = 16, fit_window: bool = False,
    ) -> SatEngine:  # fmt: skip
        """Load a built-in model (``tiny``, ``tiny-rf``), a hub repo id or alias, or a folder.

        ``kept_decode`` lets ``render`` decode only a request's ``keep_frames`` (not in
        ``reference`` precision); ``text_cache`` is the number of prompts whose T5 embeddings
        each text conditioner keeps; ``fit_window`` (experimental, changes the output; not in
        ``reference`` precision) lets ``render`` sample only the latents a request's
        ``keep_frames`` needs."""
        dev = pick_device(device)
        prec = pick_precision(precision, dev)
        t0 = time.perf_counter()
        if source in TINY_MODELS:
            _, model = build_tiny_model(source)
            tokenizer = build_tiny_tokenizer()
            t5 = build_tiny_t5(len(tokenizer))
            model_id, revision, builtin = source, None, True
        elif source.startswith("random:"):
            model, t5, tokenizer = _build_random(source.removeprefix("random:"))
            model_id, revision, builtin = source, None, True
        else:
            from .sources import resolve_model

            files = resolve_model(source, offline=offline, token=token)
            config = load_model_config(files.config_path)
            with torch.device("meta"):
                model = StableAudioModel(config)
            sd = unwrap_training_keys(
                read_state_dict(files.checkpoint_path, trust_pickle=trust_checkpoint)
            )
            load_into(model, sd)
            del sd
            if t5_dir is not None:
                enc_dir, tok_dir = _split_t5_dir(t5_dir)
            else:
                enc_dir, tok_dir = files.t5_dir, files.tokenizer_dir
            if enc_dir is None or tok_dir is None:
                raise ModelLoadError(
                    f"no T5 text encoder found for {source}: put it in the model folder as "
                    "text_encoder/ + tokenizer/, or run `latentloop download google-t5/t5-base`"
                )
            t5, tokenizer = load_t5(enc_dir, tok_dir)
            model_id, revision, builtin = files.repo_id or str(files.root), files.revision, False
        model.eval().requires_grad_(False)
        apply_precision(model, prec)
        model.to(dev)
        for cond in model.conditioner.t5_conditioners():
            cond.attach_t5(t5, tokenizer)
            cond.cache_size = text_cache
        logger.info(
            "loaded %s on %s (%s, %d CPU threads) in %.1fs",
            model_id, dev, prec, torch.get_num_threads(), time.perf_counter() - t0,
        )  # fmt: skip
        return cls(model, model_id, revision, dev, prec, builtin, kept_decode, fit_window)

    def render(
        self, request: RenderRequest, on_step: StepFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> RenderResult:  # fmt: skip
        """Render ``request``: float32 audio [B, C, window] at the model's rate, or
        [B, C, keep_frames] when the request sets ``keep_frames`` and the kept span is decoded
        alone (equal to the full window's first samples up to fp32 rounding, docs/perf.md).

        With the fit window on and ``keep_frames`` set, only ``_latent_frames`` latents are
        sampled (a different computation: other noise, a shorter sequence for the DiT) and at
        least ``keep_frames`` samples are returned."""
        cfg = self.config
        settings = self._settings(request)
        keep = self._keep_samples(request)
        frames = self._latent_frames(request)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32 - 1)
        if not 0 <= seed <= SEED_MAX:
            raise RenderError(f"seed must be 0..{SEED_MAX}, got {seed}")
        cond = [self._cond_item(request.prompt, request)] * request.batch_size
        negative = None
        if request.negative_prompt:
            negative = [self._cond_item(request.negative_prompt, request)] * request.batch_size
        init = self._prepare_init(request.init_audio) if request.init_audio else None
        noise_level = request.init_noise_level
        if init is not None and noise_level is None:
            noise_level = 1.0 if cfg.objective == "v" else 0.5
        timings: dict[str, float] = {}
        clock = _StageClock(self.device, timings)
        callback = _step_callback(on_step, should_cancel)
        if should_cancel is not None and should_cancel():
            raise RenderCancelled("cancelled before start")
        audio = generate(
            self.model, settings, cond, negative, seed, self.device,
            init_audio=init, init_noise_level=noise_level if noise_level is not None else 1.0,
            cast_noise=self.precision in ("reference", "fp32"),
            callback=callback, on_stage=clock.stage, keep_samples=keep, latent_frames=frames,
        )  # fmt: skip
        clock.stage("done")
        out = audio.float().cpu().numpy().astype(np.float32, copy=False)
        info = {
            "model": self._caps.model_id, "revision": self._caps.revision,
            "objective": cfg.objective, "sampler": settings.sampler, "steps": settings.steps,
            "cfg_scale": settings.cfg_scale, "sigma_min": settings.sigma_min,
            "sigma_max": settings.sigma_max, "seconds_start": request.seconds_start,
            "seconds_total": request.seconds_total, "batch_size": request.batch_size,
            "negative_prompt": request.negative_prompt, "init_noise_level": noise_level,
            "device": str(self.device), "precision": self.precision,
            "decoded_samples": int(out.shape[-1]),
            "fit_window": frames < cfg.latent_length, "latent_frames": frames,
            "torch": torch.__version__,
        }  # fmt: skip
        return RenderResult(out, cfg.sample_rate, seed, info, timings)

    def close(self) -> None:
        """Release the model and free device memory."""
        self.model.pretransform.cache_decoder_weights(False)
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _settings(self, r: RenderRequest) -> SamplerSettings:
        d, caps = self.defaults, self._caps
        steps = r.steps if r.steps is not None else d.steps
        cfg_scale = r.cfg_scale if r.cfg_scale is not None else d.cfg_scale
        sampler = r.sampler or d.sampler
        if not isinstance(r.prompt, str):
            raise RenderError("prompt must be a string")
        if not 0 < r.seconds_total <= caps.max_seconds_total:
            raise RenderError(
                f"seconds_total must be in (0, {caps.max_seconds_total:g}], got {r.seconds_total:g}"
            )
        if not 0 <= r.seconds_start <= caps.max_seconds_total:
            raise RenderError(f"seconds_start must be >= 0, got {r.seconds_start:g}")
        if not 1 <= steps <= MAX_STEPS:
            raise RenderError(f"steps must be 1..{MAX_STEPS}, got {steps}")
        if not (np.isfinite(cfg_scale) and 0 <= cfg_scale <= 100):
            raise RenderError(f"cfg must be 0..100, got {cfg_scale}")
        if sampler not in caps.samplers:
            raise RenderError(
                f"unknown sampler {sampler!r} for this model; use one of {', '.join(caps.samplers)}"
            )
        if not 1 <= r.batch_size <= caps.max_batch_size:
            raise RenderError(f"variations must be 1..{caps.max_batch_size}, got {r.batch_size}")
        if r.init_noise_level is not None and not (
            np.isfinite(r.init_noise_level) and r.init_noise_level > 0
        ):
            raise RenderError(f"init noise level must be > 0, got {r.init_noise_level}")
        return SamplerSettings(
            steps=steps, cfg_scale=float(cfg_scale), sampler=sampler,
            sigma_min=d.sigma_min, sigma_max=d.sigma_max,
        )  # fmt: skip

    def _keep_samples(self, r: RenderRequest) -> int | None:
        """The kept span to decode alone, or None for the full window."""
        window = self.config.sample_size
        if r.keep_frames is None:
            return None
        if not 1 <= r.keep_frames <= window:
            raise RenderError(f"keep_frames must be 1..{window}, got {r.keep_frames}")
        return r.keep_frames if self.kept_decode and r.keep_frames < window else None

    def _latent_frames(self, r: RenderRequest) -> int:
        """Latent frames to sample: the model's window, or, with the fit window and a request
        that sets ``keep_frames`` (already checked), the latents that cover seconds_total's
        samples (loop + padding for a loop; at least ``keep_frames``) plus the decoder's
        receptive-field margin (``latents_needed``, as the kept-span decode), never more than
        the window. No rounding: the DiT takes any length (patch size 1, which config.py
        enforces)."""
        full = self.config.latent_length
        if not self.fit_window or r.keep_frames is None:
            return full
        # round() first: seconds_total is a frame count divided by the rate (the plan's)
        covered = max(math.ceil(round(r.seconds_total * self.config.sample_rate, 6)), r.keep_frames)
        needed = self.model.pretransform.model.decoder.latents_needed(covered)
        return min(needed, full)

    def _cond_item(self, prompt: str, r: RenderRequest) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for c in self.config.conditioners:
            if isinstance(c, T5CondConfig):
                item[c.id] = prompt
            elif c.id == "seconds_start":
                item[c.id] = r.seconds_start
            else:
                item[c.id] = r.seconds_total
        return item

    def _prepare_init(self, init: InitAudio) -> torch.Tensor:
        """Resample (soxr), match channels, zero-pad or crop to the window: [A, sample_size]."""
        from .audio import prepare_init_audio

        cfg = self.config
        data = prepare_init_audio(
            init.data, init.sample_rate, cfg.sample_rate, cfg.pretransform.io_channels,
            cfg.sample_size,
        )  # fmt: skip
        return torch.from_numpy(data)


def _build_random(name: str) -> tuple[StableAudioModel, Any, Any]:
    """A published architecture at full size with random weights (benchmarks, structure)."""
    from .config import parse_model_config
    from .known_configs import KNOWN_CONFIGS, known_config

    if name not in KNOWN_CONFIGS:
        raise ModelLoadError(f"unknown random model {name!r}; use one of {list(KNOWN_CONFIGS)}")
    from transformers import T5Config, T5EncoderModel

    config = parse_model_config(known_config(name), source=f"random:{name}")
    tokenizer = build_tiny_tokenizer()
    t5_config = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        feed_forward_proj="relu", dropout_rate=0.0,
    )  # t5-base's encoder shape  # fmt: skip
    from .tiny import randomize_

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StableAudioModel(config)
        t5 = T5EncoderModel(t5_config)
    randomize_(model, 0)  # every tensor set (the weight-norm v's are otherwise uninitialised)
    return model, t5, tokenizer


def save_random_model(name: str, folder: Path) -> None:
    """Write ``random:<name>`` as a checkpoint folder (``model_config.json`` with ``model_half``
    off, ``model.safetensors``) that stable-audio-tools loads too (``bench --compare-reference``).
    """
    import json

    from safetensors.torch import save_file

    from .known_configs import known_config

    config = known_config(name)
    config["model"]["pretransform"]["model_half"] = False
    model, _, _ = _build_random(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config, indent=1))
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"))


def _split_t5_dir(path: Path) -> tuple[Path | None, Path | None]:
    """A --t5 folder holds either text_encoder/ + tokenizer/, or both sets of files at its top."""
    enc = path / "text_encoder" if (path / "text_encoder").is_dir() else path
    tok = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return (enc if (enc / "config.json").is_file() else None), tok


def _capabilities(
    cfg: ModelConfig, model_id: str, revision: str | None, device: torch.device, precision: str,
    builtin: bool,
) -> Capabilities:  # fmt: skip
    d = defaults_for(cfg.objective)
    ids = tuple(c.id for c in cfg.conditioners)
    totals = [c for c in cfg.conditioners if c.id == "seconds_total"]
    max_total = float(totals[0].max_val) if totals else cfg.window_seconds  # type: ignore[union-attr]
    return Capabilities(
        model_id=model_id, revision=revision, objective=cfg.objective,
        sample_rate=cfg.sample_rate, channels=cfg.pretransform.io_channels,
        window_samples=cfg.sample_size, max_seconds_total=min(max_total, cfg.window_seconds),
        fixed_window=True, default_steps=d.steps, default_cfg_scale=d.cfg_scale,
        default_sampler=d.sampler, samplers=V_SAMPLERS if cfg.objective == "v" else RF_SAMPLERS,
        conditioning=ids, supports_negative_prompt=bool(cfg.cross_attention_cond_ids),
        supports_init_audio=True, max_batch_size=MAX_BATCH, device=str(device),
        precision=precision, builtin_noise_model=builtin,
    )  # fmt: skip


class _StageClock:
    """Wall time per generation stage (CUDA-synchronised), into ``timings`` (seconds)."""

    def __init__(self, device: torch.device, timings: dict[str, float]) -> None:
        self.device, self.timings = device, timings
        self.current: str | None = None
        self.t0 = time.perf_counter()

    def stage(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self.current is not None:
            self.timings[self.current] = self.timings.get(self.current, 0.0) + now - self.t0
        self.current, self.t0 = name, now


def _step_callback(on_step: StepFn | None, should_cancel: CancelFn | None) -> Callable[..., None]:
    def callback(step: int, total: int, sigma: float) -> None:
        if on_step is not None:
            on_step(step, total, sigma)
        if should_cancel is not None and should_cancel() and step < total:
            raise RenderCancelled(f"cancelled at step {step}/{total}")

    return callback
