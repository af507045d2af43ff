"""Run stable-audio-tools' ``generate_diffusion_cond`` for ``latentloop bench --compare-reference``.

Not imported by latentloop: executed by path with the *reference* virtualenv's Python
(stable-audio-tools 0.0.19, ``../shared/tools/make-ref-venv.sh``), so it imports only the
standard library, torch, safetensors and stable-audio-tools. ``MODEL_DIR`` holds
``model_config.json`` + ``model.safetensors``; T5 comes from ``HF_HOME`` (offline).

    python reference_worker.py MODEL_DIR [--threads N] --once '{"prompt": ..., "seed": 1, ...}'
    python reference_worker.py MODEL_DIR [--threads N] --serve   # one JSON request per line

Each render prints one JSON line: ``total_s``, ``conditioning_s``, ``sampling_s``,
``decoding_s`` (and ``load_s`` once, after loading). The VAE runs in fp32 (its stock fp16 VAE
is 30-100x slower on a CPU); the output is cut to ``keep`` samples, as a caller would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def load(model_dir: Path) -> Any:
    """Build the model from its config and load the weights strictly, VAE in fp32."""
    from safetensors.torch import load_file
    from stable_audio_tools.models.factory import create_model_from_config

    config = json.loads((model_dir / "model_config.json").read_text())
    model = create_model_from_config(config)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
    model = model.eval().requires_grad_(False)
    model.pretransform.model_half = False
    model.pretransform.float()
    return model


def render(model: Any, request: dict[str, Any]) -> dict[str, float]:
    """One ``generate_diffusion_cond`` call, timed per stage by wrapping the stages' modules."""
    import torch
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    times = {"conditioning_s": 0.0, "decoding_s": 0.0}

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key] += time.perf_counter() - t0

        return wrapper

    cond_item = {"prompt": request["prompt"], "seconds_start": 0.0}
    cond_item["seconds_total"] = request["seconds_total"]
    model.conditioner.forward = timed(model.conditioner.forward, "conditioning_s")
    model.pretransform.decode = timed(model.pretransform.decode, "decoding_s")
    sampler = {"v": "dpmpp-3m-sde"}.get(model.diffusion_objective, "pingpong")
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            audio = generate_diffusion_cond(
                model, steps=request["steps"], cfg_scale=request["cfg"],
                conditioning=[cond_item], sample_size=request["sample_size"], seed=request["seed"],
                device="cpu", sampler_type=request.get("sampler") or sampler,
            )  # fmt: skip
        audio = audio[..., : request["keep"]].float().numpy()
    finally:
        del model.conditioner.forward, model.pretransform.decode
    total = time.perf_counter() - t0
    sampling = total - times["conditioning_s"] - times["decoding_s"]
    return {"total_s": total, **times, "sampling_s": sampling, "samples": audio.shape[-1]}


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    import torch

    if len(argv) > 3 and argv[1] == "--threads":  # MODEL_DIR --threads N --once|--serve
        torch.set_num_threads(int(argv[2]))
        argv = [argv[0], *argv[3:]]
    model = load(Path(argv[0]))
    print(json.dumps({"load_s": time.perf_counter() - t0}), flush=True)
    if argv[1] == "--once":
        print(json.dumps(render(model, json.loads(argv[2]))), flush=True)
        return 0
    if argv[1] != "--serve":
        raise SystemExit(f"reference_worker: expected --once or --serve, got {argv[1]!r}")
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(render(model, json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
