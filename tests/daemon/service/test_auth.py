"""The shared token: who may do work, for how long."""

from __future__ import annotations

from latentloop_bridge.commands import (
    AuthCommand,
    CancelCommand,
    PingCommand,
    RenderCommand,
    StatusCommand,
)
from latentloop_daemon.service.auth import MAX_AUTHORISED_HOSTS, Authorizer

TOKEN = "correct-horse-battery"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_token_everything_is_permitted() -> None:
    auth = Authorizer("", 60)
    assert not auth.enabled
    assert auth.permits(RenderCommand(1, "x"), "10.0.0.1")
    assert not auth.authorise("10.0.0.1", "")  # nothing to authorise against


def test_ping_and_auth_need_no_token_everything_else_does() -> None:
    auth = Authorizer(TOKEN, 60)
    host = "10.0.0.1"
    assert auth.permits(PingCommand(1), host) and auth.permits(AuthCommand(1, "x"), host)
    for command in (RenderCommand(1, "x"), CancelCommand(1), StatusCommand(1)):
        assert not auth.permits(command, host)


def test_auth_grants_the_host_for_the_ttl_and_a_wrong_token_grants_nothing() -> None:
    clock = Clock()
    auth = Authorizer(TOKEN, 60, clock)
    assert not auth.authorise("10.0.0.1", TOKEN + "x")
    assert not auth.permits(StatusCommand(1), "10.0.0.1")
    assert auth.authorise("10.0.0.1", TOKEN)
    assert auth.permits(StatusCommand(1), "10.0.0.1")
    assert not auth.permits(StatusCommand(1), "10.0.0.2")  # per host
    clock.now += 59.9
    assert auth.permits(StatusCommand(1), "10.0.0.1")
    clock.now += 0.2
    assert not auth.permits(StatusCommand(1), "10.0.0.1")  # expired


def test_a_render_may_carry_the_token_and_a_wrong_one_is_refused_even_when_authorised() -> None:
    auth = Authorizer(TOKEN, 60)
    assert auth.permits(RenderCommand(1, "x", token=TOKEN), "10.0.0.9")
    assert not auth.permits(StatusCommand(1), "10.0.0.9")  # the pair authorised that render only
    auth.authorise("10.0.0.9", TOKEN)
    assert not auth.permits(RenderCommand(1, "x", token="nope-nope"), "10.0.0.9")


def test_the_set_of_hosts_is_bounded() -> None:
    auth = Authorizer(TOKEN, 60)
    for i in range(MAX_AUTHORISED_HOSTS + 10):
        assert auth.authorise(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", TOKEN)
    assert len(auth._until) == MAX_AUTHORISED_HOSTS
    assert not auth.permits(StatusCommand(1), "10.0.0.0")  # the oldest was forgotten
