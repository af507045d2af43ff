"""Conditioners: prompt text (T5) and numbers (seconds) -> token embeddings (engine-spec §5, §12).

The T5 encoder is not part of the checkpoint: it is attached after construction from a local
folder and kept outside the module tree (so it never appears in ``state_dict()``), cast to fp16
as a whole, and run without autocast. Results are fp32 tokens [B, L, D] and masks [B, L].
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange
from torch import nn

from ...errors import ModelLoadError
from .config import ModelConfig, NumberCondConfig, T5CondConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CondTensors = dict[str, tuple[torch.Tensor, torch.Tensor]]


class LearnedPositionalEmbedding(nn.Module):
    """x [B] -> [B, 1 + dim] as (x, sin(2 pi x w), cos(2 pi x w))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b -> b 1")
        freqs = x * rearrange(self.weights, "d -> 1 d") * 2 * math.pi
        fouriered = torch.cat((freqs.sin(), freqs.cos()), dim=-1)
        return torch.cat((x, fouriered), dim=-1)


class NumberEmbedder(nn.Module):
    """Fourier features of a normalised number, then a linear layer: [B] -> [B, features]."""

    def __init__(self, features: int, dim: int = 256) -> None:
        super().__init__()
        self.features = features
        self.embedding = nn.Sequential(
            LearnedPositionalEmbedding(dim), nn.Linear(dim + 1, features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = rearrange(x, "... -> (...)")
        return self.embedding(x).view(*shape, self.features)


class NumberConditioner(nn.Module):
    """Seconds (floats) -> clamped, normalised, embedded tokens [B, 1, D] and ones masks [B, 1]."""

    def __init__(self, config: NumberCondConfig) -> None:
        super().__init__()
        self.min_val, self.max_val = config.min_val, config.max_val
        self.embedder = NumberEmbedder(features=config.output_dim)

    def forward(
        self, values: Sequence[float], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        floats = torch.tensor([float(v) for v in values]).to(device)
        floats = floats.clamp(self.min_val, self.max_val)
        normalized = (floats - self.min_val) / (self.max_val - self.min_val)
        normalized = normalized.to(next(self.embedder.parameters()).dtype)
        embeds = self.embedder(normalized).unsqueeze(1)
        return embeds, torch.ones(embeds.shape[0], 1).to(device)


class T5Conditioner(nn.Module):
    """Prompts -> T5 (fp16) last hidden states, optionally projected, zeroed at padding.

    ``attach_t5`` must be called before use. A small LRU cache keyed on the exact tuple of
    prompts (and device) skips re-encoding repeated prompts; results are identical either way.
    """

    def __init__(self, config: T5CondConfig, cache_size: int = 16) -> None:
        super().__init__()
        self.config = config
        self.max_length = config.max_length
        self.proj_out: nn.Module = (
            nn.Linear(config.t5_dim, config.output_dim) if config.has_proj_out else nn.Identity()
        )
        self.__dict__["t5"] = None  # outside the module tree: never in state_dict()
        self.__dict__["tokenizer"] = None
        self._cache: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.cache_size = cache_size

    def attach_t5(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Use this T5 encoder (cast to fp16 as a whole, eval mode) and tokenizer."""
        d_model = int(model.config.d_model)
        if d_model != self.config.t5_dim:
            raise ModelLoadError(
                f"T5 encoder has d_model {d_model}, but the model config's "
                f"{self.config.t5_model_name!r} conditioner needs {self.config.t5_dim}"
            )
        model = model.eval().requires_grad_(False).to(torch.float16)
        self.__dict__["t5"] = model
        self.__dict__["tokenizer"] = tokenizer
        self._cache.clear()

    def forward(
        self, texts: Sequence[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(texts), str(device), self._proj_dtype())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0].clone(), hit[1].clone()
        out = self._encode(list(texts), device)
        if self.cache_size > 0:
            self._cache[key] = (out[0].clone(), out[1].clone())
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _proj_dtype(self) -> torch.dtype | None:
        return self.proj_out.weight.dtype if isinstance(self.proj_out, nn.Linear) else None

    def _encode(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        t5, tokenizer = self.__dict__["t5"], self.__dict__["tokenizer"]
        if t5 is None or tokenizer is None:
            raise ModelLoadError("the T5 text encoder was not loaded")
        t5.to(device)
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device).to(torch.bool)
        with torch.no_grad():
            embeddings = t5(input_ids=input_ids, attention_mask=attention_mask)["last_hidden_state"]
        dtype = self._proj_dtype()
        if dtype is not None:
            embeddings = embeddings.to(dtype)
        embeddings = self.proj_out(embeddings)
        embeddings = embeddings * attention_mask.unsqueeze(-1).float()
        return embeddings, attention_mask


class MultiConditioner(nn.Module):
    """Holds the conditioners as ``.conditioners[id]`` (checkpoint keys) in config order."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        modules: dict[str, nn.Module] = {}
        for c in config.conditioners:
            if isinstance(c, T5CondConfig):
                modules[c.id] = T5Conditioner(c)
            else:
                modules[c.id] = NumberConditioner(c)
        self.conditioners = nn.ModuleDict(modules)

    def t5_conditioners(self) -> list[T5Conditioner]:
        return [m for m in self.conditioners.values() if isinstance(m, T5Conditioner)]

    def forward(self, batch: Sequence[dict[str, Any]], device: torch.device) -> CondTensors:
        """One dict per batch item ({"prompt": str, "seconds_total": float, ...}) -> tensors."""
        out: CondTensors = {}
        for key, conditioner in self.conditioners.items():
            inputs = []
            for item in batch:
                if key not in item:
                    raise ValueError(f"conditioning input {key!r} missing")
                inputs.append(item[key])
            out[key] = conditioner(inputs, device)
        return out


def load_t5(t5_dir: Path, tokenizer_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a T5 encoder and its tokenizer from local folders (no network)."""
    from transformers import AutoTokenizer, T5EncoderModel
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights of the decoder were not used" is expected
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        model = T5EncoderModel.from_pretrained(str(t5_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot load the T5 text encoder from {t5_dir} / {tokenizer_dir}: {e}"
        ) from e
    finally:
        hf_logging.set_verbosity(previous)
    return model, tokenizer
