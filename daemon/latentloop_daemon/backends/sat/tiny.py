"""Built-in test models ``tiny`` and ``tiny-rf``: the real architecture at toy sizes, no download.

``tiny`` is shaped like Stable Audio Open 1.0 (v objective, DPM-Solver++ 3M SDE, CFG, GQA
cross-attention, seconds_start + seconds_total); ``tiny-rf`` like Stable Audio Open Small
(rectified flow, ping-pong, qk-LayerNorm, projected context, fp16 VAE flag). Weights are random
from a fixed seed, drawn from a private generator (the global RNG is untouched), and a small
T5 encoder and tokenizer are built in-process. They make noise, not music.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import ModelConfig, parse_model_config
from .known_configs import packaged_config

if TYPE_CHECKING:
    from .model import StableAudioModel

TINY_MODELS = ("tiny", "tiny-rf")
_SEED = 20261124


def tiny_config(name: str) -> dict[str, Any]:
    """The ``model_config.json`` dict of a built-in model (shipped as configs/<name>.json)."""
    if name not in TINY_MODELS:
        raise KeyError(name)
    return packaged_config(name)


def tiny_model_config(name: str) -> ModelConfig:
    return parse_model_config(tiny_config(name), source=f"built-in {name}")


def randomize_(module: nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded random values that keep every branch alive.

    Weight matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2), norm gains ~ 1 + N(0, 0.1^2),
    weight-norm gains ~ (|N| + 0.5) / 2, Snake alpha/beta ~ N(0, 0.3^2). Buffers are left as built.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight_g":
                value = (n.abs() + 0.5) * 0.5  # keeps the deep residual VAE near unit level
            elif leaf in ("alpha", "beta"):
                value = n * 0.3
            elif leaf == "gamma" or (p.ndim == 1 and "norm" in name and leaf == "weight"):
                value = 1 + n * 0.1
            elif p.ndim == 1:
                value = n * 0.02
            else:
                fan_in = math.prod(p.shape[1:])
                value = n / math.sqrt(fan_in)
            p.copy_(value.to(p.dtype))


_WORDS = (
    "bpm beat loop drum drums kick snare hat hats hihat clap bass synth pad piano guitar "
    "strings lead chord chords melody ambient house techno hip hop lofi trap dub jazz funk "
    "soul rock deep warm dark bright dusty boom bap groove percussion minor major key with and "
    "the a of in at on tech vinyl crackle reverb arpeggio organ brass vocal noise texture"
).split()


def build_tiny_tokenizer() -> Any:
    """A T5-style unigram tokenizer (ids: <pad> 0, </s> 1, <unk> 2), built without files."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -5.0) for w in _WORDS]
    chars = [chr(c) for c in range(33, 127)]
    vocab += [(c, -10.0) for c in chars] + [("▁" + c, -9.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_t5(vocab_size: int) -> Any:
    """A one-layer T5 encoder with d_model 768 (t5-base's width), random seeded weights."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=768, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="relu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
        pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        model = T5EncoderModel(config)
    randomize_(model, _SEED + 1)
    return model.eval()


def build_tiny_model(name: str) -> tuple[ModelConfig, StableAudioModel]:
    """Build a built-in model on the CPU in fp32 with its seeded random weights (no T5 yet)."""
    from .model import StableAudioModel

    config = tiny_model_config(name)
    with torch.random.fork_rng(devices=[]):
        model = StableAudioModel(config)
    randomize_(model, _SEED + (0 if name == "tiny" else 2))
    return config, model
