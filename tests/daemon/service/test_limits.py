"""``[limits]``: config values may only tighten protocol v1's ranges, and a running service
(in-process, real UDP, a stand-in engine) enforces each with its own ``/fail``: sizes and
ranges ``invalid`` naming the key, the per-source-address render rate ``busy`` (ping exempt)."""

from __future__ import annotations

import pytest
from fake_engines import ClickEngine
from inprocess import running_service
from pythonosc.osc_packet import OscPacket
from tests.conftest import bind_udp

from latentloop_bridge.protocol import encode_message
from latentloop_daemon.config import load_config
from latentloop_daemon.errors import ConfigError
from latentloop_daemon.service.limits import RenderRate

TIGHT = {
    "limits.max_datagram": 1024,
    "limits.max_prompt_chars": 20,
    "limits.max_seconds": 4.0,
    "limits.max_bars": 2.0,
    "limits.max_steps": 8,
    "limits.max_variations": 2,
    "limits.min_cfg": 1.0,
    "limits.max_cfg": 9.0,
    "limits.renders_per_minute": 4,
    "render.seconds": 2.0,
    "render.bars": 1.0,
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_datagram", 65537),
        ("max_datagram", 100),
        ("max_prompt_chars", 1001),
        ("max_seconds", 601.0),
        ("max_seconds", 0.0),
        ("max_bars", 65.0),
        ("max_steps", 1001),
        ("max_variations", 17),
        ("min_cfg", -1.0),
        ("max_cfg", 101.0),
        ("renders_per_minute", -1),
    ],
)
def test_a_limit_looser_than_the_protocol_is_a_config_error_naming_the_key(key, value) -> None:
    with pytest.raises(ConfigError, match=rf"limits\.{key}"):
        load_config(overrides={f"limits.{key}": value}, environ={})


def test_limits_must_agree_with_each_other_and_with_the_render_defaults() -> None:
    with pytest.raises(ConfigError, match=r"limits\.min_cfg .* limits\.max_cfg"):
        load_config(overrides={"limits.min_cfg": 5.0, "limits.max_cfg": 4.0}, environ={})
    with pytest.raises(ConfigError, match=r"render\.seconds .* limits\.max_seconds"):
        load_config(overrides={"limits.max_seconds": 4.0}, environ={})  # render.seconds is 8
    with pytest.raises(ConfigError, match=r"render\.bars .* limits\.max_bars"):
        load_config(overrides={"limits.max_bars": 2.0}, environ={})  # render.bars is 4
    env = {"LATENTLOOP_LIMITS_MAX_STEPS": "50", "LATENTLOOP_LIMITS_RENDERS_PER_MINUTE": "30"}
    limits = load_config(environ=env).limits
    assert (limits.max_steps, limits.renders_per_minute) == (50, 30)


def test_the_render_rate_is_a_token_bucket_per_host_with_bounded_memory() -> None:
    now = [0.0]
    rate = RenderRate(6, max_sources=3, clock=lambda: now[0])
    assert [rate.admit("10.0.0.1") for _ in range(7)] == [True] * 6 + [False]
    assert rate.admit("10.0.0.2")  # another host has its own budget
    now[0] += 10.0  # one render a 10 s comes back
    assert rate.admit("10.0.0.1") and not rate.admit("10.0.0.1")
    for host in ("10.0.0.3", "10.0.0.4", "10.0.0.5"):
        rate.admit(host)
    assert len(rate._buckets) == 3
    assert all(RenderRate(0).admit("10.0.0.1") for _ in range(1000))  # 0: no limit


class Peer:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.daemon = ("127.0.0.1", port)
        self.sock = bind_udp(host)  # 127.0.0.2: skipped where it cannot bind, failed in CI
        self.sock.settimeout(5)

    def ask(self, address: str, *args: object, raw: bytes | None = None) -> tuple[str, list]:
        """Send one message; the first reply that is not /queued or /progress."""
        self.sock.sendto(raw if raw is not None else encode_message(address, list(args)),
                         self.daemon)  # fmt: skip
        while True:
            data, _ = self.sock.recvfrom(65536)
            for timed in OscPacket(data).messages:
                reply = (timed.message.address, list(timed.message.params))
                if reply[0] not in ("/latentloop/queued", "/latentloop/progress"):
                    return reply

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tight_service(tmp_path):
    engine = ClickEngine([120.0] * 100)
    with running_service(tmp_path, lambda: engine, **{"render.tempo_check": False, **TIGHT}) as svc:
        svc.engine = engine
        yield svc


OVER = [
    (("prompt", "x" * 21), "prompt is 21 characters", "max_prompt_chars"),
    (("prompt", "ok", "negative", "n" * 30), "negative is 30 characters", "max_prompt_chars"),
    (("prompt", "ok", "seconds", 4.5), "seconds 4.5 is over", "max_seconds"),
    (("prompt", "ok", "bpm", 120, "bars", 3), "bars 3 is over", "max_bars"),
    (("prompt", "ok", "bpm", 40, "bars", 2), "last 12.0 s", "max_seconds"),
    (("prompt", "ok", "bpm", 50), "1 bars of 4 at 50 BPM last 4.8 s", "max_seconds"),
    (("prompt", "ok", "seconds", 1, "steps", 9), "steps 9 is over", "max_steps"),
    (("prompt", "ok", "seconds", 1, "variations", 3), "variations 3 is over", "max_variations"),
    (("prompt", "ok", "seconds", 1, "cfg", 0.5), "cfg 0.5 is outside", "min_cfg, max_cfg"),
    (("prompt", "ok", "seconds", 1, "cfg", 9.5), "cfg 9.5 is outside", "min_cfg, max_cfg"),
]


def test_each_limit_gets_a_precise_fail_and_does_no_work(tight_service, tmp_path) -> None:
    peer = Peer(tight_service.server.bound_address[1])
    try:
        for rid, (args, words, key) in enumerate(OVER, start=1):
            address, reply = peer.ask("/latentloop/render", rid, *args)
            assert (address, reply[:3]) == ("/latentloop/fail", [rid, "render", "invalid"]), reply
            assert words in reply[3] and f"[limits] {key}" in reply[3], reply[3]
        big = encode_message("/latentloop/render", [99, "prompt", "y" * 1100, "seconds", 1])
        address, reply = peer.ask("", raw=big)
        assert (address, reply[:3]) == ("/latentloop/fail", [-1, "?", "invalid"])
        assert "1024-byte limit" in reply[3]
        assert tight_service.engine.requests == []
        assert not list(tmp_path.glob("*.wav"))
        # at the limits themselves: accepted
        address, reply = peer.ask("/latentloop/render", 50, "prompt", "z" * 20, "seconds", 4,
                                  "steps", 8, "variations", 2, "cfg", 9)  # fmt: skip
        assert address == "/latentloop/done", reply
    finally:
        peer.close()
    print(f"limits refused: {len(OVER) + 1} (each naming its key); at the limits: done")


def test_the_render_rate_is_per_source_address_and_answered_busy(tight_service) -> None:
    port = tight_service.server.bound_address[1]
    first = Peer(port)
    try:
        for rid in (1, 2):
            assert first.ask("/latentloop/render", rid, "prompt", "a", "seconds", 1)[0] == (
                "/latentloop/done"
            )
        assert first.ask("/latentloop/render", 3, "prompt", "a", "steps", 99)[1][2] == "invalid"
        first.close()
        second = Peer(port)  # a new socket (a new ephemeral port) on the same host
        for rid in (4, 5):
            assert second.ask("/latentloop/render", rid, "prompt", "a", "seconds", 1)[0] == (
                "/latentloop/done"
            )
        address, reply = second.ask("/latentloop/render", 6, "prompt", "a", "seconds", 1)
        assert (address, reply[:3]) == ("/latentloop/fail", [6, "render", "busy"]), reply
        assert "at most 4 renders a minute from 127.0.0.1" in reply[3]
        assert "renders_per_minute" in reply[3]
        for rid in range(10, 30):  # ping is exempt
            assert second.ask("/latentloop/ping", rid)[0] == "/latentloop/pong"
        second.close()
        other = Peer(port, host="127.0.0.2")
        assert other.ask("/latentloop/render", 7, "prompt", "a", "seconds", 1)[0] == (
            "/latentloop/done"
        )
        other.close()
    finally:
        first.close()
    print("rate: 4 renders from 127.0.0.1 over two sockets, the 5th busy; 20 pings; 127.0.0.2 own")
