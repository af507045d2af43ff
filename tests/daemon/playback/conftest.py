"""A JACK server (dummy backend) for the in-process player tests, and a player on it."""

import os
import time

import pytest
from jackd import JackServer


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    pytest.importorskip("jack", reason="JACK-Client is a dev dependency")
    server = JackServer(tmp_path_factory.mktemp("jack"), rate=44100, period=1024, realtime=True)
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ.update(server.env)
    import sounddevice as sd

    sd._terminate()  # PortAudio lists JACK only if it runs when PortAudio initialises
    sd._initialize()
    try:
        yield server
    finally:
        sd._terminate()  # close PortAudio's JACK client before the server goes
        server.stop()
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old
        sd._initialize()


class Events:
    """Records what the player reports."""

    def __init__(self):
        self.played, self.bars, self.off = [], [], []
        self.bars_sent = []  # time.time() when each bar was announced

    def playing(self, slot, job_id, path):
        self.played.append((slot, job_id, path))

    def bar(self, bar, bpm, beats_per_bar, when):
        self.bars_sent.append(time.time())
        self.bars.append((bar, bpm, beats_per_bar, when))

    def audio_off(self, message):
        self.off.append(message)


@pytest.fixture
def player_factory(jack_server):
    """Start players on the JACK server; each is closed (stream first) at the end."""
    from latentloop_daemon.config import AudioConfig
    from latentloop_daemon.playback.player import Player

    made = []

    def make(**audio):
        events = Events()
        player = Player(AudioConfig(**audio), events)
        player.start()
        made.append(player)
        return player, events

    yield make
    for player in made:
        player.close()
