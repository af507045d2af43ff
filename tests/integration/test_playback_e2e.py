"""Playback through ``latentloop serve`` on a real JACK server (dummy backend), captured.

One daemon with playback on for the module (JACK must be stopped after it: the fixtures'
teardown order does that). The daemon renders with the built-in tiny model; loops are written
as float WAVs so the captured samples can be compared with the file's exactly.
"""

import os
import re
import time

import numpy as np
import pytest
import soundfile as sf
from jackd import Capture, JackServer, first_sound
from tests.conftest import DaemonProcess, stop_all

from latentloop_bridge.client import Client
from latentloop_bridge.spec import AUDIO_REPLY, PLAY_REPLY, PLAYING, STATUS_REPLY, TEMPO_REPLY

RATE = 44100  # the tiny model's rate: the stream runs at JACK's, so no resampling


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    pytest.importorskip("jack", reason="JACK-Client is a dev dependency")
    server = JackServer(tmp_path_factory.mktemp("jack"), rate=RATE, period=1024, realtime=True)
    yield server
    server.stop()  # after the daemon (its fixture ends first)


@pytest.fixture(scope="module")
def daemon(jack_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("play") / "out"
    d = DaemonProcess(out, "--format", "float", "--block-size", "1024", audio=True,
                      env=jack_server.env)  # fmt: skip
    try:
        d.wait_ready(180)
        yield d
    finally:
        stop_all([d])  # before jackd stops: PortAudio must close its JACK client first


def status_fields(client):
    client.send("/latentloop/status", [90])
    _, args = client.wait_for(90, (STATUS_REPLY,), 10)
    transport = dict(kv.split("=", 1) for kv in args[8].split())
    return transport, args[9]


def test_the_stream_opens_once_the_model_is_loaded_without_underruns(daemon):
    """Loading the model holds the interpreter lock for long stretches (imports, weight set-up):
    with the stream open meanwhile, every start-up had 7-9 underruns (docs/perf.md)."""
    log = daemon.log
    assert log.index("loaded tiny") < log.index("playback on 'system'") < log.index("ready on")
    with Client(port=daemon.port, timeout=30) as client:
        transport, _ = status_fields(client)
    assert transport["underruns"] == "0", transport


@pytest.mark.flaky(reruns=2, only_rerun=["XrunDuringCapture"])  # see tests/jackd.py
def test_render_play_brings_the_file_in_on_the_bar_bit_exactly(daemon, jack_server):
    assert "playback on 'system' (JACK" in daemon.log
    with Client(port=daemon.port, timeout=120) as client:
        client.notify(True)
        cap = Capture(jack_server, 4.0)
        try:
            cap.connect("^PortAudio:")
            done = client.render_and_wait(
                "drums", request_id=1, bpm=120, bars=1, seed=3, steps=2, play=0, timeout=180
            )
            _, args = client.wait_for(-1, (PLAYING,), 30)
            assert args[1:] == [0, 1, done[0].path]
            got = cap.wait(30)
        finally:
            cap.close()
        audio, rate = sf.read(done[0].path, dtype="float32", always_2d=True)
        assert rate == RATE and audio.shape == (88200, 2)
        with cap.explains_mismatch():
            start = first_sound(got)
            n = min(got.shape[0] - start, audio.shape[0])
            assert n > RATE // 2
            np.testing.assert_array_equal(got[start : start + n], audio[:n])
        transport, slots = status_fields(client)
        assert transport["running"] == "1" and float(transport["bpm"]) == pytest.approx(120)
        assert slots == f"0:1:{done[0].path}"


def test_play_a_job_by_id_and_change_tempo(daemon):
    with Client(port=daemon.port, timeout=60) as client:
        client.render_and_wait("bass", request_id=7, bpm=120, bars=1, seed=4, steps=2, timeout=180)
        client.send("/latentloop/play", [8, 7, 2, "bar"])
        _, args = client.wait_for(8, (PLAY_REPLY,), 30)
        assert args[1] == 2 and args[2] >= 0
        client.send("/latentloop/play", [9, 99])  # no such job from this sender
        _, args = client.wait_for(9, ("/latentloop/fail",), 30)
        assert args[1:3] == ["play", "not_found"]
        client.send("/latentloop/tempo", [10, 127.0])
        _, args = client.wait_for(10, (TEMPO_REPLY,), 60)
        assert args[1] == pytest.approx(127) and args[3] > 0
        transport, _ = status_fields(client)
        deadline = time.monotonic() + 30
        while float(transport["bpm"]) != pytest.approx(127.0):
            assert time.monotonic() < deadline
            transport, _ = status_fields(client)


def test_play_paths_are_confined_to_the_output_folder(daemon, tmp_path):
    """`play <path>`: a file in the output folder plays; `../` and a symlink inside the folder
    that points outside are refused (`invalid`), a missing file is `not_found`."""
    outside = tmp_path / "secret.wav"
    sf.write(outside, np.zeros((4410, 2), np.float32), RATE)
    link = daemon.out_dir / "escape.wav"
    link.symlink_to(outside)
    try:
        with Client(port=daemon.port, timeout=60) as client:
            (done,) = client.render_and_wait("kit", request_id=30, bpm=120, bars=1, seed=2,
                                              steps=2, timeout=180)  # fmt: skip
            client.send("/latentloop/play", [31, os.path.basename(done.path), 3, "now"])
            _, args = client.wait_for(31, (PLAY_REPLY,), 30)
            assert args[1] == 3
            cases = {32: ("../" * 8) + str(outside).lstrip("/"), 33: str(outside),
                     34: "escape.wav"}  # fmt: skip
            for rid, path in cases.items():
                client.send("/latentloop/play", [rid, path, 4])
                _, args = client.wait_for(rid, ("/latentloop/fail",), 30)
                assert args[1:3] == ["play", "invalid"], (path, args)
                assert "outside the output folder" in args[3]
            client.send("/latentloop/play", [35, "nope.wav", 4])
            _, args = client.wait_for(35, ("/latentloop/fail",), 30)
            assert args[1:3] == ["play", "not_found"]
            client.send("/latentloop/stop", [36, -1, "now"])
            client.wait_for(36, ("/latentloop/stop.reply",), 30)
    finally:
        link.unlink()


def test_no_underruns_while_the_model_renders(daemon):
    """10 s of playback at 1024-frame blocks with tiny renders running: zero underruns.

    jackd runs with real-time scheduling (as on a music machine), so its clients' process
    threads, PortAudio's callback among them, are never starved of CPU by the render; without
    it a loaded 2-core machine gave 6 underruns in 20 s (docs/perf.md, tools/playback_probe.py).
    The model renders in its own process (`[engine] process`), so no render code holds the
    daemon's interpreter lock that the callback needs.
    """
    with Client(port=daemon.port, timeout=60) as client:
        client.render_and_wait("loop", request_id=20, bpm=120, bars=1, seed=5, steps=2, play=1)
        before, _ = status_fields(client)
        deadline = time.monotonic() + 10
        ids = iter(range(21, 1000))
        while time.monotonic() < deadline:
            client.render_and_wait("more", request_id=next(ids), seconds=4, steps=8, timeout=120)
        after, _ = status_fields(client)
        print("playback under render load:", sorted(after.items()))
        assert after["running"] == "1"
        assert int(after["underruns"]) == int(before["underruns"]), (
            sorted(before.items()),
            sorted(after.items()),
        )


def test_an_unknown_device_stops_serve_with_the_list(jack_server, tmp_path):
    d = DaemonProcess(tmp_path / "out", "--audio-device", "no such card", audio=True,
                      env=jack_server.env)  # fmt: skip
    assert d.wait_exit(60) == 2
    assert "no output device 'no such card'; the devices are:" in d.log
    assert re.search(r"\*\s+\d+\s+system\s+JACK", d.log), d.log


def test_without_any_device_the_daemon_serves_files_only(tmp_path):
    """No JACK server under that name and no sound card (CI): file-only, said once."""
    env = {"JACK_DEFAULT_SERVER": f"absent{os.getpid()}", "JACK_NO_START_SERVER": "1"}
    d = DaemonProcess(tmp_path / "out", audio=True, env=env)
    try:
        d.wait_ready(180)
        if "playback on" in d.log:
            pytest.skip("this machine has a real output device")
        assert d.log.count("file-only mode") == 1
        with Client(port=d.port, timeout=120) as client:
            done = client.render_and_wait("x", bpm=120, bars=1, steps=1, seed=1, timeout=180)
            assert os.path.exists(done[0].path)
            client.send("/latentloop/play", [3, 1])
            _, args = client.wait_for(3, ("/latentloop/fail",), 10)
            assert args[1:3] == ["play", "no_audio"]
            client.send("/latentloop/audio", [4, "restart"])
            _, args = client.wait_for(4, ("/latentloop/fail", AUDIO_REPLY), 30)
            assert args[1:3] == ["audio", "no_audio"]
    finally:
        stop_all([d])


def test_the_device_goes_away_and_comes_back_with_audio_restart(tmp_path):
    """jackd stops under a playing daemon: the error is logged once, subscribers get
    `audio.reply -1 off`, playback turns off (`audio=off`, `play` fails `no_audio`) and renders
    go on; a new server under the same name and `/latentloop/audio <id> restart` bring it back
    (PortAudio re-initialised: it lists JACK only if the server runs when it initialises), or,
    while PortAudio still holds the vanished stream, the restart is refused at once. The daemon
    then stops within its 30 s (it waited on that stream at exit before)."""
    pytest.importorskip("jack", reason="JACK-Client is a dev dependency")
    for sub in ("jack1", "jack2"):
        (tmp_path / sub).mkdir()
    first = JackServer(tmp_path / "jack1", rate=RATE, period=1024, realtime=True)
    second = None
    d = DaemonProcess(tmp_path / "out", "--format", "float", "--block-size", "1024",
                      audio=True, env=first.env)  # fmt: skip
    try:
        d.wait_ready(180)
        assert "playback on 'system' (JACK" in d.log
        with Client(port=d.port, timeout=120) as client:
            client.notify(True)
            client.render_and_wait("a", request_id=1, bpm=120, bars=1, seed=1, steps=2, play=0,
                                   timeout=180)  # fmt: skip
            client.wait_for(-1, (PLAYING,), 30)
            first.stop()  # the device vanishes under the playing stream
            _, args = client.wait_for(-1, (AUDIO_REPLY,), 30)
            assert args[1] == "off" and "audio device stopped" in args[2]
            transport, _ = status_fields(client)
            assert transport["audio"] == "off" and transport["running"] == "0", transport
            client.send("/latentloop/play", [2, 1])
            _, args = client.wait_for(2, ("/latentloop/fail",), 30)
            assert args[1:3] == ["play", "no_audio"]
            (done,) = client.render_and_wait("b", request_id=3, bpm=120, bars=1, seed=2,
                                             steps=2, timeout=180)  # fmt: skip
            assert os.path.exists(done.path)
            assert d.log.count("the audio device stopped") == 1, d.log

            second = JackServer(tmp_path / "jack2", rate=RATE, period=1024, name=first.name,
                                realtime=True)  # fmt: skip
            client.send("/latentloop/audio", [4, "restart"])
            address, args = client.wait_for(4, (AUDIO_REPLY, "/latentloop/fail"), 30)
            if address == "/latentloop/fail":
                # PortAudio 19.6's JACK backend (Debian 12) holds the vanished stream for up to
                # 10 minutes (docs/playback.md, "Devices"): refused at once, clearly, and the
                # daemon goes on serving
                assert args[1:3] == ["audio", "no_audio"] and "still closing" in args[3], args
                transport, _ = status_fields(client)
                assert transport["audio"] == "off", transport
                pytest.skip(
                    "PortAudio holds the vanished JACK stream: no restart before it lets go"
                )
            assert args[1:] == ["on", "system"], args
            transport, _ = status_fields(client)
            assert transport["audio"] == "on" and transport["device"] == "system", transport
            cap = Capture(second, 2.0)
            try:
                cap.connect("^PortAudio:")
                client.send("/latentloop/play", [5, 3, 1, "bar"])
                _, args = client.wait_for(5, (PLAY_REPLY,), 30)
                assert args[1] == 1
                _, args = client.wait_for(-1, (PLAYING,), 30)
                assert args[1:] == [1, 3, done.path]
                got = cap.wait(30)
            finally:
                cap.close()
            audio, _ = sf.read(done.path, dtype="float32", always_2d=True)
            start = first_sound(got)
            n = min(got.shape[0] - start, audio.shape[0])
            assert n > RATE // 4
            with cap.explains_mismatch():
                np.testing.assert_array_equal(got[start : start + n], audio[:n])
    finally:
        stop_all([d])  # before jackd stops: PortAudio must close its JACK client first
        for server in (second, first):
            if server is not None:
                server.stop()
