"""Parse and validate a stable-audio-tools ``model_config.json`` into frozen dataclasses.

Only what Stable Audio Open 1.0, Stable Audio Open Small and their fine-tunes use is supported:
``model_type: diffusion_cond`` with a ``dit`` (``continuous_transformer``) diffusion model, an
``autoencoder`` pretransform (Oobleck encoder/decoder, ``vae`` bottleneck) and ``t5`` + ``number``
conditioners. Anything else fails here, naming the field and listing what is supported. Absent
keys take the library's defaults (see engine-spec §3). No torch import.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError

OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")
T5_MODEL_DIMS = {
    "t5-small": 512,
    "t5-base": 768,
    "t5-large": 1024,
    "t5-3b": 1024,
    "t5-11b": 1024,
    "google/flan-t5-small": 512,
    "google/flan-t5-base": 768,
    "google/flan-t5-large": 1024,
    "google/flan-t5-xl": 2048,
    "google/flan-t5-xxl": 4096,
    "google/t5-v1_1-xl": 2048,
    "google/t5-v1_1-xxl": 4096,
}
# DiT options that only matter for training or initialisation: accepted and ignored.
_DIT_IGNORED = {"zero_init_branch_outputs", "use_checkpointing"}


@dataclass(frozen=True, slots=True)
class OobleckConfig:
    """One side of the Oobleck autoencoder. ``latent_dim`` is the side's latent width."""

    audio_channels: int
    channels: int
    c_mults: tuple[int, ...]
    strides: tuple[int, ...]
    latent_dim: int
    use_snake: bool
    final_tanh: bool = False


@dataclass(frozen=True, slots=True)
class PretransformConfig:
    """The autoencoder pretransform: encoder, decoder and the flags of AutoencoderPretransform."""

    encoder: OobleckConfig
    decoder: OobleckConfig
    latent_dim: int
    downsampling_ratio: int
    io_channels: int
    scale: float
    model_half: bool
    iterate_batch: bool


@dataclass(frozen=True, slots=True)
class T5CondConfig:
    """A ``t5`` conditioner: text -> [B, max_length, output_dim] tokens (fp16 T5, masked)."""

    id: str
    t5_model_name: str
    t5_dim: int
    max_length: int
    output_dim: int
    project_out: bool

    @property
    def has_proj_out(self) -> bool:
        return self.t5_dim != self.output_dim or self.project_out


@dataclass(frozen=True, slots=True)
class NumberCondConfig:
    """A ``number`` conditioner: a float clamped to [min_val, max_val] -> [B, 1, output_dim]."""

    id: str
    min_val: float
    max_val: float
    output_dim: int


@dataclass(frozen=True, slots=True)
class DiTConfig:
    """The diffusion transformer (``DiffusionTransformer`` with ``continuous_transformer``)."""

    io_channels: int
    embed_dim: int
    depth: int
    num_heads: int
    cond_token_dim: int
    project_cond_tokens: bool
    global_cond_dim: int
    project_global_cond: bool
    qk_norm: str  # "none" or "ln"

    @property
    def dim_heads(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def cond_embed_dim(self) -> int:
        return self.embed_dim if self.project_cond_tokens else self.cond_token_dim

    @property
    def global_embed_dim(self) -> int:
        return self.embed_dim if self.project_global_cond else self.global_cond_dim

    @property
    def rotary_dim(self) -> int:
        return max(self.dim_heads // 2, 32)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything the engine builds from ``model_config.json``."""

    sample_size: int
    sample_rate: int
    audio_channels: int
    objective: str
    io_channels: int
    conditioners: tuple[T5CondConfig | NumberCondConfig, ...]
    cross_attention_cond_ids: tuple[str, ...]
    global_cond_ids: tuple[str, ...]
    dit: DiTConfig
    pretransform: PretransformConfig
    raw: dict[str, Any]

    @property
    def latent_length(self) -> int:
        return self.sample_size // self.pretransform.downsampling_ratio

    @property
    def window_seconds(self) -> float:
        return self.sample_size / self.sample_rate

    def conditioner(self, cond_id: str) -> T5CondConfig | NumberCondConfig:
        for c in self.conditioners:
            if c.id == cond_id:
                return c
        raise KeyError(cond_id)


def load_model_config(path: Path) -> ModelConfig:
    """Read and validate a ``model_config.json`` file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"model config not found: {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"model config {path} is not readable JSON: {e}") from e
    return parse_model_config(raw, source=str(path))


def parse_model_config(raw: Any, source: str = "model_config.json") -> ModelConfig:
    """Validate a parsed ``model_config.json`` dict and build a :class:`ModelConfig`."""
    r = _Reader(raw, "", source)
    _expect_choice(r, "model_type", ("diffusion_cond",))
    model = r.section("model")
    sample_rate = r.posint("sample_rate")
    pretransform = _parse_pretransform(model.section("pretransform"))
    conditioning = model.section("conditioning")
    conditioners = _parse_conditioners(conditioning)
    diffusion = model.section("diffusion")
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in OBJECTIVES:
        raise _unsupported(diffusion, "diffusion_objective", objective, OBJECTIVES)
    _expect_choice(diffusion, "type", ("dit",))
    for key in ("input_concat_ids", "prepend_cond_ids"):
        if diffusion.get(key, []):
            raise _unsupported(diffusion, key, diffusion.get(key), ("[] (absent)",))
    cross_ids = tuple(diffusion.str_list("cross_attention_cond_ids", []))
    global_ids = tuple(diffusion.str_list("global_cond_ids", []))
    known = {c.id for c in conditioners}
    for cid in cross_ids + global_ids:
        if cid not in known:
            raise ConfigError(f"{diffusion.where('cond ids')}: {cid!r} names no conditioner")
    for cid in global_ids:
        if not isinstance(next(c for c in conditioners if c.id == cid), NumberCondConfig):
            raise ConfigError(f"{diffusion.where('global_cond_ids')}: {cid!r} must be a number")
    dit = _parse_dit(diffusion.section("config"))
    config = ModelConfig(
        sample_size=r.posint("sample_size"),
        sample_rate=sample_rate,
        audio_channels=r.posint("audio_channels", 2),
        objective=objective,
        io_channels=model.posint("io_channels"),
        conditioners=conditioners,
        cross_attention_cond_ids=cross_ids,
        global_cond_ids=global_ids,
        dit=dit,
        pretransform=pretransform,
        raw=raw,
    )
    _check_dims(config, r)
    return config


def _parse_pretransform(p: _Reader) -> PretransformConfig:
    _expect_choice(p, "type", ("autoencoder",))
    c = p.section("config")
    encoder = _parse_oobleck(c.section("encoder"), "in_channels")
    decoder = _parse_oobleck(c.section("decoder"), "out_channels")
    bottleneck = c.section("bottleneck")
    _expect_choice(bottleneck, "type", ("vae",))
    for key in ("pretransform", "in_channels", "out_channels"):
        if c.get(key) is not None:
            raise _unsupported(c, key, c.get(key), ("absent",))
    if c.section("decoder").section("config").get("soft_clip", False):
        raise _unsupported(c, "decoder.soft_clip", True, (False,))
    ratio = c.posint("downsampling_ratio")
    if math.prod(encoder.strides) != ratio or math.prod(decoder.strides) != ratio:
        raise ConfigError(f"{c.where('downsampling_ratio')}: {ratio} != product of strides")
    if p.get("chunked", False):
        raise _unsupported(p, "chunked", True, (False,))
    return PretransformConfig(
        encoder=encoder,
        decoder=decoder,
        latent_dim=c.posint("latent_dim"),
        downsampling_ratio=ratio,
        io_channels=c.posint("io_channels"),
        scale=float(p.number("scale", 1.0)),
        model_half=bool(p.get("model_half", False)),
        iterate_batch=bool(p.get("iterate_batch", False)),
    )


def _parse_oobleck(side: _Reader, channels_key: str) -> OobleckConfig:
    _expect_choice(side, "type", ("oobleck",))
    c = side.section("config")
    for key, ok in (("antialias_activation", False), ("use_nearest_upsample", False)):
        if c.get(key, ok) != ok:
            raise _unsupported(c, key, c.get(key), (ok,))
    c_mults = tuple(c.int_list("c_mults", [1, 2, 4, 8]))
    strides = tuple(c.int_list("strides", [2, 4, 8, 8]))
    if len(c_mults) != len(strides):
        raise ConfigError(f"{c.where('c_mults')}: needs one entry per stride")
    return OobleckConfig(
        audio_channels=c.posint(channels_key, 2),
        channels=c.posint("channels", 128),
        c_mults=c_mults,
        strides=strides,
        latent_dim=c.posint("latent_dim", 32),
        use_snake=bool(c.get("use_snake", False)),
        final_tanh=bool(c.get("final_tanh", channels_key == "out_channels")),
    )


def _parse_conditioners(conditioning: _Reader) -> tuple[T5CondConfig | NumberCondConfig, ...]:
    cond_dim = conditioning.posint("cond_dim")
    out: list[T5CondConfig | NumberCondConfig] = []
    configs = conditioning.get("configs")
    if not isinstance(configs, list) or not configs:
        raise ConfigError(f"{conditioning.where('configs')}: expected a non-empty list")
    for i, item in enumerate(configs):
        entry = _Reader(item, f"{conditioning.path}.configs[{i}]", conditioning.source)
        cid = entry.text("id")
        ctype = entry.text("type")
        c = (
            entry.section("config")
            if "config" in entry.data
            else _Reader({}, entry.path, entry.source)
        )
        if ctype == "t5":
            name = c.get("t5_model_name", "t5-base")
            if name not in T5_MODEL_DIMS:
                raise _unsupported(c, "t5_model_name", name, tuple(T5_MODEL_DIMS))
            if c.get("enable_grad", False):
                raise _unsupported(c, "enable_grad", True, (False,))
            out.append(
                T5CondConfig(
                    id=cid,
                    t5_model_name=name,
                    t5_dim=T5_MODEL_DIMS[name],
                    max_length=c.posint("max_length", 128),
                    output_dim=cond_dim,
                    project_out=bool(c.get("project_out", False)),
                )
            )
        elif ctype == "number":
            lo, hi = c.number("min_val", 0), c.number("max_val", 1)
            if not hi > lo:
                raise ConfigError(f"{c.where('max_val')}: must be greater than min_val")
            out.append(NumberCondConfig(id=cid, min_val=lo, max_val=hi, output_dim=cond_dim))
        else:
            raise _unsupported(entry, "type", ctype, ("t5", "number"))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{conditioning.where('configs')}: duplicate conditioner ids {ids}")
    return tuple(out)


def _parse_dit(c: _Reader) -> DiTConfig:
    supported = {
        "io_channels",
        "embed_dim",
        "depth",
        "num_heads",
        "cond_token_dim",
        "project_cond_tokens",
        "global_cond_dim",
        "project_global_cond",
        "transformer_type",
        "global_cond_type",
        "timestep_cond_type",
        "patch_size",
        "input_concat_dim",
        "prepend_cond_dim",
        "attn_kwargs",
    }
    for key in c.data:
        if key not in supported and key not in _DIT_IGNORED:
            raise ConfigError(
                f"{c.where(key)}: unsupported DiT option; supported: {', '.join(sorted(supported))}"
            )
    _expect_choice(c, "transformer_type", ("continuous_transformer",), "continuous_transformer")
    _expect_choice(c, "global_cond_type", ("prepend",), "prepend")
    _expect_choice(c, "timestep_cond_type", ("global",), "global")
    for key, ok in (("patch_size", 1), ("input_concat_dim", 0), ("prepend_cond_dim", 0)):
        if c.get(key, ok) != ok:
            raise _unsupported(c, key, c.get(key), (ok,))
    attn = c.section("attn_kwargs") if "attn_kwargs" in c.data else _Reader({}, c.path, c.source)
    for key in attn.data:
        if key != "qk_norm":
            raise _unsupported(attn, key, attn.get(key), ("qk_norm",))
    qk_norm = attn.get("qk_norm", "none")
    if qk_norm not in ("none", "ln"):
        raise _unsupported(attn, "qk_norm", qk_norm, ("none", "ln"))
    embed_dim, num_heads = c.posint("embed_dim", 768), c.posint("num_heads", 8)
    if embed_dim % num_heads:
        raise ConfigError(f"{c.where('num_heads')}: embed_dim {embed_dim} not divisible")
    return DiTConfig(
        io_channels=c.posint("io_channels", 32),
        embed_dim=embed_dim,
        depth=c.posint("depth", 12),
        num_heads=num_heads,
        cond_token_dim=c.posint("cond_token_dim", 0),
        project_cond_tokens=bool(c.get("project_cond_tokens", True)),
        global_cond_dim=c.posint("global_cond_dim", 0),
        project_global_cond=bool(c.get("project_global_cond", True)),
        qk_norm=qk_norm,
    )


def _check_dims(config: ModelConfig, r: _Reader) -> None:
    """Cross-check widths between the sections, so a bad config fails before any weights load."""
    dit, pt = config.dit, config.pretransform
    if dit.io_channels != config.io_channels or pt.latent_dim != config.io_channels:
        raise ConfigError(
            f"{r.source}: io_channels disagree (model {config.io_channels}, "
            f"dit {dit.io_channels}, pretransform latent_dim {pt.latent_dim})"
        )
    if pt.encoder.latent_dim != 2 * pt.latent_dim or pt.decoder.latent_dim != pt.latent_dim:
        raise ConfigError(f"{r.source}: VAE encoder latent_dim must be 2 x decoder latent_dim")
    if config.sample_size % pt.downsampling_ratio:
        raise ConfigError(
            f"{r.source}: sample_size {config.sample_size} is not a multiple of "
            f"downsampling_ratio {pt.downsampling_ratio}"
        )
    cross_dims = {config.conditioner(i).output_dim for i in config.cross_attention_cond_ids}
    if config.cross_attention_cond_ids and cross_dims != {dit.cond_token_dim}:
        raise ConfigError(f"{r.source}: cond_token_dim {dit.cond_token_dim} != cond_dim")
    global_dim = sum(config.conditioner(i).output_dim for i in config.global_cond_ids)
    if config.global_cond_ids and global_dim != dit.global_cond_dim:
        raise ConfigError(
            f"{r.source}: global_cond_dim {dit.global_cond_dim} != {global_dim} "
            f"(sum of {list(config.global_cond_ids)})"
        )
    if dit.cond_embed_dim % dit.dim_heads:
        raise ConfigError(f"{r.source}: cross-attention width not a multiple of the head dim")
    if dit.num_heads % (dit.cond_embed_dim // dit.dim_heads or 1):
        raise ConfigError(f"{r.source}: query heads not a multiple of key/value heads")


class _Reader:
    """Typed access to one JSON object, with error messages that name the dotted path."""

    def __init__(self, data: Any, path: str, source: str | None = None) -> None:
        if not isinstance(data, dict):
            where = f"{source}: {path}" if path else str(source)
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source or "model_config.json"

    def where(self, key: str) -> str:
        dotted = f"{self.path}.{key}" if self.path else key
        return f"{self.source}: {dotted}"

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def section(self, key: str) -> _Reader:
        if key not in self.data:
            raise ConfigError(f"{self.where(key)}: missing")
        dotted = f"{self.path}.{key}" if self.path else key
        return _Reader(self.data[key], dotted, self.source)

    def text(self, key: str) -> str:
        v = self.data.get(key)
        if not isinstance(v, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {v!r}")
        return v

    def number(self, key: str, default: float | None = None) -> float:
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{self.where(key)}: expected a number, got {v!r}")
        return v

    def posint(self, key: str, default: int | None = None) -> int:
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{self.where(key)}: expected a positive integer, got {v!r}")
        return v

    def int_list(self, key: str, default: list[int]) -> list[int]:
        v = self.data.get(key, default)
        if not isinstance(v, list) or not all(isinstance(x, int) and x > 0 for x in v):
            raise ConfigError(f"{self.where(key)}: expected a list of positive integers")
        return v

    def str_list(self, key: str, default: list[str]) -> list[str]:
        v = self.data.get(key, default)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{self.where(key)}: expected a list of strings")
        return v


def _expect_choice(r: _Reader, key: str, allowed: tuple[str, ...], default: Any = None) -> None:
    value = r.get(key, default)
    if value not in allowed:
        raise _unsupported(r, key, value, allowed)


def _unsupported(r: _Reader, key: str, value: Any, supported: tuple[Any, ...]) -> ConfigError:
    options = ", ".join(repr(s) for s in supported)
    return ConfigError(f"{r.where(key)} = {value!r} is not supported (supported: {options})")
