"""CUDA checks (marker ``gpu``; skipped where torch sees no GPU). Run on a GPU machine with
``pytest -m gpu``: every precision renders finite audio, renders are deterministic on the same
device, torch's global flags are restored, and the model stays on the GPU."""

import numpy as np
import pytest
import torch

from latentloop_daemon.engine import RenderRequest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("model", ["tiny", "tiny-rf"])
@pytest.mark.parametrize("precision", ["reference", "fp32", "fp16", "bf16"])
def test_cuda_render_is_finite_and_deterministic(model, precision):
    from latentloop_daemon.backends.sat.backend import SatEngine

    engine = SatEngine.load(model, device="cuda", precision=precision)
    assert engine.capabilities.device.startswith("cuda")
    request = RenderRequest(prompt="128 BPM tech house", seconds_total=4, seed=3, steps=4)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a = engine.render(request)
        assert torch.backends.cuda.matmul.allow_tf32 is True  # restored after the render
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    b = engine.render(request)
    assert np.isfinite(a.audio).all() and a.audio.std() > 1e-4
    np.testing.assert_array_equal(a.audio, b.audio)
    assert next(engine.model.parameters()).is_cuda
    engine.close()
