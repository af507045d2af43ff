"""`latentloop serve` around a stand-in engine: the real daemon (CLI, config, OSC server, journal,
recovery, worker, loop pipeline, file writer, signals) in a real process, without torch.

Run as ``python tests/standin_daemon.py serve --port 0 --out DIR ...`` (what ``DaemonProcess``
does with ``standin=True``). The engine renders seeded noise, ``LATENTLOOP_TEST_STEP_S`` seconds
per step (default 0.05), after a model "load" of ``LATENTLOOP_TEST_LOAD_S`` seconds (default
0.3); with ``LATENTLOOP_TEST_CLICK_BPM=<bpm>`` it renders a click track at that tempo instead
(``fake_engines.click_window``), so a test can measure the tempo of the written file itself.
A process starts in about a second instead of the 7-16 s that importing torch and transformers
takes on a loaded 2-core machine, so crash, fuzz and load tests can restart it often; the
end-to-end tests run the real ``tiny`` model.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from fake_engines import RATE, capabilities, click_window

from latentloop_daemon.engine import RenderResult
from latentloop_daemon.errors import RenderCancelled


class NoiseEngine:
    """Seeded noise through the real ``Engine`` interface; ``step_s`` seconds per step."""

    def __init__(self, step_s: float, click_bpm: float | None = None) -> None:
        self.step_s = step_s
        self.click_bpm = click_bpm
        self.capabilities = capabilities(model_id="standin", default_steps=2)

    def render(self, request, on_step=None, should_cancel=None):
        steps = request.steps or self.capabilities.default_steps
        for step in range(1, steps + 1):
            time.sleep(self.step_s)
            if on_step:
                on_step(step, steps, 1.0 / step)
            if should_cancel and should_cancel():
                raise RenderCancelled(f"cancelled at step {step}/{steps}")
        seed = request.seed if request.seed is not None else 7
        rng = np.random.default_rng(seed)
        n = self.capabilities.window_samples
        audio = 0.1 * rng.standard_normal((request.batch_size, 2, n), dtype=np.float32)
        if self.click_bpm is not None:
            audio = np.stack([click_window(self.click_bpm, n)] * request.batch_size)
        return RenderResult(audio, RATE, seed, {"steps": steps})

    def close(self) -> None:
        pass


def load_standin() -> NoiseEngine:
    time.sleep(float(os.environ.get("LATENTLOOP_TEST_LOAD_S", "0.3")))
    click = os.environ.get("LATENTLOOP_TEST_CLICK_BPM")
    return NoiseEngine(
        float(os.environ.get("LATENTLOOP_TEST_STEP_S", "0.05")), float(click) if click else None
    )


def main() -> int:
    from latentloop_daemon.cli import main as cli_main
    from latentloop_daemon.service.lifecycle import Service

    Service._load_engine = lambda self: load_standin()  # type: ignore[method-assign]
    return int(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
