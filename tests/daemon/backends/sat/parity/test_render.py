"""Parity through the public path: ``SatEngine.render`` (what the daemon and ``latentloop
render`` call) against the reference's ``generate_diffusion_cond`` audio.

Tier 2 (regenerated goldens): the whole render, end to end, bit for bit. Tier 1 (committed):
render with the T5 encoder, the VAE encoder and the DiT replaced by what the reference
recorded, so what runs live is ours alone (request -> settings -> conditioning -> noise ->
sampler -> decoder); the audio is held to the VAE stage's tolerance, the last stage.
"""

from contextlib import ExitStack

import numpy as np
import torch

from latentloop_daemon.engine import InitAudio, RenderRequest


def _request(case) -> RenderRequest:
    p = case["params"]
    cond = p["conditioning"][0]
    neg = p.get("negative_conditioning")
    return RenderRequest(
        prompt=cond["prompt"], seconds_total=float(cond["seconds_total"]),
        seconds_start=float(cond.get("seconds_start", 0.0)),
        negative_prompt=neg[0]["prompt"] if neg else None, seed=p["seed"], steps=p["steps"],
        cfg_scale=p["cfg_scale"], sampler=p["sampler_type"], batch_size=p["batch_size"],
        init_noise_level=p.get("init_noise_level"),
    )  # fmt: skip


def test_render_matches_reference(parity, render_case):
    tier, root, model, case_name = render_case
    g = parity.load_goldens(tier, root, model)
    parity.set_threads(g.meta)
    case = g.case(case_name)
    p, ins = case["params"], case["inputs"]
    for k in ("sigma_min", "sigma_max", "rho"):  # the render path uses the model's defaults
        assert p.get(k, getattr(g.engine.defaults, k, 1.0)) == getattr(g.engine.defaults, k, 1.0)
    request = _request(case)
    if "init_audio" in ins:
        frames = g[ins["init_audio"]].T.contiguous().numpy().astype(np.float32)
        request = RenderRequest(**{
            **{f: getattr(request, f) for f in request.__slots__},
            "init_audio": InitAudio(frames, g.engine.capabilities.sample_rate),
        })  # fmt: skip
    with ExitStack() as stack:
        if tier == "committed":
            tap = parity.DiTTap(g, case, replay=True)
            stack.enter_context(parity.t5_replayed(g, case))
            stack.enter_context(parity.forward_replaced(g.engine.model.model, tap))
            if "encoder_audio" in ins:
                rec = [g[n] for n in ins["encoder_audio"]], [g[n] for n in ins["encoder_out"]]
                enc = g.engine.model.pretransform.model.encoder
                stack.enter_context(parity.forward_replaced(enc, parity.replay_by_input(*rec)))
        result = g.engine.render(request)
    assert result.audio.dtype == np.float32 and result.seed == p["seed"]
    g.check({**case, "outputs": {"audio": case["outputs"]["audio"]}},
            {"audio": torch.from_numpy(result.audio)})  # fmt: skip
