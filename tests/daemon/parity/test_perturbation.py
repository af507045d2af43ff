"""Tier 1 still catches real mistakes: one weight tensor scaled by (1 + 1e-3) must fail.

Why 1e-3: it is one float16 ulp (2^-10 ~ 9.8e-4), the size of the rounding differences the
fp16 stages (T5, the fp16 VAE) show between CPUs, and so the smallest error an end-to-end
comparison through fp16 stages could not tell from rounding. A real mistake is rarely smaller
(a wrong constant or epsilon in one layer, a weight loaded through a lossy cast, a missing
scale): if the comparator rejects a 1e-3 change of one tensor in the middle of each network,
it rejects those. Each stage runs alone on recorded inputs, as in tier 1; the unperturbed run
must pass, the perturbed one must fail.
"""

import pytest
import torch

SCALE = 1 + 1e-3
PERTURBATIONS = [
    # (model, weight in checkpoint layout, golden case, role)
    ("sao10-tiny", "model.model.transformer.layers.1.self_attn.to_qkv.weight", "dit_cfg7", "out"),
    ("small-tiny", "model.model.transformer.layers.1.self_attn.to_qkv.weight", "dit_cfg7", "out"),
    ("sao10-tiny", "pretransform.model.decoder.layers.2.layers.1.weight_g", "vae_decode", "audio"),
    ("small-tiny", "pretransform.model.decoder.layers.2.layers.1.weight_g", "vae_decode", "audio"),
    ("sao10-tiny", "conditioner.conditioners.prompt.proj_out.weight", "t5", "embedding"),
    ("small-tiny", "conditioner.conditioners.prompt.proj_out.weight", "t5", "embedding"),
]


def _verdict(parity, g, case, role):
    produced = parity.RUNNERS[case["kind"]](g, case, True)
    stage = parity.stage_of(case["kind"], role, g.meta)
    v = parity.judge(f"{case['name']}/{role}", produced[role], g[case["outputs"][role]], stage)
    parity.report("perturbation", v)
    return v


@pytest.mark.parametrize(("model", "weight", "case_name", "role"), PERTURBATIONS,
                         ids=[f"{m}-{c}" for m, _, c, _ in PERTURBATIONS])  # fmt: skip
def test_comparator_rejects_one_scaled_weight(parity, model, weight, case_name, role):
    g = parity.load_goldens("committed", parity.COMMITTED, model)
    parity.set_threads(g.meta)
    case = g.case(case_name)
    assert _verdict(parity, g, case, role).ok
    tensor = g.engine.model.state_dict()[weight]  # shares storage with the parameter
    saved = tensor.clone()
    try:
        with torch.no_grad():
            tensor.copy_((saved.double() * SCALE).to(saved.dtype))
        assert not torch.equal(tensor, saved)
        v = _verdict(parity, g, case, role)
    finally:
        with torch.no_grad():
            tensor.copy_(saved)
    assert not v.ok, f"{weight} x {SCALE} went unnoticed: diff {v.diff:.3g} <= {v.limit:.3g}"
