"""Exposure in the bridge: the source allowlist (real sockets, a second loopback address as the
foreign source), the auth request and the render's token pair, and tokens kept out of logs."""

from __future__ import annotations

import logging
import socket

import pytest
from tests.conftest import bind_udp

from latentloop_bridge.commands import AuthCommand, PingCommand, RenderCommand
from latentloop_bridge.errors import FailCode, ProtocolError
from latentloop_bridge.intake import admit_datagram
from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import encode_message, parse_message


def foreign_socket() -> socket.socket:
    """A UDP socket on 127.0.0.2 (skipped where it cannot bind, failed in CI)."""
    sock = bind_udp("127.0.0.2")
    sock.settimeout(0.3)
    return sock


def test_sources_outside_the_allowlist_are_dropped_unanswered_and_counted(
    make_server, udp, caplog
) -> None:
    server, daemon = make_server(allow=["127.0.0.1/32"])
    allowed, foreign = udp(), foreign_socket()
    with caplog.at_level(logging.WARNING, logger="latentloop_bridge.server"):
        for request_id in range(5):
            foreign.sendto(encode_message("/latentloop/ping", [request_id]), server.bound_address)
            foreign.sendto(b"garbage, not OSC", server.bound_address)  # would get /fail if read
        allowed.sendto(encode_message("/latentloop/ping", [99]), server.bound_address)
        data, _ = allowed.recvfrom(65536)
    (message,) = parse_packet(data)
    assert (message.address, list(message.args)) == ("/latentloop/pong", [99, 1])
    with pytest.raises(TimeoutError):
        foreign.recvfrom(65536)
    foreign.close()
    assert server.dropped == 10
    assert [c for c, _ in daemon.commands] == [PingCommand(99)]
    assert daemon.errors == []
    drops = [r for r in caplog.records if "outside osc.allow" in r.getMessage()]
    assert len(drops) == 1  # rate-limited: one line for the burst
    assert "127.0.0.2" in drops[0].getMessage()


@pytest.mark.parametrize(
    ("allow", "host", "expected"),
    [
        ((), "10.1.2.3", True),
        (("192.168.1.0/24",), "192.168.1.77", True),
        (("192.168.1.0/24",), "192.168.2.1", False),
        (("10.0.0.7", "127.0.0.0/8"), "127.9.9.9", True),
        (("10.0.0.7",), "10.0.0.8", False),
    ],
)
def test_is_allowed(allow, host, expected) -> None:
    from latentloop_bridge.server import OscServer

    server = OscServer("127.0.0.1", 0, None, allow=allow)  # type: ignore[arg-type]
    assert server.is_allowed(host) is expected


def test_auth_and_the_render_token_pair_parse() -> None:
    assert parse_message("/latentloop/auth", [3, "s3cret-token"]) == AuthCommand(3, "s3cret-token")
    render = parse_message("/latentloop/render", [4, "prompt", "pads", "token", "s3cret-token"])
    assert isinstance(render, RenderCommand) and render.token == "s3cret-token"
    assert "s3cret" not in repr(render) and "s3cret" not in repr(AuthCommand(3, "s3cret"))
    for args in ([3], [3, "a", "b"], ["x", "tok"]):
        with pytest.raises(ProtocolError) as e:
            parse_message("/latentloop/auth", args)
        assert e.value.code == FailCode.INVALID and e.value.command == "auth"


def test_tokens_never_reach_the_log(caplog) -> None:
    datagrams = [
        encode_message("/latentloop/auth", [1, "hunter2-hunter2"]),
        encode_message("/latentloop/render", [2, "prompt", "x", "token", "hunter2-hunter2"]),
    ]
    with caplog.at_level(logging.DEBUG, logger="latentloop_bridge"):
        for data in datagrams:
            admit_datagram(
                data, ("127.0.0.1", 5), now_unix_s=0.0, now_s=0.0, max_datagram=65536,
                max_ahead_s=60.0,
            )  # fmt: skip
    assert caplog.records and "hunter2" not in caplog.text
