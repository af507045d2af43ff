"""Fixtures for the bridge tests: real UDP sockets on 127.0.0.1, a small in-test daemon."""

from __future__ import annotations

import socket
import threading

import pytest

from latentloop_bridge.commands import (
    Address,
    CancelCommand,
    Command,
    NotifyCommand,
    PingCommand,
    RenderCommand,
    StatusCommand,
)
from latentloop_bridge.errors import FailCode, ProtocolError
from latentloop_bridge.protocol import (
    done_reply,
    error_reply,
    fail_reply,
    notify_reply,
    pong_reply,
    progress_reply,
    queued_reply,
    status_reply,
)
from latentloop_bridge.server import OscServer


class MiniDaemon:
    """A handler that answers like the daemon will, without rendering anything.

    render: /queued, then per variation one /progress and one /done (published); the prompt
    "fail" gets /fail busy, the prompt "boom" raises (the server answers /fail internal).
    """

    def __init__(self) -> None:
        self.server: OscServer | None = None
        self.commands: list[tuple[Command, Address]] = []
        self.errors: list[tuple[ProtocolError, Address]] = []
        self.threads: set[str] = set()
        self.event = threading.Event()

    def on_command(self, command: Command, sender: Address) -> None:
        assert self.server is not None
        self.threads.add(threading.current_thread().name)
        self.commands.append((command, sender))
        self.event.set()
        if isinstance(command, PingCommand):
            self.server.respond(sender, *pong_reply(command.request_id))
        elif isinstance(command, StatusCommand):
            reply = status_reply(command.request_id, "ready", 0, "tiny", "cpu", "0.1.0")
            self.server.respond(sender, *reply)
        elif isinstance(command, NotifyCommand):
            self._notify(command, sender)
        elif isinstance(command, RenderCommand):
            self._render(command, sender)
        elif isinstance(command, CancelCommand):
            if command.request_id == 404:
                reply = fail_reply(404, "cancel", FailCode.NOT_FOUND, "no job 404 from you")
                self.server.respond(sender, *reply)
                return
            reply = fail_reply(command.request_id, "render", FailCode.CANCELLED, "cancelled")
            self.server.publish(sender, *reply)

    def on_protocol_error(self, error: ProtocolError, sender: Address) -> None:
        assert self.server is not None
        self.threads.add(threading.current_thread().name)
        self.errors.append((error, sender))
        self.event.set()
        self.server.respond(sender, *error_reply(error))

    def _notify(self, command: NotifyCommand, sender: Address) -> None:
        assert self.server is not None
        target = command.target(sender)
        try:
            if command.subscribe:
                self.server.subscribe(target)
            else:
                self.server.unsubscribe(target)
        except ProtocolError as error:
            self.server.respond(sender, *error_reply(error))
            return
        reply = notify_reply(command.subscribe, target[1])
        self.server.send([sender, target, *self.server.fixed_targets], *reply)

    def _render(self, command: RenderCommand, sender: Address) -> None:
        assert self.server is not None
        if command.prompt == "boom":
            raise RuntimeError("boom")
        rid = command.reply_id if command.client_id is not None else 1000
        if command.prompt == "fail":
            self.server.publish(sender, *fail_reply(rid, "render", FailCode.BUSY, "queue full"))
            return
        self.server.publish(sender, *queued_reply(rid, 0))
        for variation in range(command.variations):
            self.server.publish(sender, *progress_reply(rid, 1, 2, 0.5))
            path = f"/tmp/loop_{variation}.wav"
            bpm, bars = command.bpm or 0.0, command.bars or 0.0
            seed = 0 if command.seed is None else command.seed
            if command.bpm is None:
                seconds = command.seconds or 8.0
            else:
                bars = command.bars or 4.0
                seconds = bars * (command.beats_per_bar or 4) * 60 / command.bpm
            reply = done_reply(rid, path, seconds, bpm, bars, seed + variation, variation)
            self.server.publish(sender, *reply)


@pytest.fixture
def make_server():
    """Start OscServers on 127.0.0.1:0 with a MiniDaemon; closed after the test."""
    started: list[OscServer] = []

    def make(**options: object) -> tuple[OscServer, MiniDaemon]:
        daemon = MiniDaemon()
        server = OscServer("127.0.0.1", 0, daemon, **options)  # type: ignore[arg-type]
        daemon.server = server
        server.start()
        started.append(server)
        return server, daemon

    yield make
    for server in started:
        server.close()


@pytest.fixture
def udp():
    """Make UDP sockets bound to 127.0.0.1:0 with a 10 s timeout; closed after the test.

    Replies come in milliseconds; 10 s only bounds how long a missing reply is waited for,
    with room for a loaded 2-core machine.
    """
    sockets: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10.0)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()
