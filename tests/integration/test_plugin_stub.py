"""The Python plugin stub (plugin_stub/python) as a command, against a real daemon, its audio on
a real JACK server (dummy backend) captured by a JACK client.

``python -m latentloop_plugin`` holds a host tempo of 240 BPM in 4/4 (a bar is 44,100 samples
of its own clock), clicks one sample on every bar of that clock as a count-in, asks the daemon
(``latentloop serve`` around the stand-in engine: the real server, jobs, loop pipeline and float
WAV writer) for a one-bar loop at the host tempo, and plays it from the next bar. In the
capture the clicks mark the stub's bars: the loop's first sample must land exactly one bar
after the last click, and every repeat must equal the file's samples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from jackd import Capture, JackServer

REPO = Path(__file__).resolve().parents[2]
RATE = 44100
BAR = 44100  # 4 beats at 240 BPM
CLICK = 0.5  # latentloop_plugin.stub.CLICK

pytestmark = pytest.mark.flaky(reruns=2, only_rerun=["XrunDuringCapture"])  # tests/jackd.py


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    pytest.importorskip("jack", reason="JACK-Client is a dev dependency")
    server = JackServer(tmp_path_factory.mktemp("jack"), rate=RATE, period=1024, realtime=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(module_daemon_factory):
    d = module_daemon_factory("--no-warmup", "--format", "float", standin=True)
    d.wait_ready()
    return d


def test_the_stub_plays_the_loop_from_a_bar_of_its_own_clock(jack_server, daemon):
    cap = Capture(jack_server, 9.0)
    env = {**os.environ, **jack_server.env,
           "PYTHONPATH": os.pathsep.join([str(REPO / "plugin_stub" / "python"),
                                          os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "latentloop_plugin", "plugin stub groove", "--bpm", "240",
           "--bars", "1", "--port", str(daemon.port), "--count-in", "2", "--loops", "2",
           "--seed", "3"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        cap.connect("^PortAudio:", timeout=60)
        out, _ = proc.communicate(timeout=120)
        got = cap.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cap.close()
    assert proc.returncode == 0, out
    (line,) = [x for x in out.splitlines() if x.startswith("scheduled ")]
    _, bar, start, frames, path = line.split(" ", 4)
    assert int(start) == int(bar) * BAR and int(frames) == BAR, line  # a bar of its clock
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE and audio.shape == (BAR, 2)
    with cap.explains_mismatch():
        sounding = np.flatnonzero(np.abs(got).max(axis=1) > 0)
        # the loop is dense audio; the count-in clicks are single samples a bar apart
        loop_start = int(sounding[np.flatnonzero(np.diff(sounding) == 1)[0]])
        clicks = sounding[sounding < loop_start]
        assert clicks.size >= 1, "the capture missed the count-in"
        assert (got[clicks] == CLICK).all()
        assert (np.diff(clicks) == BAR).all()
        assert loop_start - clicks[-1] == BAR  # the first sample on the next bar boundary
        for repeat in range(2):
            at = loop_start + repeat * BAR
            np.testing.assert_array_equal(got[at : at + BAR], audio)
    print(f"plugin stub: loop on its bar {bar} (sample {start}); in the capture one bar after "
          f"the last of {clicks.size} count-in clicks, 2 repeats equal to the file")  # fmt: skip
