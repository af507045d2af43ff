"""Client against a small in-test server (OscServer + MiniDaemon from conftest)."""

from __future__ import annotations

import time

import pytest

from latentloop_bridge.client import (
    Client,
    ClientTimeout,
    Done,
    Progress,
    RenderFailed,
    RequestFailed,
    StatusReply,
)
from latentloop_bridge.commands import CancelCommand, RenderCommand
from latentloop_bridge.protocol import encode_message


@pytest.fixture
def client_for(make_server):
    clients: list[Client] = []

    def make(**options: object):
        server, daemon = make_server(**options)
        client = Client(*server.bound_address, timeout=10.0)  # a margin for a loaded machine
        clients.append(client)
        return client, server, daemon

    yield make
    for client in clients:
        client.close()


def test_ping_and_status(client_for) -> None:
    client, _, daemon = client_for()
    assert client.ping() == 1
    assert client.ping(request_id=77) == 1
    status = client.status()
    assert status == StatusReply(2, "ready", 0, "tiny", "cpu", "0.1.0")
    assert [c.request_id for c, _ in daemon.commands] == [1, 77, 2]  # type: ignore[union-attr]


def test_render_and_wait_with_variations_and_progress(client_for) -> None:
    client, _, daemon = client_for()
    progress: list[tuple[int, int, float]] = []
    done = client.render_and_wait(
        "dusty drums",
        bpm=92,
        bars=4,
        seed=2**63,
        variations=2,
        replace=True,
        negative="vocals",
        key="F minor",
        on_progress=lambda *args: progress.append(args),
        timeout=5,
    )
    seconds = 4 * 4 * 60 / 92
    assert done == [
        Done(1, "/tmp/loop_0.wav", pytest.approx(seconds), 92.0, 4.0, 2**63, 0),  # type: ignore[arg-type]
        Done(1, "/tmp/loop_1.wav", pytest.approx(seconds), 92.0, 4.0, 2**63 + 1, 1),  # type: ignore[arg-type]
    ]
    assert progress == [(1, 2, 0.5)] * 2
    ((command, sender),) = daemon.commands
    assert command == RenderCommand(
        client_id=1,
        prompt="dusty drums",
        negative="vocals",
        bpm=92.0,
        bars=4.0,
        key="F minor",
        seed=2**63,
        variations=2,
        replace=True,
    )
    assert sender == client.local_address


def test_render_failure_raises_render_failed(client_for) -> None:
    client, _, _ = client_for()
    with pytest.raises(RenderFailed) as info:
        client.render_and_wait("fail", seconds=1)
    assert (info.value.request_id, info.value.code, info.value.message) == (1, "busy", "queue full")
    with pytest.raises(RenderFailed) as info:
        client.render_and_wait("x", seconds=1, bpm=120, request_id=50)
    assert info.value.code == "invalid"
    assert info.value.message == "give either seconds or bpm and bars, not both"
    assert info.value.request_id == 50


def test_other_failures_raise_request_failed(client_for) -> None:
    client, _, _ = client_for()
    client.send("/latentloop/ping", [1, 2])
    with pytest.raises(RequestFailed) as info:
        client.wait_for(1, ["/latentloop/pong"])
    assert not isinstance(info.value, RenderFailed)
    assert (info.value.command, info.value.code) == ("ping", "invalid")


def test_cancel_is_sent(client_for) -> None:
    client, _, daemon = client_for()
    client.cancel(-1)
    reply = client.wait_for(-1, ["/latentloop/fail"])
    assert reply == ("/latentloop/fail", [-1, "render", "cancelled", "cancelled"])
    assert daemon.commands[0][0] == CancelCommand(-1)


def test_cancel_can_wait_for_the_outcome(client_for) -> None:
    client, _, _ = client_for()
    client.cancel(5, timeout=1.0)  # /fail 5 render cancelled: done
    with pytest.raises(RequestFailed) as info:
        client.cancel(404, timeout=1.0)
    assert (info.value.command, info.value.code) == ("cancel", "not_found")


def test_notify_returns_the_subscribed_port(client_for) -> None:
    client, server, _ = client_for()
    assert client.notify() == client.local_address[1]
    assert server.subscribers == (client.local_address,)
    assert client.notify(False) == client.local_address[1]
    assert server.subscribers == ()


def test_replies_seen_while_waiting_are_kept(client_for) -> None:
    client, _, _ = client_for()
    client.send("/latentloop/ping", [1])
    client.send("/latentloop/ping", [2])
    assert client.wait_for(2, ["/latentloop/pong"]) == ("/latentloop/pong", [2, 1])
    assert client.wait_for(1, ["/latentloop/pong"]) == ("/latentloop/pong", [1, 1])


def test_replies_iterator_stops_when_quiet(client_for) -> None:
    client, server, _ = client_for()
    client.send("/latentloop/status", [])
    client.send("/latentloop/ping", [])
    replies = client.replies(timeout=10)
    assert [next(replies)[0], next(replies)[0]] == ["/latentloop/status.reply", "/latentloop/pong"]
    assert list(client.replies(timeout=0.1)) == []  # nothing more comes: it stops


def test_timeout_names_the_missing_reply(udp) -> None:
    silent = udp()  # a socket that never answers
    with Client(*silent.getsockname(), timeout=0.2) as client:
        start = time.monotonic()
        with pytest.raises(
            ClientTimeout, match=r"no /latentloop/pong for request 1 from 127\.0\.0\.1"
        ):
            client.ping()
        # waits its timeout, not less; 5 s is room for a loaded machine, not the property
        assert 0.2 <= time.monotonic() - start < 5.0
        with pytest.raises(TimeoutError):
            client.render_and_wait("x", seconds=1, timeout=0.1)


def test_malformed_replies_are_ignored(client_for, udp) -> None:
    client, _, _ = client_for()
    other = udp()
    other.sendto(b"junk", client.local_address)
    other.sendto(encode_message("/latentloop/pong", [5, 1]), client.local_address)
    assert client.wait_for(5, ["/latentloop/pong"]) == ("/latentloop/pong", [5, 1])


def test_render_sends_canonical_form_with_string_seed(client_for) -> None:
    client, _, daemon = client_for()
    rid = client.render("pads", seconds=2.5, seed="123", steps=8, cfg=1.0, beats_per_bar=3)
    assert rid == 1
    client.wait_for(rid, ["/latentloop/done"])
    command = daemon.commands[0][0]
    assert command == RenderCommand(
        client_id=1, prompt="pads", seconds=2.5, seed=123, steps=8, cfg=1.0, beats_per_bar=3
    )


def test_progress_parses_and_replies_until_quiet_or_forever(client_for, udp) -> None:
    client, _, _ = client_for()
    assert Progress.from_args([3, 4, 8, 0.5, "later"]) == Progress(3, 4, 8, 0.5)
    other = udp()
    other.sendto(encode_message("/latentloop/pong", [1, 1]), client.local_address)
    stream = client.replies(timeout=None)  # blocks until something arrives
    assert next(stream) == ("/latentloop/pong", [1, 1])
