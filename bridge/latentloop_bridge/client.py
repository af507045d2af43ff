"""A blocking client for latentloop: the CLI's client commands, the Python plugin stub, tests.

It sends from its own UDP socket, so the daemon's replies come back to it. Not thread-safe:
use one `Client` per thread. Replies that arrive while waiting for another one are kept (the
newest 1024) for later waits.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

from latentloop_bridge.errors import NO_ID, ProtocolError
from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import ReplyArg, encode_message
from latentloop_bridge.spec import (
    AUTH,
    AUTH_REPLY,
    CANCEL,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DONE,
    FAIL,
    NOTIFY,
    NOTIFY_REPLY,
    PING,
    PONG,
    PROGRESS,
    QUEUED,
    RENDER,
    STATUS,
    STATUS_REPLY,
)
from latentloop_bridge.values import OscArg

logger = logging.getLogger(__name__)

Reply = tuple[str, list[OscArg]]
_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class Done:
    """One `/latentloop/done`: a finished file. `bpm` and `bars` are 0 for a `seconds` render."""

    request_id: int
    path: str
    seconds: float
    bpm: float
    bars: float
    seed: int
    variation: int
    measured_bpm: float | None = None  # the tempo check's estimate (None: not measured)
    deviation_pct: float | None = None  # (measured - requested) / requested x 100

    @classmethod
    def from_args(cls, args: Sequence[OscArg]) -> Done:
        """Read the v1 arguments and the appended tempo check (later additions are ignored)."""
        _check_count(DONE, args, 7)
        measured = _float(args[7]) if len(args) > 7 else 0.0
        deviation = _float(args[8]) if len(args) > 8 else 0.0
        return cls(
            _int(args[0]), _str(args[1]), _float(args[2]), _float(args[3]), _float(args[4]),
            int(_str(args[5])), _int(args[6]), measured or None,
            deviation if measured else None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Progress:
    """One `/latentloop/progress`: sampler `step` of `total`, `fraction` 0..1 of the job."""

    request_id: int
    step: int
    total: int
    fraction: float

    @classmethod
    def from_args(cls, args: Sequence[OscArg]) -> Progress:
        """Read the v1 arguments."""
        _check_count(PROGRESS, args, 4)
        return cls(_int(args[0]), _int(args[1]), _int(args[2]), _float(args[3]))


@dataclass(frozen=True, slots=True)
class StatusReply:
    """One `/latentloop/status.reply`: daemon state, queued jobs, model, device, version."""

    request_id: int
    state: str
    queue: int
    model: str
    device: str
    version: str

    @classmethod
    def from_args(cls, args: Sequence[OscArg]) -> StatusReply:
        """Read the v1 arguments."""
        _check_count(STATUS_REPLY, args, 6)
        return cls(
            _int(args[0]), _str(args[1]), _int(args[2]), _str(args[3]), _str(args[4]),
            _str(args[5]),
        )  # fmt: skip


class ClientTimeout(TimeoutError):
    """No matching reply arrived in time (is latentloop running, on that host and port?)."""


class RequestFailed(Exception):
    """The daemon answered `/latentloop/fail <id> <command> <code> <message>`."""

    def __init__(self, request_id: int, command: str, code: str, message: str) -> None:
        super().__init__(f"{command} {request_id} failed: {code}: {message}")
        self.request_id, self.command, self.code, self.message = request_id, command, code, message


class RenderFailed(RequestFailed):
    """A render failed (`code` is e.g. `invalid`, `busy`, `cancelled`, `internal`)."""


class RenderOptions(TypedDict, total=False):
    """Canonical render parameters (`docs/protocol.md`); omitted ones take the daemon's default."""

    negative: str
    bpm: float
    bars: float
    beats_per_bar: int
    seconds: float
    key: str
    seed: int | str
    steps: int
    cfg: float
    variations: int
    replace: bool
    play: int  # queue the loop into this playback slot when it is written
    request_id: int


class Client:
    """Talk to a latentloop daemon over UDP.

    Args:
        host, port: the daemon's address.
        listen_host: where this client's socket listens for replies; default 127.0.0.1 when
            the daemon is on this machine, else all interfaces.
        listen_port: 0 for any free port; fix it to receive subscriptions on a known port.
        timeout: default wait for a reply, in seconds.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        listen_host: str | None = None,
        listen_port: int = 0,
        timeout: float = 5.0,
    ) -> None:
        self.daemon_address: tuple[str, int] = (socket.gethostbyname(host), port)
        self.timeout = timeout
        if listen_host is None:
            listen_host = "127.0.0.1" if self.daemon_address[0].startswith("127.") else "0.0.0.0"
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((listen_host, listen_port))
        except OSError:
            self._sock.close()
            raise
        self._ids = itertools.count(1)
        self._backlog: deque[Reply] = deque(maxlen=_BACKLOG)

    @property
    def local_address(self) -> tuple[str, int]:
        """This client's (host, port): where the daemon sends its replies."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def next_request_id(self) -> int:
        """A fresh request id (1, 2, ...) for this client."""
        return next(self._ids)

    def send(self, address: str, args: Sequence[ReplyArg]) -> None:
        """Send one message (`i`/`f`/`s` arguments) to the daemon."""
        self._sock.sendto(encode_message(address, args), self.daemon_address)

    # --- requests ---------------------------------------------------------------------------

    def ping(self, request_id: int | None = None, *, timeout: float | None = None) -> int:
        """Ping the daemon; return its protocol version."""
        rid = self.next_request_id() if request_id is None else request_id
        self.send(PING, [rid])
        _, args = self.wait_for(rid, (PONG,), timeout)
        return _int(args[1])

    def auth(
        self, token: str, request_id: int | None = None, *, timeout: float | None = None
    ) -> float:
        """Authorise this host with the daemon's shared token; return the grant's seconds.

        Raises:
            RequestFailed: a wrong token (`unauthorized`).
        """
        rid = self.next_request_id() if request_id is None else request_id
        self.send(AUTH, [rid, token])
        _, args = self.wait_for(rid, (AUTH_REPLY,), timeout)
        return _float(args[1])

    def status(self, request_id: int | None = None, *, timeout: float | None = None) -> StatusReply:
        """Ask for the daemon's state."""
        rid = self.next_request_id() if request_id is None else request_id
        self.send(STATUS, [rid])
        _, args = self.wait_for(rid, (STATUS_REPLY,), timeout)
        return StatusReply.from_args(args)

    def render(self, prompt: str, **options: Unpack[RenderOptions]) -> int:
        """Send a canonical render request and return its id (no wait; see `render_and_wait`)."""
        rid = options.get("request_id")
        rid = self.next_request_id() if rid is None else rid
        args: list[ReplyArg] = [rid, "prompt", prompt]
        for name, value in options.items():
            if name != "request_id":
                args += [name, _render_value(name, value)]
        self.send(RENDER, args)
        return rid

    def cancel(self, request_id: int, *, timeout: float = 0.0) -> None:
        """Cancel this client's job `request_id` (-1: all of them).

        With `timeout` > 0, wait for the job's `/fail <id> render cancelled`.

        Raises:
            RequestFailed: the daemon refused (e.g. `/fail <id> cancel not_found`), or the job
                ended otherwise (`RenderFailed`).
            ClientTimeout: nothing about `request_id` within `timeout` seconds.
        """
        self.send(CANCEL, [request_id])
        if timeout <= 0:
            return
        _, args = self.wait_for(request_id, (FAIL,), timeout)
        failure = _failure(args)
        if (failure.command, failure.code) != ("render", "cancelled"):
            raise failure

    def notify(
        self, subscribe: bool = True, port: int | None = None, *, timeout: float | None = None
    ) -> int:
        """(Un)subscribe this host at `port` (default: this client's port); return the port."""
        self.send(NOTIFY, [int(subscribe)] if port is None else [int(subscribe), port])
        _, args = self.wait_for(NO_ID, (NOTIFY_REPLY,), timeout)
        return _int(args[2])

    def render_and_wait(
        self,
        prompt: str,
        *,
        on_progress: Callable[[int, int, float], None] | None = None,
        timeout: float = 600.0,
        **options: Unpack[RenderOptions],
    ) -> list[Done]:
        """Render and wait for every variation's `/done`, sorted by variation.

        `on_progress(step, total, fraction)` is called for each `/latentloop/progress`.

        Raises:
            RenderFailed: the daemon answered `/fail` for this render.
            ClientTimeout: not all files arrived within `timeout` seconds (the job keeps going;
                `cancel` it if it is not wanted).
        """
        rid = self.render(prompt, **options)
        expected = options.get("variations", 1)
        deadline = time.monotonic() + timeout
        done: list[Done] = []
        while len(done) < expected:
            remaining = max(deadline - time.monotonic(), 0.0)
            address, args = self.wait_for(rid, (QUEUED, PROGRESS, DONE), remaining)
            if address == DONE:
                done.append(Done.from_args(args))
            elif address == PROGRESS and on_progress is not None:
                progress = Progress.from_args(args)
                on_progress(progress.step, progress.total, progress.fraction)
        return sorted(done, key=lambda item: item.variation)

    # --- replies ----------------------------------------------------------------------------

    def wait_for(
        self, request_id: int, addresses: Collection[str], timeout: float | None = None
    ) -> Reply:
        """Wait for the next reply to `request_id` at one of `addresses`.

        Raises:
            RequestFailed (RenderFailed for renders): a `/latentloop/fail` for `request_id`.
            ClientTimeout: nothing matching within `timeout` (default: the client's) seconds.
        """
        wait_s = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        wanted = set(addresses)
        while True:
            reply = self._pop(lambda r: r[0] in wanted | {FAIL} and _id_of(r) == request_id)
            if reply is not None:
                if reply[0] == FAIL and FAIL not in wanted:
                    raise _failure(reply[1])
                return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(sorted(wanted))
                raise ClientTimeout(
                    f"no {names} for request {request_id} from {self.daemon_address[0]}:"
                    f"{self.daemon_address[1]} within {wait_s:g} s (is latentloop running?)"
                )
            self._backlog.extend(self._receive(remaining))

    def replies(self, timeout: float | None = None) -> Iterator[Reply]:
        """Yield replies as they come; stop after `timeout` seconds with none (None: never)."""
        while True:
            while self._backlog:
                yield self._backlog.popleft()
            received = self._receive(timeout)
            if not received:
                return
            self._backlog.extend(received)

    def _pop(self, match: Callable[[Reply], bool]) -> Reply | None:
        for index, reply in enumerate(self._backlog):
            if match(reply):
                del self._backlog[index]
                return reply
        return None

    def _receive(self, timeout_s: float | None) -> list[Reply]:
        """The messages of the next datagram, or [] after `timeout_s` seconds (None: block)."""
        self._sock.settimeout(None if timeout_s is None else max(timeout_s, 1e-6))
        try:
            data, source = self._sock.recvfrom(65536)
        except TimeoutError:
            return []
        except ConnectionResetError:  # Windows: the daemon's port is closed
            logger.debug("the daemon at %s:%d refused a datagram", *self.daemon_address)
            return []
        try:
            return [(m.address, m.args) for m in parse_packet(data)]
        except ProtocolError as error:
            logger.debug("ignored a malformed reply from %s:%d: %s", source[0], source[1], error)
            return []


def _render_value(name: str, value: object) -> ReplyArg:
    """Encode a render option: flags as 1/0, seeds as decimal strings, numbers as they are."""
    if name == "seed" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    raise TypeError(f"render options are numbers or strings, got {type(value).__name__}")


def _id_of(reply: Reply) -> int | None:
    args = reply[1]
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def _failure(args: Sequence[OscArg]) -> RequestFailed:
    _check_count(FAIL, args, 4)
    rid, command, code, message = _int(args[0]), _str(args[1]), _str(args[2]), _str(args[3])
    kind = RenderFailed if command == "render" else RequestFailed
    return kind(rid, command, code, message)


def _check_count(address: str, args: Sequence[OscArg], count: int) -> None:
    if len(args) < count:
        raise ValueError(f"{address} has {len(args)} arguments; v1 has {count}")


def _int(value: OscArg) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected an int in a reply, got {value!r}")
    return int(value)


def _float(value: OscArg) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a float in a reply, got {value!r}")
    return float(value)


def _str(value: OscArg) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string in a reply, got {value!r}")
    return value
