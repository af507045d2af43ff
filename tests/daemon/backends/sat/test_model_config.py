"""Model config parsing: the published configs, the supported subset, and clear errors for the rest.

Every case starts from a packaged config (a fresh copy each time) and changes one thing, so an
error can only come from that change.
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from latentloop_daemon.backends.sat.config import (
    NumberCondConfig,
    T5CondConfig,
    load_model_config,
    parse_model_config,
)
from latentloop_daemon.backends.sat.known_configs import known_config
from latentloop_daemon.errors import ConfigError

DELETE = object()  # marks a key to remove in _edit


def _edit(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``dotted`` ("a.b.configs.0.type") set to value, or deleted."""
    out = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return out


def _small(**edits: Any) -> dict[str, Any]:
    """sao-small's config with edits given as {"a__b__c": value} (double underscore = dot)."""
    raw = known_config("sao-small")
    for key, value in edits.items():
        raw = _edit(raw, key.replace("__", "."), value)
    return raw


DIT = "model.diffusion.config"
PT = "model.pretransform"
COND = "model.conditioning"


# --- the published configs --------------------------------------------------------------------


def test_sao_1_0_derived_values():
    cfg = parse_model_config(known_config("sao-1.0"), source="sao-1.0")
    assert cfg.objective == "v"
    assert (cfg.sample_size, cfg.sample_rate, cfg.audio_channels) == (2097152, 44100, 2)
    assert cfg.latent_length == 1024 and cfg.window_seconds == pytest.approx(47.554, abs=1e-3)
    assert cfg.io_channels == 64
    d = cfg.dit
    assert (d.embed_dim, d.depth, d.num_heads, d.io_channels) == (1536, 24, 24, 64)
    assert (d.dim_heads, d.cond_embed_dim, d.rotary_dim) == (64, 768, 32)
    assert d.cond_embed_dim // d.dim_heads == 12  # GQA: 24 query heads share 12 kv heads
    assert (d.global_cond_dim, d.global_embed_dim, d.qk_norm) == (1536, 1536, "none")
    assert not d.project_cond_tokens and d.project_global_cond
    assert cfg.cross_attention_cond_ids == ("prompt", "seconds_start", "seconds_total")
    assert cfg.global_cond_ids == ("seconds_start", "seconds_total")
    t5 = cfg.conditioner("prompt")
    assert isinstance(t5, T5CondConfig)
    assert (t5.t5_model_name, t5.t5_dim, t5.max_length, t5.output_dim) == ("t5-base", 768, 128, 768)
    assert not t5.has_proj_out
    for cid in ("seconds_start", "seconds_total"):
        number = cfg.conditioner(cid)
        assert isinstance(number, NumberCondConfig)
        assert (number.min_val, number.max_val, number.output_dim) == (0, 512, 768)
    pt = cfg.pretransform
    assert (pt.model_half, pt.iterate_batch) == (False, True)
    assert (pt.latent_dim, pt.downsampling_ratio, pt.io_channels, pt.scale) == (64, 2048, 2, 1.0)
    assert pt.encoder.latent_dim == 128 and pt.decoder.latent_dim == 64
    assert pt.encoder.strides == pt.decoder.strides == (2, 4, 4, 8, 8)
    assert pt.encoder.use_snake and not pt.decoder.final_tanh
    assert cfg.raw["model_type"] == "diffusion_cond"


def test_sao_small_derived_values():
    cfg = parse_model_config(known_config("sao-small"), source="sao-small")
    assert cfg.objective == "rf_denoiser"
    assert (cfg.sample_size, cfg.latent_length, cfg.io_channels) == (524288, 256, 64)
    assert cfg.window_seconds == pytest.approx(11.889, abs=1e-3)
    d = cfg.dit
    assert (d.embed_dim, d.depth, d.num_heads) == (1024, 16, 8)
    assert (d.dim_heads, d.cond_embed_dim, d.rotary_dim) == (128, 1024, 64)
    assert d.cond_embed_dim // d.dim_heads == d.num_heads  # projected context: no GQA
    assert d.project_cond_tokens and d.project_global_cond  # library defaults (absent keys)
    assert (d.global_cond_dim, d.global_embed_dim, d.qk_norm) == (768, 1024, "ln")
    assert cfg.cross_attention_cond_ids == ("prompt", "seconds_total")
    assert cfg.global_cond_ids == ("seconds_total",)
    assert [c.id for c in cfg.conditioners] == ["prompt", "seconds_total"]
    t5 = cfg.conditioner("prompt")
    assert isinstance(t5, T5CondConfig) and t5.max_length == 64
    total = cfg.conditioner("seconds_total")
    assert isinstance(total, NumberCondConfig) and (total.min_val, total.max_val) == (0, 256)
    assert (cfg.pretransform.model_half, cfg.pretransform.iterate_batch) == (True, False)
    with pytest.raises(KeyError):
        cfg.conditioner("seconds_start")


@pytest.mark.parametrize(("name", "heads", "kv_heads"), [("sao-1.0", 24, 12), ("sao-small", 8, 8)])
def test_built_model_uses_the_implied_head_counts(name, heads, kv_heads):
    import torch

    from latentloop_daemon.backends.sat.model import StableAudioModel

    with torch.device("meta"):  # full size, no memory
        model = StableAudioModel(parse_model_config(known_config(name)))
    for layer in model.model.model.transformer.layers:
        assert (layer.self_attn.num_heads, layer.self_attn.kv_heads) == (heads, heads)
        assert (layer.cross_attn.num_heads, layer.cross_attn.kv_heads) == (heads, kv_heads)


def test_rectified_flow_objective_parses():
    cfg = parse_model_config(_small(model__diffusion__diffusion_objective="rectified_flow"))
    assert cfg.objective == "rectified_flow"


def test_objective_defaults_to_v_and_ignored_training_options_are_accepted():
    raw = _edit(known_config("sao-small"), "model.diffusion.diffusion_objective", DELETE)
    raw = _edit(raw, f"{DIT}.zero_init_branch_outputs", True)
    raw = _edit(raw, f"{DIT}.use_checkpointing", False)
    assert parse_model_config(raw).objective == "v"


def test_load_model_config_reads_a_file(tmp_path: Path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(known_config("sao-1.0")), encoding="utf-8")
    assert load_model_config(path) == parse_model_config(known_config("sao-1.0"), str(path))


# --- unsupported fields: named, with what is supported ----------------------------------------


UNSUPPORTED = [
        ("model_type", "diffusion_uncond", "model_type", ["'diffusion_cond'"]),
        ("model.diffusion.type", "adp_cfg_1d", "model.diffusion.type", ["'dit'"]),
        (
            "model.diffusion.diffusion_objective", "x0", "model.diffusion.diffusion_objective",
            ["'v'", "'rectified_flow'", "'rf_denoiser'"],
        ),
        (
            f"{DIT}.transformer_type", "x-transformers", f"{DIT}.transformer_type",
            ["'continuous_transformer'"],
        ),
        (f"{DIT}.global_cond_type", "adaLN", f"{DIT}.global_cond_type", ["'prepend'"]),
        (f"{DIT}.timestep_cond_type", "input_concat", f"{DIT}.timestep_cond_type", ["'global'"]),
        (f"{PT}.type", "dac_pretrained", f"{PT}.type", ["'autoencoder'"]),
        (f"{PT}.config.encoder.type", "dac", f"{PT}.config.encoder.type", ["'oobleck'"]),
        (f"{PT}.config.decoder.type", "seanet", f"{PT}.config.decoder.type", ["'oobleck'"]),
        (f"{PT}.config.bottleneck.type", "rvq", f"{PT}.config.bottleneck.type", ["'vae'"]),
        (f"{COND}.configs.0.type", "clap_text", f"{COND}.configs[0].type", ["'t5'", "'number'"]),
        (f"{DIT}.attn_kwargs.qk_norm", "rms", f"{DIT}.attn_kwargs.qk_norm", ["'none'", "'ln'"]),
        (f"{DIT}.attn_kwargs.flash", True, f"{DIT}.attn_kwargs.flash", ["'qk_norm'"]),
        (
            "model.diffusion.input_concat_ids", ["prompt"], "model.diffusion.input_concat_ids",
            ["'[] (absent)'"],
        ),
        (
            "model.diffusion.prepend_cond_ids", ["prompt"], "model.diffusion.prepend_cond_ids",
            ["'[] (absent)'"],
        ),
        (f"{DIT}.patch_size", 2, f"{DIT}.patch_size", ["1"]),
        (f"{DIT}.input_concat_dim", 64, f"{DIT}.input_concat_dim", ["0"]),
        (f"{PT}.chunked", True, f"{PT}.chunked", ["False"]),
        (f"{PT}.config.pretransform", {}, f"{PT}.config.pretransform", ["'absent'"]),
        (
            f"{PT}.config.decoder.config.soft_clip", True, f"{PT}.config.decoder.soft_clip",
            ["False"],
        ),
        (
            f"{PT}.config.encoder.config.antialias_activation", True,
            f"{PT}.config.encoder.config.antialias_activation", ["False"],
        ),
        (
            f"{COND}.configs.0.config.t5_model_name", "t5-gigantic",
            f"{COND}.configs[0].config.t5_model_name", ["'t5-base'", "'google/flan-t5-xl'"],
        ),
        (f"{COND}.configs.0.config.enable_grad", True, "enable_grad", ["False"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dotted", "value", "field", "supported"),
    UNSUPPORTED,
    ids=[f"{c[0]}={c[1]!r}" for c in UNSUPPORTED],
)
def test_unsupported_field_is_named_with_supported_values(dotted, value, field, supported):
    raw = _edit(known_config("sao-small"), dotted, value)
    with pytest.raises(ConfigError) as info:
        parse_model_config(raw, source="cfg.json")
    message = str(info.value)
    assert message.startswith("cfg.json: "), message
    assert field in message and repr(value) in message, message
    assert "is not supported (supported: " in message, message
    for option in supported:
        assert option in message, message


def test_unknown_dit_option_lists_the_supported_ones():
    raw = _edit(known_config("sao-1.0"), f"{DIT}.num_memory_tokens", 4)
    with pytest.raises(ConfigError) as info:
        parse_model_config(raw, source="cfg.json")
    message = str(info.value)
    assert message.startswith(f"cfg.json: {DIT}.num_memory_tokens: unsupported DiT option")
    for option in ("embed_dim", "depth", "num_heads", "attn_kwargs", "transformer_type"):
        assert option in message


# --- malformed values -------------------------------------------------------------------------


MALFORMED = [
    ("model", DELETE, "cfg.json: model: missing"),
    ("model.diffusion", DELETE, "model.diffusion: missing"),
    ("model.diffusion.config", DELETE, "model.diffusion.config: missing"),
    ("model.conditioning", DELETE, "model.conditioning: missing"),
    (PT, DELETE, f"{PT}: missing"),
    (f"{PT}.config.encoder", DELETE, f"{PT}.config.encoder: missing"),
    (f"{PT}.config.bottleneck", DELETE, f"{PT}.config.bottleneck: missing"),
    ("sample_size", DELETE, "sample_size: expected a positive integer, got None"),
    ("model", [], "cfg.json: model: expected an object, got list"),
    (f"{DIT}", "dit", f"{DIT}: expected an object, got str"),
    ("sample_rate", "44100", "sample_rate: expected a positive integer, got '44100'"),
    ("sample_size", 0, "sample_size: expected a positive integer, got 0"),
    ("sample_size", 524288.0, "sample_size: expected a positive integer"),
    (f"{DIT}.depth", True, f"{DIT}.depth: expected a positive integer, got True"),
    (f"{DIT}.embed_dim", -1024, f"{DIT}.embed_dim: expected a positive integer"),
    (f"{PT}.config.encoder.config.strides", "2,4", "strides: expected a list of positive"),
    (f"{PT}.config.decoder.config.c_mults", [1, 0, 4], "c_mults: expected a list of positive"),
    ("model.diffusion.cross_attention_cond_ids", "prompt", "expected a list of strings"),
    (f"{COND}.configs", {}, f"{COND}.configs: expected a non-empty list"),
    (f"{COND}.configs", [], f"{COND}.configs: expected a non-empty list"),
    (f"{COND}.configs.0.id", 5, rf"{COND}.configs\[0\].id: expected a string, got 5"),
    (f"{COND}.configs.1.config.max_val", "256", "max_val: expected a number, got '256'"),
    (f"{COND}.configs.1.config.max_val", 0, "max_val: must be greater than min_val"),
    (f"{COND}.configs.1.id", "prompt", "duplicate conditioner ids"),
    (f"{PT}.scale", "1", f"{PT}.scale: expected a number"),
    # Dimensions that disagree between sections.
    ("sample_size", 524289, "sample_size 524289 is not a multiple of downsampling_ratio 2048"),
    (f"{PT}.config.downsampling_ratio", 1024, "1024 != product of strides"),
    (f"{PT}.config.encoder.config.strides", [2, 4, 4, 8], "needs one entry per stride"),
    (f"{DIT}.io_channels", 32, r"io_channels disagree \(model 64, dit 32"),
    ("model.io_channels", 32, r"io_channels disagree \(model 32, dit 64"),
    (f"{PT}.config.encoder.config.latent_dim", 64, "encoder latent_dim must be 2 x decoder"),
    (f"{DIT}.cond_token_dim", 512, "cond_token_dim 512 != cond_dim"),
    (f"{DIT}.global_cond_dim", 1024, r"global_cond_dim 1024 != 768 \(sum of \['seconds_total'"),
    (f"{DIT}.num_heads", 7, "embed_dim 1024 not divisible"),
    ("model.diffusion.global_cond_ids", ["prompt"], "'prompt' must be a number"),
    ("model.diffusion.cross_attention_cond_ids", ["lyrics"], "'lyrics' names no conditioner"),
]


@pytest.mark.parametrize(
    ("dotted", "value", "match"),
    MALFORMED,
    ids=[f"{c[0]}={'<deleted>' if c[1] is DELETE else repr(c[1])}" for c in MALFORMED],
)
def test_malformed_config_is_a_clear_error(dotted, value, match):
    raw = _edit(known_config("sao-small"), dotted, value)
    with pytest.raises(ConfigError, match=match):
        parse_model_config(raw, source="cfg.json")


def _sao10_with_cond_dim(width: int) -> dict[str, Any]:
    raw = _edit(known_config("sao-1.0"), f"{COND}.cond_dim", width)
    raw = _edit(raw, f"{DIT}.cond_token_dim", width)
    return _edit(raw, f"{DIT}.global_cond_dim", 2 * width)  # two number conditioners


def test_gqa_head_counts_must_divide():
    # 1536 / 24 heads = 64-wide heads; a 640-wide context gives 10 kv heads, and 24 % 10 != 0.
    raw = _sao10_with_cond_dim(640)
    with pytest.raises(ConfigError, match="query heads not a multiple of key/value heads"):
        parse_model_config(raw, source="cfg.json")
    # A context width that is not a whole number of heads.
    raw = _sao10_with_cond_dim(700)
    with pytest.raises(ConfigError, match="cross-attention width not a multiple of the head dim"):
        parse_model_config(raw, source="cfg.json")


@pytest.mark.parametrize("top", [[], "diffusion_cond", None, 3])
def test_top_level_must_be_an_object(top):
    with pytest.raises(ConfigError, match="cfg.json: expected an object"):
        parse_model_config(top, source="cfg.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"model_type": "diffusion_cond",', "is not readable JSON"),
        (b"", "is not readable JSON"),
        (b"\xff\xfe\x00garbage", "is not readable JSON"),
        (b"[1, 2]", "expected an object, got list"),
    ],
)
def test_load_model_config_bad_files(tmp_path: Path, content: bytes, match: str):
    path = tmp_path / "model_config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_model_config(path)
    assert str(path) in str(info.value)


def test_load_model_config_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="model config not found: .*nope.json"):
        load_model_config(tmp_path / "nope.json")
