#!/usr/bin/env python3
"""Record golden outputs of stable-audio-tools 0.0.19 on two tiny random SAO-shaped models.

Runs ONLY in the reference virtualenv (stable-audio-tools 0.0.19, CPU torch), with an offline
Hugging Face cache that holds the tiny random "t5-base" made by shared/tools/make-t5-cache.py:

    REFVENV/bin/python ../shared/tools/make-t5-cache.py /tmp/hf_home
    HF_HOME=/tmp/hf_home HF_HUB_OFFLINE=1 \
        REFVENV/bin/python tools/make_goldens.py OUT_DIR [--threads 2]

Writes (see the report printed at the end, and goldens.json for the full case list):

    OUT_DIR/t5-tiny/text_encoder/{config.json, model.safetensors}   (copied from the T5 cache)
    OUT_DIR/t5-tiny/tokenizer/{tokenizer.json, tokenizer_config.json, ...}
    OUT_DIR/<model>/model_config.json     stable-audio-tools format (model_type diffusion_cond)
    OUT_DIR/<model>/model.safetensors     model.state_dict() in fp32 (get_pretrained_model loads it)
    OUT_DIR/<model>/goldens.safetensors   every golden tensor, named "<case>/<role>" (generate
                                          cases keep "audio" only for AUDIO_STORED; all keep
                                          "latents" and "noise")
    OUT_DIR/<model>/goldens.json          versions, thread count, the cases and their parameters

for <model> in sao10-tiny (SAO-1.0-shaped, "v" objective, GQA cross-attention: 2 query heads,
1 kv head) and small-tiny (SAO-small-shaped, rf_denoiser, qk-LayerNorm, fp16 VAE via model_half).
Both DiTs have embed_dim 96 and 2 heads of width 48, so the rotary width max(48 // 2, 32) = 32
covers only part of each head (the un-rotated tail is exercised); 8 latent frames (16384
samples).

The models are built with create_model_from_config, every *parameter* is overwritten with
deterministic random values (buffers such as LayerNorm betas and rotary inv_freq are kept), the
state dict is saved, and a fresh model is built and strictly loaded from that file exactly as
get_pretrained_model does; all goldens come from that loaded model through the library's own
functions (conditioners, DiTWrapper.forward, AutoencoderPretransform.encode/decode,
generate_diffusion_cond).  Output is byte-identical between runs on the same machine and thread
count.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SAMPLE_RATE = 44100
DOWNSAMPLING = 2048
LATENT_LEN = 8
SAMPLE_SIZE = DOWNSAMPLING * LATENT_LEN  # 16384
LATENT_DIM = 16

PROMPTS = [
    "128 BPM tech house drum loop",
    "",
    "120 BPM deep house groove with warm bass and crisp hi hats, ambient piano melody with "
    "soft pads and reverb, birds singing in a forest at dawn",
]
PROMPT = "128 BPM tech house drum loop"
NEG_PROMPT = "lofi hip hop beat with vinyl crackle"
NUMBER_VALUES = [-3.0, 0.0, 1.5, 7.25, 30.0, 300.0, 600.0]

MODEL_SEEDS = {"sao10-tiny": 10, "small-tiny": 20}
# generate cases whose decoded audio is stored; the others store latents + noise only (their
# audio is still computed and checked against pretransform.decode(latents), to keep the files
# small: decode is covered by vae_decode and by these cases)
AUDIO_STORED = {
    "sao10-tiny": ("gen_3msde_cfg7_neg", "gen_a2a_3msde_cfg7"),
    "small-tiny": ("gen_pingpong_cfg4_neg", "gen_a2a_pingpong_cfg1"),
}
INPUT_SEEDS = {"sao10-tiny": 110, "small-tiny": 120}


# --------------------------------------------------------------------------------------------
# configs


def tiny_vae(model_half: bool) -> dict[str, Any]:
    enc = {
        "type": "oobleck",
        "config": {
            "in_channels": 2,
            "channels": 4,
            "c_mults": [1, 2, 4, 8, 16],
            "strides": [2, 4, 4, 8, 8],
            "latent_dim": 2 * LATENT_DIM,
            "use_snake": True,
        },
    }
    dec = {
        "type": "oobleck",
        "config": {
            "out_channels": 2,
            "channels": 4,
            "c_mults": [1, 2, 4, 8, 16],
            "strides": [2, 4, 4, 8, 8],
            "latent_dim": LATENT_DIM,
            "use_snake": True,
            "final_tanh": False,
        },
    }
    pt: dict[str, Any] = {"type": "autoencoder", "iterate_batch": not model_half}
    if model_half:
        pt["model_half"] = True
    pt["config"] = {
        "encoder": enc,
        "decoder": dec,
        "bottleneck": {"type": "vae"},
        "latent_dim": LATENT_DIM,
        "downsampling_ratio": DOWNSAMPLING,
        "io_channels": 2,
    }
    return pt


def sao10_tiny_config() -> dict[str, Any]:
    return {
        "model_type": "diffusion_cond",
        "sample_size": SAMPLE_SIZE,
        "sample_rate": SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "pretransform": tiny_vae(model_half=False),
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5",
                        "config": {"t5_model_name": "t5-base", "max_length": 16},
                    },
                    {
                        "id": "seconds_start",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 512},
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 512},
                    },
                ],
                "cond_dim": 48,
            },
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "global_cond_ids": ["seconds_start", "seconds_total"],
                "type": "dit",
                "config": {
                    "io_channels": LATENT_DIM,
                    "embed_dim": 96,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": 48,
                    "global_cond_dim": 96,
                    "project_cond_tokens": False,
                    "transformer_type": "continuous_transformer",
                },
            },
            "io_channels": LATENT_DIM,
        },
    }


def small_tiny_config() -> dict[str, Any]:
    return {
        "model_type": "diffusion_cond",
        "sample_size": SAMPLE_SIZE,
        "sample_rate": SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "pretransform": tiny_vae(model_half=True),
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5",
                        "config": {"t5_model_name": "t5-base", "max_length": 12},
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 256},
                    },
                ],
                "cond_dim": 48,
            },
            "diffusion": {
                "diffusion_objective": "rf_denoiser",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "type": "dit",
                "config": {
                    "io_channels": LATENT_DIM,
                    "embed_dim": 96,
                    "depth": 2,
                    "num_heads": 2,
                    "cond_token_dim": 48,
                    "global_cond_dim": 48,
                    "transformer_type": "continuous_transformer",
                    "attn_kwargs": {"qk_norm": "ln"},
                },
            },
            "io_channels": LATENT_DIM,
        },
    }


# --------------------------------------------------------------------------------------------
# helpers


class Recorder:
    """Collects golden tensors (name -> contiguous CPU tensor) and the case descriptions."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self.notes: dict[str, str] = {}
        self.cases: list[dict[str, Any]] = []
        self.t5_table: list[int] = []

    def put(self, name: str, t: Any, note: str | None = None) -> str:
        import torch

        assert name not in self.tensors, name
        t = t.detach().to("cpu")
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
            note = (note + "; " if note else "") + "bool stored as uint8 (0/1)"
        self.tensors[name] = t.clone().contiguous()
        if note:
            self.notes[name] = note
        return name

    def case(self, **kw: Any) -> dict[str, Any]:
        self.cases.append(kw)
        return kw

    def t5_calls(self, calls: list[tuple[Any, Any]]) -> dict[str, list[str]]:
        """Store T5 encoder calls (input_ids, last_hidden_state) once each; name them per case.

        Identical calls (same ids) are stored once and must have identical hidden states.
        """
        import torch

        ids_names, hidden_names = [], []
        for ids, hidden in calls:
            for k in range(len(self.t5_table)):
                if torch.equal(self.tensors[f"t5_calls/{k}/input_ids"], ids):
                    assert torch.equal(self.tensors[f"t5_calls/{k}/hidden"], hidden), k
                    break
            else:
                k = len(self.t5_table)
                self.t5_table.append(k)
                self.put(f"t5_calls/{k}/input_ids", ids, "int64 ids the T5 encoder was called with")
                self.put(
                    f"t5_calls/{k}/hidden",
                    hidden,
                    "float16 T5 last_hidden_state for those ids (before proj_out and masking)",
                )
            ids_names.append(f"t5_calls/{k}/input_ids")
            hidden_names.append(f"t5_calls/{k}/hidden")
        return {"t5_input_ids": ids_names, "t5_hidden": hidden_names}


@contextmanager
def t5_recorded(model: Any) -> Iterator[list[tuple[Any, Any]]]:
    """Record every call of the prompt conditioner's T5 encoder as (input_ids, hidden)."""
    calls: list[tuple[Any, Any]] = []

    def hook(_m: Any, _args: Any, kwargs: Any, out: Any) -> None:
        calls.append((kwargs["input_ids"].clone(), out["last_hidden_state"].clone()))

    handle = model.conditioner.conditioners["prompt"].model.register_forward_hook(
        hook, with_kwargs=True
    )
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def calls_recorded(module: Any) -> Iterator[list[tuple[Any, Any, Any]]]:
    """Record every call of ``module`` as (args, kwargs, output), tensors cloned."""
    calls: list[tuple[Any, Any, Any]] = []

    def cl(v: Any) -> Any:
        return v.detach().clone() if hasattr(v, "detach") else v

    def hook(_m: Any, args: Any, kwargs: Any, out: Any) -> None:
        calls.append((tuple(cl(a) for a in args), {k: cl(v) for k, v in kwargs.items()}, cl(out)))

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def sampler_recorded(model: Any) -> Iterator[dict[str, Any]]:
    """Record the sampler function's entry (x, sigmas) and its result."""
    import k_diffusion
    import stable_audio_tools.inference.sampling as sat_sampling

    log: dict[str, Any] = {}
    if model.diffusion_objective == "v":
        owner, names = k_diffusion.sampling, ("sample_dpmpp_3m_sde", "sample_dpmpp_2m_sde")
    else:
        owner, names = sat_sampling, ("sample_flow_pingpong", "sample_discrete_euler")
    saved = {n: getattr(owner, n) for n in names}

    def wrap(fn: Any) -> Any:
        def wrapped(m: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            sigmas = kwargs["sigmas"] if "sigmas" in kwargs else args[0]
            assert "x" not in log, "one sampler call per generate"
            log.update(x=x.clone(), sigmas=sigmas.clone())
            log["out"] = fn(m, x, *args, **kwargs)
            return log["out"]

        return wrapped

    for n, fn in saved.items():
        setattr(owner, n, wrap(fn))
    try:
        yield log
    finally:
        for n, fn in saved.items():
            setattr(owner, n, fn)


def randomize_parameters(model: Any, seed: int) -> None:
    """Overwrite every parameter (not buffers) with deterministic random values.

    weights with >= 2 dims: N(0, 1/fan_in); weight_norm weight_g: |N(0,1)|*0.4 + 0.4 (> 0; keeps
    the VAE near unit gain); weight_v: N(0,1); snake alpha/beta: N(0, 0.3); LayerNorm gammas and
    qk-norm weights: 1 + N(0, 0.1); other 1-D (biases): N(0, 0.05); NumberEmbedder Fourier
    weights and the DiT timestep Fourier weights: N(0, 1) (their library init).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            leaf = name.rsplit(".", 1)[-1]
            r = torch.randn(shape, generator=g, dtype=torch.float32)
            if leaf == "weight_g":
                v = r.abs() * 0.4 + 0.4
            elif leaf == "weight_v":
                v = r
            elif leaf in ("alpha", "beta"):  # SnakeBeta (log-scale params)
                v = r * 0.3
            elif leaf == "gamma" or (
                leaf == "weight" and name.endswith(("q_norm.weight", "k_norm.weight"))
            ):
                v = 1.0 + 0.1 * r
            elif name.endswith("embedding.0.weights") or name.endswith("timestep_features.weight"):
                v = r
            elif len(shape) >= 2:
                fan_in = math.prod(shape[1:])
                v = r / math.sqrt(fan_in)
            else:
                v = r * 0.05
            p.copy_(v.to(p.dtype))


def stats(t: Any) -> str:
    t = t.float()
    return (
        f"shape {tuple(t.shape)} mean {t.mean().item():+.4f} std {t.std().item():.4f} "
        f"absmax {t.abs().max().item():.4f} finite {bool(t.isfinite().all())}"
    )


def find_t5_snapshot() -> Path:
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        sys.exit("HF_HOME is not set (make it with shared/tools/make-t5-cache.py)")
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        sys.exit("set HF_HUB_OFFLINE=1")
    repo = Path(hf_home) / "hub" / "models--t5-base"
    ref = (repo / "refs" / "main").read_text().strip()
    snap = repo / "snapshots" / ref
    if not (snap / "config.json").is_file():
        sys.exit(f"no t5-base snapshot at {snap}")
    return snap


def copy_t5(snap: Path, out: Path) -> None:
    enc = out / "t5-tiny" / "text_encoder"
    tok = out / "t5-tiny" / "tokenizer"
    enc.mkdir(parents=True, exist_ok=True)
    tok.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copyfile(snap / f, enc / f)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"):
        if (snap / f).is_file():
            shutil.copyfile(snap / f, tok / f)


def fixed_audio(gen: Any, batch: int) -> Any:
    """[batch, 2, SAMPLE_SIZE] float32: a few sines per channel plus a little noise."""
    import torch

    n = torch.arange(SAMPLE_SIZE, dtype=torch.float64) / SAMPLE_RATE
    out = torch.zeros(batch, 2, SAMPLE_SIZE, dtype=torch.float64)
    for b in range(batch):
        for c in range(2):
            for k in range(3):
                f = 110.0 * (1 + b) * (k + 1) * (1.0 + 0.01 * c)
                out[b, c] += (0.3 / (k + 1)) * torch.sin(2 * math.pi * f * n + 0.5 * k + c)
    out = out.float() + 0.02 * torch.randn(batch, 2, SAMPLE_SIZE, generator=gen)
    return out


# --------------------------------------------------------------------------------------------
# the cases


def record_number_cases(model: Any, rec: Recorder) -> None:
    import torch

    for cid, cond in model.conditioner.conditioners.items():
        if type(cond).__name__ != "NumberConditioner":
            continue
        with torch.no_grad():
            emb, mask = cond(list(NUMBER_VALUES), "cpu")
        name = f"number_{cid}"
        rec.case(
            name=name,
            kind="number",
            call=f"model.conditioner.conditioners[{cid!r}](values, 'cpu')",
            params={
                "conditioner_id": cid,
                "values": list(NUMBER_VALUES),
                "min_val": cond.min_val,
                "max_val": cond.max_val,
            },
            inputs={},
            outputs={
                "embedding": rec.put(f"{name}/embedding", emb),
                "mask": rec.put(
                    f"{name}/mask", mask, "float32 ones [B, 1] as the library returns it"
                ),
            },
        )
        print(f"  {name}: emb {stats(emb)}")


def record_t5_case(model: Any, rec: Recorder) -> None:
    import torch

    cond = model.conditioner.conditioners["prompt"]
    with torch.no_grad(), t5_recorded(model) as t5_calls:
        emb, mask = cond(list(PROMPTS), "cpu")
        enc = cond.tokenizer(
            list(PROMPTS),
            truncation=True,
            max_length=cond.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        hidden = cond.model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"].to(torch.bool)
        )["last_hidden_state"]
    rec.case(
        name="t5",
        kind="t5",
        call="model.conditioner.conditioners['prompt'](prompts, 'cpu')",
        params={
            "prompts": list(PROMPTS),
            "max_length": cond.max_length,
            "proj_out": type(cond.proj_out).__name__,
        },
        inputs=rec.t5_calls(t5_calls[:1]),
        outputs={
            "embedding": rec.put("t5/embedding", emb),
            "mask": rec.put("t5/mask", mask),
            "input_ids": rec.put(
                "t5/input_ids",
                enc["input_ids"],
                "int64 tokenizer ids (truncation, padding=max_length)",
            ),
            "t5_hidden": rec.put(
                "t5/t5_hidden", hidden, "float16 T5 last_hidden_state before proj_out and masking"
            ),
        },
    )
    print(f"  t5: emb {stats(emb)}; mask sums {mask.sum(1).tolist()}")


def record_conditioning_case(model: Any, rec: Recorder, cond_dicts: list[dict[str, Any]]) -> None:
    import torch

    with torch.no_grad(), t5_recorded(model) as t5_calls:
        ct = model.conditioner(cond_dicts, "cpu")
        ci = model.get_conditioning_inputs(ct)
        nci = model.get_conditioning_inputs(ct, negative=True)
    outs = {}
    for k in ("cross_attn_cond", "cross_attn_mask", "global_cond"):
        outs[k] = rec.put(f"conditioning/{k}", ci[k])
    assert torch.equal(nci["negative_cross_attn_cond"], ci["cross_attn_cond"])
    rec.case(
        name="conditioning",
        kind="conditioning",
        call="model.get_conditioning_inputs(model.conditioner(conditioning, 'cpu'))",
        params={
            "conditioning": cond_dicts,
            "dtypes": {k: str(ci[k].dtype).replace("torch.", "") for k in outs},
        },
        inputs=rec.t5_calls(t5_calls),
        outputs=outs,
    )
    print(
        f"  conditioning: cross {stats(ci['cross_attn_cond'])} mask dtype "
        f"{ci['cross_attn_mask'].dtype}; global {stats(ci['global_cond'])}"
    )


def record_dit_cases(model: Any, rec: Recorder, gen: Any) -> None:
    import torch

    dit = model.model
    cfg = dit.model  # DiffusionTransformer
    n_tok = sum(
        c.max_length if hasattr(c, "max_length") else 1
        for k, c in model.conditioner.conditioners.items()
        if k in model.cross_attn_cond_ids
    )
    d_cond = cfg.cond_token_dim
    d_glob = cfg.to_global_embed[0].in_features
    b = 2
    x = torch.randn(b, model.io_channels, LATENT_LEN, generator=gen)
    t = torch.tensor([0.83, 0.27])
    n_t5 = n_tok - (len(model.cross_attn_cond_ids) - 1)
    cross = torch.randn(b, n_tok, d_cond, generator=gen)
    mask = torch.ones(b, n_tok)
    for i, valid in enumerate((5, n_t5 - 2)):  # zero the "padding" T5 tokens like the library
        cross[i, valid:n_t5] = 0.0
        mask[i, valid:n_t5] = 0.0
    glob = torch.randn(b, d_glob, generator=gen)
    neg = torch.randn(b, n_tok, d_cond, generator=gen)
    neg_mask = torch.ones(b, n_tok)
    neg_mask[0, 3:n_t5] = 0.0  # rows left non-zero on purpose: the mask must zero them
    neg_mask[1, n_t5 - 4 : n_t5] = 0.0
    inputs = {
        "x": rec.put("dit/x", x),
        "t": rec.put("dit/t", t),
        "cross_attn_cond": rec.put("dit/cross_attn_cond", cross),
        "cross_attn_mask": rec.put(
            "dit/cross_attn_mask",
            mask,
            "float32 0/1 (generate casts masks to the model dtype); unused",
        ),
        "global_cond": rec.put("dit/global_cond", glob),
    }
    neg_inputs = {
        "negative_cross_attn_cond": rec.put(
            "dit/negative_cross_attn_cond", neg, "masked-out rows are deliberately non-zero"
        ),
        "negative_cross_attn_mask": rec.put(
            "dit/negative_cross_attn_mask", neg_mask, "float32 0/1; the DiT does .to(bool)"
        ),
    }
    base = dict(
        cross_attn_cond=cross,
        cross_attn_mask=mask,
        global_cond=glob,
        input_concat_cond=None,
        prepend_cond=None,
        prepend_cond_mask=None,
        batch_cfg=True,
        rescale_cfg=True,
    )
    variants: list[tuple[str, dict[str, Any], bool]] = [
        ("dit_cfg1", {"cfg_scale": 1.0}, False),
        ("dit_cfg7", {"cfg_scale": 7.0}, False),
        ("dit_cfg7_neg", {"cfg_scale": 7.0}, True),
        ("dit_cfg7_neg_phi", {"cfg_scale": 7.0, "scale_phi": 0.5}, True),
        ("dit_cfg7_phi", {"cfg_scale": 7.0, "scale_phi": 0.5}, False),
        ("dit_cfg7_interval_out", {"cfg_scale": 7.0, "cfg_interval": (0.0, 0.5)}, False),
        ("dit_cfg7_interval_in", {"cfg_scale": 7.0, "cfg_interval": (0.5, 1.0)}, False),
    ]
    outs = {}
    for name, kw, use_neg in variants:
        call_kw = dict(base, **kw)
        if use_neg:
            call_kw.update(
                negative_cross_attn_cond=neg,
                negative_cross_attn_mask=neg_mask,
                negative_global_cond=glob,
                negative_input_concat_cond=None,
            )
        with torch.no_grad():
            out = dit(x, t, **call_kw)
        outs[name] = out
        assert out.isfinite().all() and out.std().item() > 0.05, (name, stats(out))
        params = {
            "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
            "cfg_scale": kw["cfg_scale"],
            "scale_phi": kw.get("scale_phi", 0.0),
            "cfg_interval": list(kw.get("cfg_interval", (0, 1))),
            "batch_cfg": True,
            "rescale_cfg": True,
            "negative": use_neg,
            "objective": dit.diffusion_objective,
            "cfg_branch_taken": kw["cfg_scale"] != 1.0 and name != "dit_cfg7_interval_out",
        }
        ins = dict(inputs, **(neg_inputs if use_neg else {}))
        if use_neg:
            ins["negative_global_cond"] = inputs["global_cond"]
        rec.case(
            name=name,
            kind="dit",
            call="model.model(x, t, cross_attn_cond=..., cross_attn_mask=..., "
            "global_cond=..., input_concat_cond=None, prepend_cond=None, "
            "prepend_cond_mask=None, batch_cfg=True, rescale_cfg=True, **params)",
            params=params,
            inputs=ins,
            outputs={"out": rec.put(f"{name}/out", out)},
        )
        print(f"  {name}: {stats(out)}")
    assert torch.equal(outs["dit_cfg7_interval_out"], outs["dit_cfg1"])
    assert torch.equal(outs["dit_cfg7_interval_in"], outs["dit_cfg7"])
    for a, bb in (
        ("dit_cfg1", "dit_cfg7"),
        ("dit_cfg7", "dit_cfg7_neg"),
        ("dit_cfg7_neg", "dit_cfg7_neg_phi"),
        ("dit_cfg7", "dit_cfg7_phi"),
    ):
        d = (outs[a] - outs[bb]).abs().max().item()
        assert d > 1e-3, (a, bb, d)
    # batch items must differ (no degenerate broadcasting)
    for name, out in outs.items():
        assert (out[0] - out[1]).abs().max().item() > 1e-2, name


def record_vae_cases(model: Any, rec: Recorder, gen: Any, enc_seed: int) -> None:
    import torch

    pt = model.pretransform
    pt_dtype = next(pt.parameters()).dtype
    lat = torch.randn(2, LATENT_DIM, LATENT_LEN, generator=gen)
    with torch.no_grad():
        audio = pt.decode(lat.to(pt_dtype))
    rec.case(
        name="vae_decode",
        kind="vae_decode",
        call="model.pretransform.decode(latents.to(pretransform_dtype))",
        params={
            "pretransform_dtype": str(pt_dtype).replace("torch.", ""),
            "model_half": pt.model_half,
            "iterate_batch": pt.iterate_batch,
        },
        inputs={"latents": rec.put("vae_decode/latents", lat)},
        outputs={"audio": rec.put("vae_decode/audio", audio)},
    )
    assert audio.float().std().item() > 1e-2 and audio.isfinite().all(), stats(audio)
    assert (audio[0] - audio[1]).abs().max().item() > 1e-2
    print(f"  vae_decode: {stats(audio)}")

    x = fixed_audio(gen, 2)
    with torch.no_grad():
        torch.manual_seed(enc_seed)
        z = pt.encode(x)
        # the deterministic part (encoder output before the VAE bottleneck), for debugging
        torch.manual_seed(enc_seed)
        xin = x.half() if pt.model_half else x
        _, info = pt.model.encode(xin, iterate_batch=pt.iterate_batch, return_info=True)
        pre = info["pre_bottleneck_latents"]
    rec.case(
        name="vae_encode",
        kind="vae_encode",
        call="torch.manual_seed(seed); model.pretransform.encode(audio)",
        params={
            "seed": enc_seed,
            "pretransform_dtype": str(pt_dtype).replace("torch.", ""),
            "model_half": pt.model_half,
            "iterate_batch": pt.iterate_batch,
        },
        inputs={"audio": rec.put("vae_encode/audio", x)},
        outputs={
            "latents": rec.put("vae_encode/latents", z),
            "pre_bottleneck": rec.put(
                "vae_encode/pre_bottleneck",
                pre,
                "encoder output (mean|scale) before the bottleneck, in the VAE dtype",
            ),
        },
    )
    assert z.float().std().item() > 1e-2 and z.isfinite().all(), stats(z)
    assert (z[0] - z[1]).abs().max().item() > 1e-2
    print(f"  vae_encode: latents {stats(z)}; pre-bottleneck dtype {pre.dtype}")


def record_stages(
    rec: Recorder,
    name: str,
    t5_calls: list[Any],
    dit_calls: list[Any],
    enc_calls: list[Any],
    sampler: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Store what the stage-by-stage (tier 1) checks feed each stage, and what they compare.

    Inputs: the T5 calls, the init-audio encoder calls and the conditioning the DiT got
    (identical at every step). Outputs: the sampler's start (x, sigmas), and per model
    evaluation i the DiT's input x and time t (what the sampler computed) and its output (what
    the DiT computed).
    """
    import torch

    inputs: dict[str, Any] = dict(rec.t5_calls(t5_calls))
    if enc_calls:
        inputs["encoder_audio"] = [
            rec.put(f"{name}/encoder_call{k}/audio", args[0], "VAE encoder input")
            for k, (args, _, _) in enumerate(enc_calls)
        ]
        inputs["encoder_out"] = [
            rec.put(f"{name}/encoder_call{k}/out", out, "VAE encoder output (pre-bottleneck)")
            for k, (_, _, out) in enumerate(enc_calls)
        ]
    outputs = {
        "sigmas": rec.put(f"{name}/sigmas", sampler["sigmas"], "the sampler's schedule"),
        "sampler_x": rec.put(f"{name}/sampler_x", sampler["x"], "the sampler's initial x"),
    }
    _, kw0, _ = dit_calls[0]
    dit_kwargs: dict[str, Any] = {}
    for k, v in kw0.items():
        if isinstance(v, torch.Tensor):
            inputs[f"dit_cond/{k}"] = rec.put(f"{name}/dit_cond/{k}", v, "DiT keyword argument")
        else:
            dit_kwargs[k] = list(v) if isinstance(v, tuple) else v
    for i, (args, kw, out) in enumerate(dit_calls):
        assert kw.keys() == kw0.keys()
        for k, v in kw.items():
            same = torch.equal(v, kw0[k]) if isinstance(v, torch.Tensor) else v == kw0[k]
            assert same, (name, i, k)
        x, t = args
        outputs[f"step{i}/dit_x"] = rec.put(f"{name}/step{i}/dit_x", x, "DiT input x")
        outputs[f"step{i}/dit_t"] = rec.put(f"{name}/step{i}/dit_t", t, "DiT input t")
        outputs[f"step{i}/dit_out"] = rec.put(f"{name}/step{i}/dit_out", out, "DiT output")
    return inputs, outputs, dit_kwargs


def record_generate_cases(
    model: Any,
    rec: Recorder,
    runs: list[dict[str, Any]],
    init_audio: Any,
    audio_stored: tuple[str, ...],
) -> None:
    import torch
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    init_name = rec.put(
        "generate/init_audio", init_audio, "[2, N] stereo, passed as init_audio=(44100, tensor)"
    )
    pt_dtype = next(model.pretransform.parameters()).dtype
    assert set(audio_stored) <= {r["name"] for r in runs}, audio_stored
    all_latents: dict[str, Any] = {}
    for run in runs:
        name = run["name"]
        args = {k: v for k, v in run.items() if k not in ("name", "init_audio")}
        args["conditioning"] = [dict(args["conditioning"])] * args["batch_size"]
        if args.get("negative_conditioning") is not None:
            args["negative_conditioning"] = [dict(args["negative_conditioning"])] * args[
                "batch_size"
            ]
        outs: dict[str, Any] = {}
        for return_latents in (False, True):
            kw = copy.deepcopy(args)
            if run.get("init_audio"):
                kw["init_audio"] = (SAMPLE_RATE, init_audio.clone())
            with (
                torch.no_grad(),
                t5_recorded(model) as t5_calls,
                calls_recorded(model.model) as dit_calls,
                calls_recorded(model.pretransform.model.encoder) as enc_calls,
                sampler_recorded(model) as sampler,
            ):
                y = generate_diffusion_cond(
                    model, device="cpu", return_latents=return_latents, **kw
                )
            outs["latents" if return_latents else "audio"] = y
        assert torch.equal(sampler["out"], outs["latents"]), name
        with torch.no_grad():
            redecoded = model.pretransform.decode(outs["latents"].to(pt_dtype))
        same = torch.equal(redecoded, outs["audio"])
        for role in ("latents", "audio"):  # the two batch items must differ
            d = (outs[role][0] - outs[role][1]).abs().max().item()
            assert d > 1e-2, (name, role, d)
            assert outs[role].isfinite().all(), (name, role)
        all_latents[name] = outs["latents"]
        keep_audio = name in audio_stored
        torch.manual_seed(args["seed"])
        noise = torch.randn([args["batch_size"], model.io_channels, LATENT_LEN])
        params = dict(args)
        params["device"] = "cpu"
        params["return_latents"] = [False, True]
        if run.get("init_audio"):
            params["init_audio"] = [SAMPLE_RATE, "<inputs.init_audio>"]
            params["note"] = (
                "generate_diffusion_cond overrides sampler_kwargs['sigma_max'] with "
                "init_noise_level; the VAE encode of init_audio draws from the "
                "global RNG right after the initial noise"
            )
        if model.diffusion_objective != "v":
            params["note_rf"] = "sample_rf: sigma_max defaults to 1; sigma_min/rho are not used"
        outputs: dict[str, str] = {}
        if keep_audio:
            outputs["audio"] = rec.put(f"{name}/audio", outs["audio"], "return_latents=False")
        outputs["latents"] = rec.put(f"{name}/latents", outs["latents"], "return_latents=True")
        outputs["noise"] = rec.put(
            f"{name}/noise",
            noise,
            "torch.manual_seed(seed); torch.randn(B, io_channels, T): "
            "the initial noise generate_diffusion_cond draws first",
        )
        inputs, step_outputs, dit_kwargs = record_stages(
            rec, name, t5_calls, dit_calls, enc_calls, sampler
        )
        outputs.update(step_outputs)
        if run.get("init_audio"):
            inputs["init_audio"] = init_name
        extra: dict[str, Any] = {}
        if not keep_audio:
            extra["audio_omitted"] = (
                "return_latents=False audio not stored (size); it equals "
                "model.pretransform.decode(latents.to(pretransform_dtype)) exactly when "
                "decode_of_latents_equals_audio is true"
            )
        rec.case(
            name=name,
            kind="generate",
            call="generate_diffusion_cond(model, device='cpu', return_latents=..., **params)",
            params=params,
            inputs=inputs,
            outputs=outputs,
            dit_kwargs=dit_kwargs,
            audio_stored=keep_audio,
            decode_of_latents_equals_audio=same,
            **extra,
        )
        print(
            f"  {name}: latents {stats(outs['latents'])}; audio {stats(outs['audio'])}; "
            f"decode(latents)==audio {same}; audio stored {keep_audio}"
        )
    # every generate case must differ from every other one
    names = list(all_latents)
    for i, a in enumerate(names):
        for bb in names[i + 1 :]:
            d = (all_latents[a] - all_latents[bb]).abs().max().item()
            assert d > 1e-3, (a, bb, d)


# --------------------------------------------------------------------------------------------
# per model


def build_model(name: str, cfg: dict[str, Any], out: Path) -> Any:
    import torch
    from safetensors.torch import save_file
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.utils import load_ckpt_state_dict

    mdir = out / name
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "model_config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    # build and randomise in fp32 (model_half would cast the VAE to fp16 at construction)
    cfg32 = copy.deepcopy(cfg)
    cfg32["model"]["pretransform"].pop("model_half", None)
    torch.manual_seed(MODEL_SEEDS[name])
    m32 = create_model_from_config(cfg32)
    randomize_parameters(m32, MODEL_SEEDS[name])
    sd = {k: v.detach().clone().contiguous() for k, v in m32.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in sd.values())
    save_file(sd, str(mdir / "model.safetensors"), metadata={"format": "pt"})
    del m32

    # exactly what get_pretrained_model does after downloading the files
    torch.manual_seed(MODEL_SEEDS[name] + 1)
    model = create_model_from_config(cfg)
    model.load_state_dict(load_ckpt_state_dict(str(mdir / "model.safetensors")))
    loaded = model.state_dict()
    assert list(loaded) == list(sd), "key order differs"
    for k, v in loaded.items():
        assert torch.equal(v, sd[k].to(v.dtype)), k
    return model, len(loaded)


def run_model(name: str, cfg: dict[str, Any], out: Path, threads: int) -> None:
    import torch
    from safetensors.torch import save_file

    print(f"== {name}")
    model, n_keys = build_model(name, cfg, out)
    dit_tf = model.model.model.transformer
    blk = dit_tf.layers[0]
    rot_dim = dit_tf.rotary_pos_emb.inv_freq.numel() * 2
    print(
        f"  {n_keys} state_dict keys; heads {blk.self_attn.num_heads} x {blk.self_attn.dim_heads}"
        f"; rotary {rot_dim}; cross-attn kv heads {blk.cross_attn.kv_heads}"
    )
    assert rot_dim < blk.self_attn.dim_heads, "rotary must cover only part of each head"
    assert blk.cross_attn.kv_heads == (1 if name == "sao10-tiny" else 2)
    rec = Recorder()
    gen = torch.Generator().manual_seed(INPUT_SEEDS[name])

    record_number_cases(model, rec)
    record_t5_case(model, rec)
    is_v = model.diffusion_objective == "v"
    # seconds_total within the 0.37 s window, so SatEngine.render accepts the same request
    cond: dict[str, Any] = (
        {"prompt": PROMPT, "seconds_start": 0, "seconds_total": 0.25}
        if is_v
        else {"prompt": PROMPT, "seconds_total": 0.25}
    )
    neg = dict(cond, prompt=NEG_PROMPT)
    cond2 = dict(cond, prompt=PROMPTS[2], seconds_total=7.5)
    record_conditioning_case(model, rec, [cond, cond2])
    record_dit_cases(model, rec, gen)
    record_vae_cases(model, rec, gen, enc_seed=4321)

    runs: list[dict[str, Any]]
    common: dict[str, Any] = {
        "batch_size": 2,
        "sample_size": SAMPLE_SIZE,
        "seed": 1234,
        "conditioning": cond,
    }
    if is_v:
        k: dict[str, Any] = {"sigma_min": 0.3, "sigma_max": 500.0, "rho": 1.0}
        runs = [
            dict(
                name="gen_3msde_cfg7",
                steps=4,
                cfg_scale=7.0,
                sampler_type="dpmpp-3m-sde",
                **k,
                **common,
            ),
            dict(
                name="gen_3msde_cfg7_neg",
                steps=4,
                cfg_scale=7.0,
                sampler_type="dpmpp-3m-sde",
                negative_conditioning=neg,
                **k,
                **common,
            ),
            dict(
                name="gen_2msde_cfg7",
                steps=4,
                cfg_scale=7.0,
                sampler_type="dpmpp-2m-sde",
                **k,
                **common,
            ),
            dict(
                name="gen_3msde_cfg1",
                steps=4,
                cfg_scale=1.0,
                sampler_type="dpmpp-3m-sde",
                **k,
                **common,
            ),
            dict(
                name="gen_a2a_3msde_cfg7",
                steps=4,
                cfg_scale=7.0,
                sampler_type="dpmpp-3m-sde",
                init_audio=True,
                init_noise_level=3.0,
                **k,
                **common,
            ),
        ]
    else:
        runs = [
            dict(
                name="gen_pingpong_cfg1", steps=4, cfg_scale=1.0, sampler_type="pingpong", **common
            ),
            dict(
                name="gen_pingpong_cfg4_neg",
                steps=4,
                cfg_scale=4.0,
                sampler_type="pingpong",
                negative_conditioning=neg,
                **common,
            ),
            dict(name="gen_euler_cfg1", steps=4, cfg_scale=1.0, sampler_type="euler", **common),
            dict(
                name="gen_a2a_pingpong_cfg1",
                steps=4,
                cfg_scale=1.0,
                sampler_type="pingpong",
                init_audio=True,
                init_noise_level=0.5,
                **common,
            ),
        ]
    init_audio = fixed_audio(gen, 1)[0]
    record_generate_cases(model, rec, runs, init_audio, AUDIO_STORED[name])

    mdir = out / name
    save_file(rec.tensors, str(mdir / "goldens.safetensors"), metadata={"format": "pt"})
    index = {
        n: {
            "dtype": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            **({"note": rec.notes[n]} if n in rec.notes else {}),
        }
        for n, t in rec.tensors.items()
    }
    doc = {
        "model": name,
        "threads": threads,
        "torch": torch.__version__,
        "stable_audio_tools": "0.0.19",
        "device": "cpu",
        "state_dict_keys": n_keys,
        "diffusion_objective": model.diffusion_objective,
        "dit_dtype": str(next(model.model.parameters()).dtype).replace("torch.", ""),
        "pretransform_dtype": str(next(model.pretransform.parameters()).dtype).replace(
            "torch.", ""
        ),
        "t5": "../t5-tiny (text_encoder/ + tokenizer/), the tiny random t5-base of "
        "shared/tools/make-t5-cache.py; the library runs it in float16",
        "tensor_naming": "<case>/<role>; shared inputs live under dit/..., generate/..., and "
        "each case lists the tensor names it uses in inputs/outputs",
        "generate_audio_stored": list(AUDIO_STORED[name]),
        "cases": rec.cases,
        "tensors": index,
    }
    (mdir / "goldens.json").write_text(json.dumps(doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    t0 = time.time()
    snap = find_t5_snapshot()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")

    import torch

    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    ver = version("stable-audio-tools")
    if ver != "0.0.19":
        sys.exit(f"needs stable-audio-tools 0.0.19, found {ver}")

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    copy_t5(snap, out)
    run_model("sao10-tiny", sao10_tiny_config(), out, args.threads)
    run_model("small-tiny", small_tiny_config(), out, args.threads)

    total = 0
    print("== files")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(out)!s:45s} {p.stat().st_size:10d}")
    print(f"  total {total} bytes ({total / 2**20:.2f} MiB); {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
