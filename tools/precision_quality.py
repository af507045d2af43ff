"""What each precision does to the audio, per stage, against fp32 (docs/perf.md).

Full-size random model (``random:sao-small`` by default), one prompt and seed, on this machine:

- DiT stage: sampling with the DiT in fp32, bf16 and fp16 (the sampler state stays fp32, as
  ``SatEngine`` does), every result decoded by the same fp32 VAE;
- VAE stage: the fp32 latents decoded by the VAE in bf16 and fp16 (a short span: fp16
  convolutions are 30-100x slower than fp32 on a CPU).

Per row: SNR of the waveform vs fp32 (dB), log-spectral distance (dB, 2048-point STFT) and the
loudness difference (LUFS, BS.1770 as ``loops.loudness``). Random weights cannot tell how the
real model sounds; these numbers bound the arithmetic, not the perceived quality.

    .venv/bin/python tools/precision_quality.py [--model sao-small] [--vae-seconds 1.0]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from latentloop_daemon.backends.sat.backend import _build_random, apply_precision
from latentloop_daemon.backends.sat.model import SamplerSettings, generate
from latentloop_daemon.loops.loudness import loop_loudness_lufs

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def metrics(ref: np.ndarray, test: np.ndarray, rate: int) -> dict[str, float | None]:
    """SNR (dB), log-spectral distance (dB) and loudness difference (LU) of [C, N] vs ref."""
    noise = float(np.sum((test - ref) ** 2))
    snr = 10 * np.log10(float(np.sum(ref**2)) / noise) if noise > 0 else float("inf")
    spec = [np.abs(np.fft.rfft(_frames(x), axis=-1)) + 1e-8 for x in (ref, test)]
    lsd = float(np.mean(np.sqrt(np.mean((20 * np.log10(spec[0] / spec[1])) ** 2, axis=-1))))
    lufs = [loop_loudness_lufs(x.T.astype(np.float64), rate) for x in (ref, test)]
    dl = None if None in lufs else float(lufs[1] - lufs[0])  # type: ignore[operator]
    return {"snr_db": round(snr, 1), "lsd_db": round(lsd, 3), "loudness_diff_lu": dl}


def _frames(x: np.ndarray, n: int = 2048) -> np.ndarray:
    hop = n // 2
    count = max(1, (x.shape[-1] - n) // hop + 1)
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    return x[:, idx] * np.hanning(n)  # [C, frames, n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="sao-small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0, help="DiT rows: seconds decoded")
    ap.add_argument("--vae-seconds", type=float, default=1.0, help="VAE rows: seconds decoded")
    args = ap.parse_args()
    model, t5, tokenizer = _build_random(args.model)
    model.eval().requires_grad_(False)
    apply_precision(model, "fp32")
    for cond in model.conditioner.t5_conditioners():
        cond.attach_t5(t5, tokenizer)
    rate = model.config.sample_rate
    settings = SamplerSettings(steps=args.steps, cfg_scale=1.0, sampler="pingpong")
    item = {"prompt": "120 BPM tech house drum loop", "seconds_start": 0.0, "seconds_total": 10.0}
    cpu = torch.device("cpu")

    def latents(m: object, cast: bool) -> torch.Tensor:
        return generate(m, settings, [item], None, 1, cpu, return_latents=True, cast_noise=cast)  # type: ignore[arg-type]

    rows = []
    keep = int(args.seconds * rate)
    ref_lat = latents(model, True).float()
    ref_audio = model.pretransform.decode(ref_lat, keep)[0].numpy()
    for name, dtype in DTYPES.items():
        m = copy.deepcopy(model)
        m.model.to(dtype)
        t0 = time.perf_counter()
        lat = latents(m, False).float()
        dt = time.perf_counter() - t0
        audio = model.pretransform.decode(lat, keep)[0].numpy()
        rows.append({"stage": "DiT", "precision": name, "sampling_s": round(dt, 1),
                     **metrics(ref_audio, audio, rate)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    vkeep = int(args.vae_seconds * rate)
    vref = model.pretransform.decode(ref_lat, vkeep)[0].numpy()
    for name, dtype in DTYPES.items():
        pt = copy.deepcopy(model.pretransform).to(dtype)
        t0 = time.perf_counter()
        audio = pt.decode(ref_lat.to(dtype), vkeep)[0].float().numpy()
        dt = time.perf_counter() - t0
        rows.append({"stage": "VAE", "precision": name, "decode_s": round(dt, 1),
                     **metrics(vref, audio, rate)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
