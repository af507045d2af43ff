"""Stand-in engines for testing the logic around the model: they return known synthetic audio
through the real ``Engine`` interface (the real tiny model runs in the end-to-end tests)."""

import numpy as np

from latentloop_daemon.engine import Capabilities, RenderResult
from latentloop_daemon.errors import RenderCancelled

RATE = 44100
WINDOW = RATE * 12


def capabilities(model_id="click", window=WINDOW, default_steps=2):
    """A fixed-window, v-objective stereo model at 44.1 kHz (what the loop pipeline reads)."""
    return Capabilities(
        model_id=model_id, revision=None, objective="v", sample_rate=RATE, channels=2,
        window_samples=window, max_seconds_total=window / RATE, fixed_window=True,
        default_steps=default_steps, default_cfg_scale=1.0, default_sampler="euler",
        samplers=("euler",),
        conditioning=("prompt", "seconds_total"), supports_negative_prompt=True,
        supports_init_audio=False, max_batch_size=4, device="cpu", precision="fp32",
    )  # fmt: skip


def click_window(bpm, n=WINDOW):
    """[2, n]: a decaying 1.5 kHz click on every beat at ``bpm``, accented downbeats."""
    t = np.arange(round(0.03 * RATE)) / RATE
    burst = np.sin(2 * np.pi * 1500 * t) * np.exp(-t / 0.006)
    x = np.zeros(n)
    period = 60 * RATE / bpm
    for k in range(int(n / period) + 1):
        start = round(k * period)
        stop = min(n, start + burst.size)
        x[start:stop] += (1.0 if k % 4 == 0 else 0.6) * burst[: stop - start]
    return np.stack([0.5 * x, 0.5 * x]).astype(np.float32)


class ClickEngine:
    """Renders click tracks: attempt k (k-th call) clicks at ``tempos[k]`` in every variation."""

    def __init__(self, tempos):
        self.tempos = list(tempos)
        self.requests = []
        self.capabilities = capabilities()

    def render(self, request, on_step=None, should_cancel=None):
        bpm = self.tempos[len(self.requests)]
        self.requests.append(request)
        for step in (1, 2):
            if on_step:
                on_step(step, 2, 1.0 / step)
            if should_cancel and should_cancel():
                raise RenderCancelled(f"cancelled at step {step}/2")
        audio = np.stack([click_window(bpm)] * request.batch_size)
        return RenderResult(audio, RATE, request.seed if request.seed is not None else 7, {})

    def close(self):
        pass
