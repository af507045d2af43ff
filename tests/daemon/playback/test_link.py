"""Ableton Link: the player follows a session held by another process (docs/playback.md).

Both peers run in a network namespace this test creates, with multicast on its loopback
(the machine's ``lo`` has none, and Link traffic must never leave the machine). Needs root,
``ip`` and the optional binding (``LinkPython-extern``); skipped without them, failed in CI
(``LATENTLOOP_REQUIRE_TOOLS=1``). JACK (the module's server) is reached through its
file-system sockets, which a network namespace does not hide.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import require_tool, unavailable

HERE = Path(__file__).parent
PHASE_TOLERANCE_MS = 5.0  # the player nudges its grid when it is more than 2 ms off


def _missing(what):
    unavailable(f"the Link test needs {what}")


@pytest.fixture
def netns():
    ip = require_tool("ip")
    if os.geteuid() != 0:
        _missing("root (ip netns)")
    try:
        import link  # noqa: F401
    except ImportError:
        _missing("the Link binding: pip install 'latentloop[link]'")
    name = f"lltest{os.getpid()}"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["link", "set", "lo", "multicast", "on"],
                    ["route", "add", "224.0.0.0/4", "dev", "lo"]):  # fmt: skip
            subprocess.run([ip, "netns", "exec", name, ip, *cmd], check=True)
        yield [ip, "netns", "exec", name]
    finally:
        subprocess.run([ip, "netns", "del", name], check=False)


def test_the_player_follows_the_session_tempo_and_bar_phase(netns, jack_server):
    env = {**os.environ, **jack_server.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = str(HERE / "link_peers.py")
    # the session: 120 BPM, joined by the player after ~1 s, changed to 133 BPM at 5 s
    session = subprocess.Popen([*netns, sys.executable, script, "session", "120", "133", "5", "12"],
                               stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    player = subprocess.run([*netns, sys.executable, script, "player", "9"], capture_output=True,
                            text=True, env=env, timeout=120)  # fmt: skip
    out, _ = session.communicate(timeout=60)
    assert player.returncode == 0, player.stderr[-3000:]
    assert json.loads(out)["max_peers"] == 1
    samples = json.loads(player.stdout.strip().splitlines()[-1])["samples"]
    t0 = samples[0][0]
    seen = [(round(t - t0, 1), n, b, s, e and round(e, 2)) for t, n, b, s, e in samples]
    print("t, peers, bpm, session bpm, phase error ms:", seen)
    assert any(n == 1 for _, n, _, _, _ in samples), "the peers never met"
    first = [s for s in samples if s[1] == 1]
    # joining adopts the session's tempo (120) and never changes it
    assert first[0][3] == pytest.approx(120)
    late = samples[-10:]  # the last second, 3-4 s after the change to 133 BPM
    assert all(s[2] == pytest.approx(133, abs=1e-3) and s[3] == pytest.approx(133) for s in late)
    errors = [abs(s[4]) for s in late if s[4] is not None]
    assert errors and max(errors) <= PHASE_TOLERANCE_MS, errors
