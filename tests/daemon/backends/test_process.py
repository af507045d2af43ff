"""The model in a child process (``backends/process.py``): the same audio as in-process, cancel,
a crash that fails one render and not the next, a load failure, and no child left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from latentloop_bridge.errors import FailCode
from latentloop_daemon.backends import load_engine
from latentloop_daemon.backends.process import EngineProcessDied, EngineSpec, ProcessEngine
from latentloop_daemon.backends.sat.options import SatOptions
from latentloop_daemon.engine import RenderRequest
from latentloop_daemon.errors import ModelLoadError, RenderCancelled
from latentloop_daemon.service.worker import fail_code

OPTIONS = SatOptions(threads=1)  # one thread on both sides: the same kernels, the same sums
SPEC = EngineSpec("tiny", "sat", "cpu", "fp32", True, OPTIONS)
REQUEST = RenderRequest(prompt="a loop", seconds_total=1.0, seed=5, steps=3)


@pytest.fixture(scope="module")
def engine():
    engine = ProcessEngine(SPEC).start()
    yield engine
    engine.close()


def test_the_child_renders_what_the_engine_renders_in_process(engine):
    steps = []
    result = engine.render(REQUEST, on_step=lambda *a: steps.append(a))
    here = load_engine("tiny", device="cpu", precision="fp32", offline=True, options=OPTIONS)
    try:
        expected = here.render(REQUEST)
    finally:
        here.close()
    assert [s[:2] for s in steps] == [(1, 3), (2, 3), (3, 3)]
    assert result.seed == expected.seed and result.sample_rate == expected.sample_rate
    np.testing.assert_array_equal(result.audio, expected.audio)  # bit for bit: same code, threads
    assert engine.capabilities.model_id == here.capabilities.model_id


def test_a_cancel_reaches_the_child_at_its_next_step(engine):
    steps = []
    with pytest.raises(RenderCancelled):
        engine.render(
            RenderRequest(prompt="long", seconds_total=1.0, seed=1, steps=1000),
            on_step=lambda *a: steps.append(a),
            should_cancel=lambda: bool(steps),
        )
    assert 1 <= len(steps) < 1000
    assert engine.render(REQUEST).audio.shape[0] == 1  # and the child serves the next one


def test_a_crash_of_the_child_fails_one_render_and_the_next_starts_a_new_child(engine):
    pid = engine._process.pid
    steps = []

    def kill_after_first_step(*args):
        steps.append(args)
        if len(steps) == 1:
            os.kill(pid, signal.SIGKILL)  # the model process dies mid-render (segfault, OOM kill)

    with pytest.raises(EngineProcessDied, match=f"model process {pid} ended \\(signal 9\\)") as e:
        engine.render(
            RenderRequest(prompt="long", seconds_total=1.0, seed=1, steps=1000),
            on_step=kill_after_first_step,
        )
    assert fail_code(e.value) is FailCode.ENGINE  # /fail <id> render engine ...
    result = engine.render(REQUEST)
    assert engine._process.pid != pid
    assert np.isfinite(result.audio).all()


def test_a_load_failure_is_a_model_load_error_with_the_backends_message(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        ProcessEngine(EngineSpec(str(missing), "sat", "cpu", "fp32", True, OPTIONS)).start()


def test_the_daemon_side_imports_no_torch_and_the_child_dies_with_it():
    """A render's result unpickles in the daemon without importing torch (its settings carry
    ``torch.__version__``); SIGKILL the daemon and its model process goes too."""
    script = textwrap.dedent("""
        import sys, time
        from latentloop_daemon.backends.process import EngineSpec, ProcessEngine
        from latentloop_daemon.backends.sat.options import SatOptions
        from latentloop_daemon.engine import RenderRequest
        spec = EngineSpec("tiny", "sat", "cpu", "fp32", True, SatOptions(threads=1))
        engine = ProcessEngine(spec).start()
        result = engine.render(RenderRequest(prompt="x", seconds_total=1.0, seed=1, steps=1))
        print(engine._process.pid, "torch" in sys.modules, result.settings["torch"], flush=True)
        time.sleep(120)
    """)
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, torch_here, version = daemon.stdout.readline().split()
        assert torch_here == "False" and version[0].isdigit()
        child = int(pid)
        daemon.kill()
        daemon.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), f"model process {child} outlived its daemon"
    finally:
        daemon.kill()
        daemon.wait()
        daemon.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_sigint_to_the_process_group_does_not_end_a_render(engine):
    """A terminal's Ctrl+C reaches the child too: the daemon decides, not the signal."""
    pid = engine._process.pid
    steps = []

    def signal_after_first_step(*args):
        steps.append(args)
        if len(steps) == 1:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)

    result = engine.render(
        RenderRequest(prompt="a loop", seconds_total=1.0, seed=2, steps=4),
        on_step=signal_after_first_step,
    )
    assert len(steps) == 4 and engine._process.pid == pid and np.isfinite(result.audio).all()
