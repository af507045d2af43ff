"""Run inside the test's network namespace (``test_link.py``): a Link peer holding the session,
or the daemon's player following it. Prints one JSON line of what it saw.

    python link_peers.py session <bpm> <change_to_bpm> <change_after_s> <live_s>
    python link_peers.py player <seconds>
"""

import json
import sys
import time


def session(bpm: float, new_bpm: float, change_after: float, live: float) -> None:
    import link

    peer = link.Link(bpm)
    peer.enabled = True
    t0 = time.monotonic()
    changed = False
    peers = 0
    while time.monotonic() - t0 < live:
        peers = max(peers, peer.numPeers())
        if not changed and time.monotonic() - t0 > change_after:
            state = peer.captureAppSessionState()
            state.setTempo(new_bpm, peer.clock().micros())
            peer.commitAppSessionState(state)
            changed = True
        time.sleep(0.05)
    print(json.dumps({"role": "session", "max_peers": peers}), flush=True)


def player(seconds: float) -> None:
    import numpy as np

    from latentloop_daemon.config import AudioConfig
    from latentloop_daemon.playback.player import Player
    from latentloop_daemon.playback.source import Loop

    class Quiet:
        def playing(self, *a: object) -> None: ...
        def bar(self, *a: object) -> None: ...
        def audio_off(self, *a: object) -> None: ...

    p = Player(AudioConfig(block_size=1024, link=True), Quiet())
    p.start()
    try:
        audio = np.zeros((88200, 2), np.float32)
        audio[::11025] = 0.5
        loop = Loop(audio, 44100, 4, 4, "/loops/1.wav", 1)  # one bar at 120 BPM
        p.submit(lambda: p.play(0, loop, "bar")).result(30)
        samples = []  # (t, peers, our bpm, session bpm, phase error in ms)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            samples.append(p.submit(lambda: _sample(p)).result(10))
            time.sleep(0.1)
    finally:
        p.close()
    print(json.dumps({"role": "player", "samples": samples}), flush=True)


def _sample(p: "object") -> tuple[float, int, float, float, float | None]:
    """On the control thread: our tempo and bar phase against the session's, now."""
    link, mixer = p.link, p.mixer  # type: ignore[attr-defined]
    grid = mixer.grid
    session_bpm = link.tempo()
    error_ms = None
    if grid is not None:
        frame = p._audible_frame()  # type: ignore[attr-defined]
        heard = p._link_micros_of(frame)  # type: ignore[attr-defined]
        ours = float((frame - grid.bar_position(grid.bar_at(frame))) / grid.frames_per_beat)
        theirs = link.phase_at_micros(heard, grid.beats_per_bar)
        q = grid.beats_per_bar
        error_beats = (ours - theirs + q / 2) % q - q / 2
        error_ms = 1000 * error_beats * 60 / session_bpm
    return time.monotonic(), link.peers(), float(p.bpm or 0), session_bpm, error_ms  # type: ignore[attr-defined]


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "session":
        session(*(float(x) for x in rest))
    else:
        player(float(rest[0]))
