#!/usr/bin/env python3
"""Dump the state-dict key layout of the full-size SAO-1.0 and SAO-small models.

Runs ONLY in the reference virtualenv (stable-audio-tools 0.0.19), with the offline tiny
"t5-base" cache of shared/tools/make-t5-cache.py (T5 is not part of the state dict, so the tiny
one gives the same key set):

    HF_HOME=/tmp/hf_home HF_HUB_OFFLINE=1 \
        REFVENV/bin/python tools/dump_reference_keys.py [REPO_ROOT]

Builds both configs (engine-spec §3.1 / §3.2, `training` dropped) with create_model_from_config
(random init, about 5 GB of RAM for SAO-1.0) and writes

    tests/data/keys/sao-1.0.json     {"config", "count", "numel", "note",
                                      "keys": [[name, shape, dtype], ...]}
    tests/data/keys/sao-small.json
    tests/data/configs/sao-1.0.model_config.json
    tests/data/configs/sao-small.model_config.json

with the keys in model.state_dict() order.  The dtype is the one the freshly built module holds:
with "model_half": true (SAO-small) the VAE is cast to float16 at construction, so its keys
read float16 here even though a checkpoint may store them as float32 (load_state_dict casts).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

VAE = {
    "encoder": {
        "type": "oobleck",
        "config": {
            "in_channels": 2,
            "channels": 128,
            "c_mults": [1, 2, 4, 8, 16],
            "strides": [2, 4, 4, 8, 8],
            "latent_dim": 128,
            "use_snake": True,
        },
    },
    "decoder": {
        "type": "oobleck",
        "config": {
            "out_channels": 2,
            "channels": 128,
            "c_mults": [1, 2, 4, 8, 16],
            "strides": [2, 4, 4, 8, 8],
            "latent_dim": 64,
            "use_snake": True,
            "final_tanh": False,
        },
    },
    "bottleneck": {"type": "vae"},
    "latent_dim": 64,
    "downsampling_ratio": 2048,
    "io_channels": 2,
}

SAO_10: dict[str, Any] = {
    "model_type": "diffusion_cond",
    "sample_size": 2097152,
    "sample_rate": 44100,
    "audio_channels": 2,
    "model": {
        "pretransform": {
            "type": "autoencoder",
            "iterate_batch": True,
            "config": copy.deepcopy(VAE),
        },
        "conditioning": {
            "configs": [
                {
                    "id": "prompt",
                    "type": "t5",
                    "config": {"t5_model_name": "t5-base", "max_length": 128},
                },
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}},
            ],
            "cond_dim": 768,
        },
        "diffusion": {
            "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
            "global_cond_ids": ["seconds_start", "seconds_total"],
            "type": "dit",
            "config": {
                "io_channels": 64,
                "embed_dim": 1536,
                "depth": 24,
                "num_heads": 24,
                "cond_token_dim": 768,
                "global_cond_dim": 1536,
                "project_cond_tokens": False,
                "transformer_type": "continuous_transformer",
            },
        },
        "io_channels": 64,
    },
}

SAO_SMALL: dict[str, Any] = {
    "model_type": "diffusion_cond",
    "sample_size": 524288,
    "sample_rate": 44100,
    "audio_channels": 2,
    "model": {
        "pretransform": {
            "type": "autoencoder",
            "iterate_batch": False,
            "model_half": True,
            "config": copy.deepcopy(VAE),
        },
        "conditioning": {
            "configs": [
                {
                    "id": "prompt",
                    "type": "t5",
                    "config": {"t5_model_name": "t5-base", "max_length": 64},
                },
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}},
            ],
            "cond_dim": 768,
        },
        "diffusion": {
            "diffusion_objective": "rf_denoiser",
            "cross_attention_cond_ids": ["prompt", "seconds_total"],
            "global_cond_ids": ["seconds_total"],
            "type": "dit",
            "config": {
                "io_channels": 64,
                "embed_dim": 1024,
                "depth": 16,
                "num_heads": 8,
                "cond_token_dim": 768,
                "global_cond_dim": 768,
                "transformer_type": "continuous_transformer",
                "attn_kwargs": {"qk_norm": "ln"},
            },
        },
        "io_channels": 64,
    },
}

EXPECTED = {"sao-1.0": (745, 1_213_448_210), "sao-small": (750, 497_239_458)}


def dump(name: str, cfg: dict[str, Any], root: Path) -> None:
    import torch
    from stable_audio_tools.models.factory import create_model_from_config

    t0 = time.time()
    torch.manual_seed(0)
    model = create_model_from_config(copy.deepcopy(cfg))
    sd = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    numel = sum(v.numel() for v in sd.values())
    doc = {
        "config": cfg,
        "count": len(keys),
        "numel": numel,
        "note": "model.state_dict() of create_model_from_config(config) with stable-audio-tools "
        "0.0.19 (torch " + torch.__version__ + "), in order; dtypes as held by the "
        "freshly built module (model_half casts the VAE to float16 at construction)",
        "keys": keys,
    }
    (root / "tests/data/keys").mkdir(parents=True, exist_ok=True)
    (root / "tests/data/configs").mkdir(parents=True, exist_ok=True)
    # one key per line: {"config": ..., "count": ..., "numel": ..., "note": ..., "keys": [...]}
    head = json.dumps({k: v for k, v in doc.items() if k != "keys"}, indent=1)
    lines = ",\n".join("  " + json.dumps(k) for k in keys)
    text = head[:-2] + ',\n "keys": [\n' + lines + "\n ]\n}\n"
    assert json.loads(text) == doc
    (root / f"tests/data/keys/{name}.json").write_text(text)
    (root / f"tests/data/configs/{name}.model_config.json").write_text(
        json.dumps(cfg, indent=2) + "\n"
    )
    exp_count, exp_numel = EXPECTED[name]
    status = "OK" if (len(keys), numel) == (exp_count, exp_numel) else "MISMATCH"
    print(
        f"{name}: {len(keys)} keys, {numel:,} elements (expected {exp_count}, "
        f"{exp_numel:,}) {status}; {time.time() - t0:.1f} s"
    )
    del model, sd
    gc.collect()
    if status != "OK":
        raise SystemExit(1)


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    if not os.environ.get("HF_HOME") or os.environ.get("HF_HUB_OFFLINE") != "1":
        sys.exit("set HF_HOME (made by shared/tools/make-t5-cache.py) and HF_HUB_OFFLINE=1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    dump("sao-1.0", SAO_10, root)
    dump("sao-small", SAO_SMALL, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
