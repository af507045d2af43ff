"""Edges of a job's life that a real process cannot time: the in-process Service around a fake
engine that stops where the test needs it, spoken to over real UDP.

Imports only names that stay where they are when the daemon's modules move:
``config.load_config``, ``engine``, ``errors`` and ``service.Service``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fake_engines import capabilities

from latentloop_bridge.client import Client, RenderFailed
from latentloop_daemon.config import load_config
from latentloop_daemon.engine import RenderResult
from latentloop_daemon.errors import RenderCancelled
from latentloop_daemon.service import Service

RATE = 44100
WINDOW = RATE * 10
WAIT_S = 30.0  # for events that come in milliseconds: room for a loaded 2-core machine


class HoldAfterLastStep:
    """An engine that runs every sampler step, then holds (the sampler has finished) until
    the job's cancel flag is set, and returns its audio as if nothing had happened."""

    def __init__(self) -> None:
        self.after_last_step = threading.Event()
        self.cancel_seen = threading.Event()
        self.capabilities = capabilities("hold", WINDOW, default_steps=3)

    def render(self, request, on_step=None, should_cancel=None):
        steps = request.steps or 3
        for i in range(1, steps + 1):
            if on_step:
                on_step(i, steps, 1.0 / i)
            if should_cancel and should_cancel():
                raise RenderCancelled(f"cancelled at step {i}/{steps}")
        self.after_last_step.set()  # no step is left to notice a cancel
        deadline = time.monotonic() + WAIT_S
        while should_cancel is not None and not should_cancel():
            assert time.monotonic() < deadline, "the cancel never reached the job"
            time.sleep(0.005)
        self.cancel_seen.set()
        rng = np.random.default_rng(request.seed or 0)
        audio = 0.1 * rng.standard_normal((request.batch_size, 2, WINDOW))
        return RenderResult(audio.astype(np.float32), RATE, request.seed or 5, {"steps": steps})

    def close(self) -> None:
        pass


@pytest.fixture
def held(tmp_path):
    """A running Service on 127.0.0.1:0 whose engine holds after the last step."""
    overrides = {"osc.port": 0, "render.out_dir": str(tmp_path / "out"), "engine.warmup": False}
    engine = HoldAfterLastStep()
    svc = Service(load_config(overrides=overrides, environ={}), loader=lambda: engine)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while svc.state != "ready":
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.01)
    yield svc, engine, tmp_path / "out"
    svc.should_exit.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_cancel_after_the_last_step_stops_the_job_before_files_are_written(held):
    """Broken on purpose (the worker's `if job.cancel_event.is_set()` check before
    `write_loops` removed), this test fails: the job writes its file and answers /done."""
    svc, engine, out_dir = held
    with Client("127.0.0.1", svc.server.bound_address[1], timeout=WAIT_S) as client:
        rid = client.render("held after the last step", bpm=120, bars=1, steps=3, seed=7)
        assert engine.after_last_step.wait(WAIT_S)
        client.cancel(rid)
        with pytest.raises(RenderFailed) as failed:
            client.wait_for(rid, ["/latentloop/done"], timeout=WAIT_S)

    assert engine.cancel_seen.is_set()  # the engine returned its audio: the worker had it
    assert (failed.value.code, failed.value.message) == (
        "cancelled",
        "cancelled before the files were written",
    )
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == []
    (job,) = svc.queue.snapshot()["history"]
    assert (job["id"], job["state"], job["paths"]) == (rid, "cancelled", [])
