"""Read checkpoint files and load them strictly into a model built on the meta device.

``.safetensors`` files are memory-mapped and their tensors become the model's parameters
(``assign=True``), so no second full copy of the weights is made. ``.ckpt`` files are read with
``weights_only=True``; one that needs arbitrary unpickling is refused unless the caller trusts it.
Lightning training checkpoints (``diffusion.`` / ``diffusion_ema.ema_model.`` prefixes) are
unwrapped the way stable-audio-tools' ``unwrap_model`` does, preferring the EMA weights.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...errors import ModelLoadError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_EMA = "diffusion_ema.ema_model."
_WRAPPED = "diffusion."


def read_state_dict(path: Path, *, trust_pickle: bool = False) -> StateDict:
    """Read a ``.safetensors`` or ``.ckpt`` file into a flat name -> tensor dict (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        return _read_pickle(path, trust_pickle)
    raise ModelLoadError(f"unknown checkpoint format {path.suffix!r}: use .safetensors or .ckpt")


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {e}"
        ) from e


def _read_pickle(path: Path, trust_pickle: bool) -> StateDict:
    try:
        obj = _torch_load(path, weights_only=True)
    except (pickle.UnpicklingError, AttributeError, TypeError) as e:
        if "global" not in str(e).lower():  # not a refusal: the pickle itself is broken
            raise ModelLoadError(f"{path} is not a readable checkpoint (truncated?): {e}") from e
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{path} holds Python objects that need arbitrary code to unpickle (it is not a "
                f"plain weights file): {_refusal_reason(e)}. Loading it could run code from "
                "the file. Prefer model.safetensors; if you trust where this file came from, "
                "pass --trust-checkpoint."
            ) from e
        logger.warning("loading %s with full unpickling (trusted by the user)", path)
        try:
            obj = _torch_load(path, weights_only=False)
        except Exception as e2:  # arbitrary unpickling can fail in arbitrary ways
            raise ModelLoadError(
                f"{path} could not be unpickled: {type(e2).__name__}: {e2}"
            ) from e2
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is not a readable checkpoint (truncated?): {e}") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def _torch_load(path: Path, weights_only: bool) -> object:
    """torch.load on the CPU, memory-mapped when the file's format allows it (torch >= 1.6 zip
    files); legacy-format files are read without mmap."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e) and "zipfile" not in str(e):
            raise
    return torch.load(str(path), map_location="cpu", weights_only=weights_only)


def _refusal_reason(e: Exception) -> str:
    """The useful line of torch's weights-only refusal ("Unsupported global: GLOBAL x.y ...")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch bolds part of its message
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    return text.splitlines()[0] if text.strip() else type(e).__name__


def unwrap_training_keys(sd: StateDict) -> StateDict:
    """Map Lightning training-wrapper keys to the released layout; keep released keys as they are.

    ``diffusion.X`` -> ``X``; ``diffusion_ema.ema_model.X`` -> ``model.X`` (EMA wins over the
    online weights); other ``diffusion_ema.*`` bookkeeping entries are dropped.
    """
    if not any(k.startswith(_WRAPPED) or k.startswith(_EMA) for k in sd):
        return sd
    out = {k[len(_WRAPPED) :]: v for k, v in sd.items() if k.startswith(_WRAPPED)}
    ema = {"model." + k[len(_EMA) :]: v for k, v in sd.items() if k.startswith(_EMA)}
    if ema:
        logger.info("training checkpoint: using the EMA weights (%d tensors)", len(ema))
        out.update(ema)
    return out


def check_keys(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Raise ModelLoadError naming missing, unexpected and mis-shaped keys (first few + count)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = "; ".join(items[:5]) + (
                f"; ... ({len(items) - 5} more)" if len(items) > 5 else ""
            )
            problems.append(f"{len(items)} {label} key(s): {shown}")
    if problems:
        raise ModelLoadError(
            "checkpoint does not match the model config "
            f"({len(sd)} tensors in the file, {len(expected)} expected): " + " | ".join(problems)
        )


def load_into(model: nn.Module, sd: StateDict, dtype: torch.dtype = torch.float32) -> None:
    """Strictly load sd into model (built on the meta device), assigning tensors in ``dtype``.

    Consumes ``sd`` (entries are popped as they are converted), so peak memory stays near one
    copy of the weights. Tensors whose memory is not 64-byte aligned (safetensors hands out
    views at arbitrary offsets) are copied into fresh allocations: CPU GEMM kernels take other
    code paths, with other rounding, on unaligned data, and the reference's parameters are
    freshly allocated.
    """
    check_keys(model, sd)
    expected = model.state_dict()
    converted = {}
    for k in list(sd):
        v = sd.pop(k)
        want = expected[k].dtype if expected[k].is_floating_point() is False else dtype
        if v.dtype != want:
            v = v.to(want)
        elif v.device.type == "cpu" and v.data_ptr() % _ALIGN:
            v = v.clone()
        converted[k] = v
    model.load_state_dict(converted, strict=True, assign=True)


_ALIGN = 64
