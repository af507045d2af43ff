"""The Pd kit's player, ``[latentloop-loop]``, in headless Pd against a real daemon.

The daemon is ``latentloop serve`` around the stand-in engine (tests/standin_daemon.py: the real
OSC server, jobs, loop pipeline and file writer; seeded noise instead of a model, so no torch
start). Pd drives ``[latentloop]`` with a test patch; ``[latentloop]``'s outlet is wired straight
into ``[latentloop-loop]``, which loads each ``done`` file into arrays with ``[soundfiler]`` and
reports ``loaded <array size> <rate>``. The test compares that size with the WAV's frame count,
for the positional and the canonical render.

The playback test runs Pd's DSP (``-nosound``: Pd paces itself on the system clock) and records
the player's output with ``[writesf~]`` from the moment the patch's own bar clock starts: the
loop must begin on a bar sample of that clock and equal the file's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.conftest import require_tool
from tests.integration.test_hosts import (
    Patch,
    free_udp_port,
    loop_frames,
    pd_lines,
    pd_symbol,
    print_id_and_path,
    run_pd,
)

SR = 44100


@pytest.fixture(scope="module")
def pd_tool() -> str:
    return require_tool("pd")


@pytest.fixture(scope="module")
def daemon(module_daemon_factory):
    d = module_daemon_factory("--no-warmup", "--format", "float", standin=True)
    d.wait_ready()
    return d


def kit_patch(daemon_port: int, request: str, quit_on_loaded: bool = True) -> Patch:
    """``[latentloop]`` -> ``[latentloop-loop]``; ``request`` is sent on load. Prints the done
    path (``done-path``) and the player's messages (``loop``); quits after ``loaded`` unless
    told not to."""
    p = Patch()
    p.obj("ll", f"latentloop 127.0.0.1 {daemon_port} {free_udp_port()}")
    p.obj("loop", "latentloop-loop")
    p.obj("loop_print", "print loop")
    p.obj("lb", "loadbang")
    p.obj("wait", "delay 200")  # after the subscription's reply
    p.msg("request", request)
    p.obj("route", "route done fail")
    p.obj("fail_print", "print fail")
    p.obj("loaded", "route loaded")
    p.obj("loaded_t", "t b")
    p.wire("lb", "wait")
    p.wire("wait", "request")
    p.wire("request", "ll")
    p.wire("ll", "loop")
    p.wire("ll", "route")
    print_id_and_path(p, "route", 0, "done")
    p.wire("route", "fail_print", 1)
    p.wire("loop", "loop_print", 2)
    p.wire("loop", "loaded", 2)
    p.wire("loaded", "loaded_t")
    if quit_on_loaded:
        p.quit_after("loaded_t", 0)
    return p


@pytest.mark.parametrize(
    ("request_text", "bpm", "bars"),
    [
        ("render 120 1 pd kit positional loop", 120, 1),
        ("osc render 11 prompt pd\\ kit\\ canonical bpm 93 bars 2 seed 5", 93, 2),
    ],
    ids=["positional", "canonical"],
)
def test_the_kit_loads_the_done_file_into_arrays(
    pd_tool, daemon, tmp_path, request_text, bpm, bars
):
    out = run_pd(kit_patch(daemon.port, request_text).write(tmp_path / "load.pd"))
    assert not pd_lines(out, "fail"), out
    (path,) = map(pd_symbol, pd_lines(out, "done-path"))
    (loaded,) = [v for v in pd_lines(out, "loop") if v.startswith("loaded ")]
    _, size, rate = loaded.split(" ")
    info = sf.info(path)
    assert info.frames == loop_frames(bpm, bars)
    assert (int(size), int(rate)) == (info.frames, info.samplerate), out
    print(f"Pd [latentloop-loop]: array size {size} = {Path(path).name}'s {info.frames} frames")


def test_the_loop_starts_on_a_bar_of_the_patch_clock_and_plays_the_file(pd_tool, daemon, tmp_path):
    """``clock 240 4`` (a bar is one second: 44,100 samples) starts with the recording; the render
    arrives some bars later and the loop starts on the next bar: its first sample is a whole
    number of bars into the recording, and what follows is the file (``[tabread4~]`` at whole
    indices, float32: within 2e-3; its first and last samples are clipped to their neighbours)."""
    rec = tmp_path / "rec.wav"
    p = kit_patch(daemon.port, "render 240 1 pd kit playback", quit_on_loaded=False)
    p.obj("route_start", "route start")
    p.obj("lb2", "loadbang")
    p.obj("seq", "t b b b")
    p.msg("dsp", "\\; pd dsp 1")
    p.msg("rec_open", f"open -bytes 4 {rec} \\, start")
    p.msg("clock", "clock 240 4")
    p.obj("ws", "writesf~ 2")
    p.obj("after", "delay 1500")  # one loop (1 s) and a half after it started
    p.obj("after_t", "t b b")
    p.msg("rec_stop", "stop")
    p.wire("lb2", "seq")
    p.wire("seq", "dsp", 2)
    p.wire("seq", "rec_open", 1)
    p.wire("seq", "clock", 0)
    p.wire("rec_open", "ws")
    p.wire("clock", "loop")
    p.wire("loop", "ws", 0, 0)
    p.wire("loop", "ws", 1, 1)
    p.wire("loop", "route_start", 2)
    p.wire("route_start", "after", 0)
    p.wire("after", "after_t")
    p.wire("after_t", "rec_stop", 1)
    p.wire("rec_stop", "ws")
    p.quit_after("after_t", 0, delay_ms=50)
    out = run_pd(p.write(tmp_path / "play.pd"))
    assert "loop: start" in out, out
    (path,) = map(pd_symbol, pd_lines(out, "done-path"))
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    got, got_rate = sf.read(rec, dtype="float32", always_2d=True)
    assert rate == got_rate == SR and audio.shape[0] == SR
    start = int(np.flatnonzero(np.abs(got).max(axis=1) > 0)[0])
    assert start > 0 and start % SR == 0, start  # on a bar of the patch's own clock
    n = min(audio.shape[0], got.shape[0] - start)
    assert n == audio.shape[0], (n, got.shape)
    played = got[start : start + n]
    # [vline~]'s index is a float32: up to ~0.01 sample off late in a loop (5e-4 seen here)
    np.testing.assert_allclose(played[1:-1], audio[1:-1], atol=2e-3)
    print(f"Pd loop starts at sample {start} (bar {start // SR}) and plays the file's samples")
