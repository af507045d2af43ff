"""OscServer over real loopback sockets: replies, routing, timetags, errors, lifecycle."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest

from latentloop_bridge.commands import PingCommand, RenderCommand
from latentloop_bridge.errors import ProtocolError
from latentloop_bridge.packets import IMMEDIATELY, parse_packet, unix_to_ntp
from latentloop_bridge.protocol import encode_message, pong_reply
from latentloop_bridge.server import BindError, OscServer


def bundle(timetag: int, *elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(element)) + element for element in elements)
    return b"#bundle\x00" + struct.pack(">Q", timetag) + body


def receive(sock: socket.socket) -> tuple[str, list[object], tuple[str, int]]:
    data, source = sock.recvfrom(65536)
    (message,) = parse_packet(data)
    return message.address, list(message.args), source


def nothing_arrives(sock: socket.socket, wait_s: float = 0.2) -> bool:
    sock.settimeout(wait_s)
    try:
        sock.recvfrom(65536)
    except TimeoutError:
        return True
    return False


def test_ping_is_answered_from_the_listening_socket(make_server, udp) -> None:
    server, daemon = make_server()
    client = udp()
    client.sendto(encode_message("/latentloop/ping", [42]), server.bound_address)
    address, args, source = receive(client)
    assert (address, args) == ("/latentloop/pong", [42, 1])
    assert source == server.bound_address  # sclang's OSCFunc(srcID: NetAddr) relies on this
    assert daemon.commands == [(PingCommand(42), client.getsockname())]
    assert daemon.threads == {"latentloop-osc-dispatch"}


def test_bound_address_reports_the_real_port(make_server) -> None:
    server, _ = make_server()
    host, port = server.bound_address
    assert host == "127.0.0.1" and 0 < port < 65536


def test_publish_goes_to_sender_subscribers_and_fixed_targets_once(make_server, udp) -> None:
    fixed, subscriber, client = udp(), udp(), udp()
    server, _ = make_server(fixed_targets=[("localhost", fixed.getsockname()[1])])
    assert server.fixed_targets == (fixed.getsockname(),)
    subscriber.sendto(encode_message("/latentloop/notify", [1]), server.bound_address)
    assert receive(subscriber)[:2] == (
        "/latentloop/notify.reply",
        [-1, 1, subscriber.getsockname()[1]],
    )
    assert receive(fixed)[0] == "/latentloop/notify.reply"
    client.sendto(encode_message("/latentloop/notify", [1]), server.bound_address)
    receive(client), receive(fixed)
    assert server.subscribers == (subscriber.getsockname(), client.getsockname())

    render = [7, "prompt", "drums", "bpm", 120, "bars", 1]
    client.sendto(encode_message("/latentloop/render", render), server.bound_address)
    for sock in (client, subscriber, fixed):  # the sender is also a subscriber: one copy
        replies = [receive(sock)[:2] for _ in range(3)]
        assert [address for address, _ in replies] == [
            "/latentloop/queued",
            "/latentloop/progress",
            "/latentloop/done",
        ]
        assert replies[2][1] == [7, "/tmp/loop_0.wav", 2.0, 120.0, 1.0, "0", 0, 0.0, 0.0]
        assert nothing_arrives(sock)


def test_notify_to_another_port_and_unsubscribe(make_server, udp) -> None:
    server, _ = make_server()
    client, listener = udp(), udp()
    port = listener.getsockname()[1]
    client.sendto(encode_message("/latentloop/notify", [1, port]), server.bound_address)
    assert receive(client)[:2] == ("/latentloop/notify.reply", [-1, 1, port])
    assert receive(listener)[:2] == ("/latentloop/notify.reply", [-1, 1, port])
    assert server.subscribers == (("127.0.0.1", port),)
    client.sendto(encode_message("/latentloop/notify", [0, port]), server.bound_address)
    assert receive(client)[:2] == ("/latentloop/notify.reply", [-1, 0, port])
    assert server.subscribers == ()


def test_subscriber_limit_and_own_port(make_server) -> None:
    server, _ = make_server(max_subscribers=1)
    assert server.subscribe(("127.0.0.1", 9)) is True
    assert server.subscribe(("127.0.0.1", 9)) is False
    with pytest.raises(ProtocolError) as info:
        server.subscribe(("127.0.0.1", 10))
    assert (info.value.code, info.value.command) == ("busy", "notify")
    with pytest.raises(ProtocolError) as info:
        server.subscribe(server.bound_address)
    assert info.value.code == "invalid"
    assert server.unsubscribe(("127.0.0.1", 9)) is True
    assert server.unsubscribe(("127.0.0.1", 9)) is False


def test_future_bundle_waits_without_blocking_reception(make_server, udp) -> None:
    server, daemon = make_server()
    client = udp()
    due = time.time() + 1.0
    ping_later = encode_message("/latentloop/ping", [1])
    client.sendto(bundle(unix_to_ntp(due), ping_later), server.bound_address)
    client.sendto(encode_message("/latentloop/ping", [2]), server.bound_address)

    first = receive(client)
    second = receive(client)
    second_at = time.time()
    # the order is the proof: a receive thread that slept until the bundle's time would
    # have answered ping 1 before reading ping 2
    assert first[:2] == ("/latentloop/pong", [2, 1])
    assert second[:2] == ("/latentloop/pong", [1, 1])
    assert second_at >= due - 0.002  # never early (2 ms for clock granularity)
    # "at its time": late by less than 5 s, a margin no loaded machine needs; a server
    # that ignored the timetag's value (e.g. parked it until the next datagram) fails
    assert second_at < due + 5.0


def test_past_and_immediate_bundles_run_now_in_order(make_server, udp) -> None:
    server, daemon = make_server()
    client = udp()
    pings = [encode_message("/latentloop/ping", [n]) for n in (1, 2, 3)]
    past = unix_to_ntp(time.time() - 5)
    client.sendto(
        bundle(IMMEDIATELY, pings[0], bundle(past, pings[1], pings[2])), server.bound_address
    )
    assert [receive(client)[1][0] for _ in range(3)] == [1, 2, 3]


def test_stopping_answers_bundles_still_waiting_at_close(make_server, udp) -> None:
    server, _ = make_server()
    client = udp()
    late = encode_message("/latentloop/ping", [9])
    client.sendto(bundle(unix_to_ntp(time.time() + 50), late), server.bound_address)
    client.sendto(encode_message("/latentloop/ping", [10]), server.bound_address)
    assert receive(client)[:2] == ("/latentloop/pong", [10, 1])  # so the bundle is parked
    server.close()
    assert receive(client)[:2] == (
        "/latentloop/fail",
        [9, "ping", "stopping", "latentloop stopped before this message's timetag"],
    )


def test_bundle_too_far_ahead_is_invalid(make_server, udp) -> None:
    server, _ = make_server(max_schedule_ahead_s=10.0)
    client = udp()
    ping = encode_message("/latentloop/ping", [4])
    client.sendto(bundle(unix_to_ntp(time.time() + 100), ping), server.bound_address)
    address, args, _ = receive(client)
    assert address == "/latentloop/fail"
    assert args[:3] == [4, "ping", "invalid"]
    assert isinstance(args[3], str) and args[3].endswith("s ahead; the limit is 10 s")


def test_full_dispatch_queue_is_answered_busy(make_server, udp) -> None:
    server, _ = make_server(max_scheduled=2)
    client = udp()
    later = unix_to_ntp(time.time() + 30)
    for request_id in (1, 2, 3):
        ping = encode_message("/latentloop/ping", [request_id])
        client.sendto(bundle(later, ping), server.bound_address)
    assert receive(client)[:2] == (
        "/latentloop/fail",
        [3, "ping", "busy", "latentloop's dispatch queue is full (2 waiting)"],
    )


def test_one_sender_cannot_park_the_queue_with_future_bundles(make_server, udp) -> None:
    from latentloop_bridge.spec import MAX_PARKED_PER_SENDER

    server, _ = make_server()
    flooder, other = udp(), udp()
    later = unix_to_ntp(time.time() + 50)
    pings = [encode_message("/latentloop/ping", [i]) for i in range(MAX_PARKED_PER_SENDER + 3)]
    flooder.sendto(bundle(later, *pings), server.bound_address)
    busy = [receive(flooder)[:2] for _ in range(3)]
    assert all(address == "/latentloop/fail" and args[2] == "busy" for address, args in busy)
    assert "too many timetagged messages waiting" in str(busy[0][1][3])
    other.sendto(encode_message("/latentloop/ping", [77]), server.bound_address)
    assert receive(other)[:2] == ("/latentloop/pong", [77, 1])  # immediate ones still pass


@pytest.mark.parametrize(
    ("data", "fail"),
    [
        (b"garbage", [-1, "?", "malformed"]),
        (b"/latentloop/render\x00\x00,i\x00\x00", [-1, "render", "malformed"]),
        (encode_message("/latentloop/mute", [3]), [3, "mute", "unknown"]),
        (
            encode_message("/latentloop/render", [3, "prompt", "x", "bars", 4]),
            [3, "render", "invalid"],
        ),
        (encode_message("/latentloop/render", [120, 4]), [-1, "render", "invalid"]),
    ],
)
def test_bad_input_gets_a_fail_and_a_warning(make_server, udp, caplog, data, fail) -> None:
    server, daemon = make_server()
    client = udp()
    with caplog.at_level(logging.WARNING, logger="latentloop_bridge"):
        client.sendto(data, server.bound_address)
        address, args, source = receive(client)
    assert address == "/latentloop/fail" and args[:3] == fail
    assert source == server.bound_address
    assert len(daemon.errors) == 1 and daemon.commands == []
    assert any("rejected input from 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_oversized_datagram_is_invalid(make_server, udp) -> None:
    server, _ = make_server(max_datagram=256)
    client = udp()
    big = encode_message("/latentloop/render", [1, "prompt", "x" * 300, "seconds", 1])
    client.sendto(big, server.bound_address)
    assert receive(client)[:2] == (
        "/latentloop/fail",
        [-1, "?", "invalid", "datagram is larger than the 256-byte limit"],
    )


def test_replies_sent_to_us_are_logged_not_answered(make_server, udp, caplog) -> None:
    server, daemon = make_server()
    client = udp()
    with caplog.at_level(logging.WARNING, logger="latentloop_bridge"):
        for address in ("/latentloop/fail", "/latentloop/done", "/fail"):
            client.sendto(encode_message(address, [1, "x"]), server.bound_address)
        client.sendto(encode_message("/latentloop/ping", [7]), server.bound_address)
        # datagrams are handled in order: the first answer is the ping's, so the three
        # replies before it got none, and their log records are already written
        assert receive(client)[:2] == ("/latentloop/pong", [7, 1])
    assert daemon.errors == [] and daemon.commands == [(PingCommand(7), client.getsockname())]
    ignored = [r for r in caplog.records if "answering replies can loop" in r.getMessage()]
    assert len(ignored) == 3


def test_handler_exception_gives_internal_fail_and_server_lives_on(
    make_server, udp, caplog
) -> None:
    server, _ = make_server()
    client = udp()
    with caplog.at_level(logging.ERROR, logger="latentloop_bridge"):
        boom = [5, "prompt", "boom", "seconds", 1]
        client.sendto(encode_message("/latentloop/render", boom), server.bound_address)
        assert receive(client)[:2] == (
            "/latentloop/fail",
            [5, "render", "internal", "internal error in render: RuntimeError: boom"],
        )
    assert any(r.exc_info for r in caplog.records)
    client.sendto(encode_message("/latentloop/ping", [6]), server.bound_address)
    assert receive(client)[:2] == ("/latentloop/pong", [6, 1])


def test_second_server_on_the_same_port_fails_fast(make_server) -> None:
    server, daemon = make_server()
    port = server.bound_address[1]
    second = OscServer("127.0.0.1", port, daemon)
    start = time.monotonic()
    with pytest.raises(BindError) as info:
        second.start()
    # fails at once, no retry loop; 5 s is a margin for a loaded machine (binding takes ms)
    assert time.monotonic() - start < 5.0
    assert str(info.value).endswith(
        f"port {port} on 127.0.0.1 is already in use (another latentloop?)"
    )
    assert isinstance(info.value, OSError)


def test_bind_to_a_foreign_address_fails_clearly(make_server) -> None:
    _, daemon = make_server()
    with pytest.raises(BindError, match="192.0.2.1 is not an address of this machine"):
        OscServer("192.0.2.1", 0, daemon).start()


def test_listening_on_all_interfaces_warns(caplog) -> None:
    class Quiet:
        def on_command(self, command, sender) -> None: ...
        def on_protocol_error(self, error, sender) -> None: ...

    with caplog.at_level(logging.INFO, logger="latentloop_bridge"):
        with OscServer("0.0.0.0", 0, Quiet()) as server:
            port = server.bound_address[1]
    messages = [r.getMessage() for r in caplog.records]
    assert f"listening for OSC on udp 0.0.0.0:{port}" in messages
    assert any("reachable from the network" in m for m in messages)
    assert f"stopped listening on udp 0.0.0.0:{port}" in messages


def test_close_is_prompt_and_idempotent(make_server, udp, caplog) -> None:
    server, _ = make_server()
    client = udp()
    client.sendto(encode_message("/latentloop/ping", [1]), server.bound_address)
    receive(client)
    # threads blocked in select() or on the scheduler's condition wake only when close()
    # wakes them: a missed wake-up leaves them alive for good, which the names check
    # catches; the long join timeout only keeps a loaded machine from failing the test
    server.close(timeout_s=30)
    server.close()
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"latentloop-osc-receive", "latentloop-osc-dispatch"}
    with caplog.at_level(logging.WARNING, logger="latentloop_bridge"):
        assert server.reply(client.getsockname(), *pong_reply(1)) is False
    assert any("not running" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError):
        server.start()


def test_handler_may_close_the_server(udp) -> None:
    class Closer:
        server: OscServer

        def on_command(self, command, sender) -> None:
            self.server.respond(sender, *pong_reply(0))
            self.server.close()

        def on_protocol_error(self, error, sender) -> None: ...

    handler = Closer()
    server = OscServer("127.0.0.1", 0, handler)
    handler.server = server
    server.start()
    client = udp()
    client.sendto(encode_message("/latentloop/ping", []), server.bound_address)
    assert receive(client)[:2] == ("/latentloop/pong", [0, 1])
    deadline = time.monotonic() + 30  # it exits promptly; 30 s only fails a stuck thread
    while any(t.name == "latentloop-osc-receive" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_slow_handler_does_not_block_reception(make_server, udp) -> None:
    """Datagrams are received and admitted while the handler is still blocked.

    With room for one waiting message, the second ping that arrives during the blocked render
    can only be answered `busy` by the receive thread itself, so that answer is proof that
    reception went on. A server that dispatched on its receive thread fails here: checked by
    patching `server._enqueue = server._dispatch` (handler inline on the receive thread): the
    pings then wait in the kernel buffer, no `busy` comes back and `receive` times out.
    """
    server, daemon = make_server(max_scheduled=1)
    entered, release, left = threading.Event(), threading.Event(), threading.Event()
    original = daemon.on_command

    def slow(command, sender) -> None:
        if isinstance(command, RenderCommand):
            entered.set()
            release.wait(30)
            left.set()
        original(command, sender)

    daemon.on_command = slow  # type: ignore[method-assign]
    client = udp()
    client.settimeout(10)
    render = encode_message("/latentloop/render", [1, "prompt", "x", "seconds", 1])
    client.sendto(render, server.bound_address)
    try:
        assert entered.wait(10), "the render never reached the handler"
        for request_id in (2, 3, 4):  # 2 waits for dispatch; 3 and 4 find the queue full
            client.sendto(encode_message("/latentloop/ping", [request_id]), server.bound_address)
        busy = [receive(client)[:2] for _ in range(2)]
        assert not left.is_set(), "answered only after the handler returned"
    finally:
        release.set()
    message = "latentloop's dispatch queue is full (1 waiting)"
    assert busy == [
        ("/latentloop/fail", [3, "ping", "busy", message]),
        ("/latentloop/fail", [4, "ping", "busy", message]),
    ]
    addresses = [receive(client)[:2] for _ in range(4)]
    assert [address for address, _ in addresses[:3]] == [
        "/latentloop/queued", "/latentloop/progress", "/latentloop/done",
    ]  # fmt: skip
    assert addresses[3] == ("/latentloop/pong", [2, 1])  # the one that waited is answered


def test_each_message_of_a_bundle_gets_its_own_outcome(make_server, udp) -> None:
    server, daemon = make_server()
    client = udp()
    data = bundle(
        IMMEDIATELY,
        encode_message("/latentloop/ping", [1]),
        encode_message("/latentloop/mute", [2, 120]),
        encode_message("/latentloop/cancel", []),
    )
    client.sendto(data, server.bound_address)
    replies = [receive(client)[:2] for _ in range(3)]
    assert replies[0] == ("/latentloop/pong", [1, 1])
    assert replies[1][1][:3] == [2, "mute", "unknown"]
    assert replies[2][1][:3] == [-1, "cancel", "invalid"]
