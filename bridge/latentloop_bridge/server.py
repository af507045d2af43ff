"""UDP transport for protocol v1: receive, parse, schedule, dispatch to the daemon, send replies.

Threads:
    receive thread: reads datagrams, parses them (`packets`, `protocol`) and queues each
        command or error with its due time; it never sleeps for a timetag and never runs the
        handler, so a slow handler or a future bundle cannot stall reception.
    dispatch thread (the scheduler): calls the handler, one item at a time, in order of due
        time then arrival; immediate messages are due on arrival.
Replies may be sent from any thread; they leave from the listening socket, so hosts that
filter replies by source port (sclang's `OSCFunc` with a `NetAddr`) accept them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

from latentloop_bridge.commands import Address, Command
from latentloop_bridge.errors import FailCode, ProtocolError
from latentloop_bridge.intake import Delivery, admit_datagram, request_ids, shown, stopping
from latentloop_bridge.protocol import (
    ReplyArg,
    encode_bundle,
    encode_message,
    error_reply,
    fail_reply,
)
from latentloop_bridge.scheduler import Scheduler
from latentloop_bridge.spec import (
    MAX_DATAGRAM_BYTES,
    MAX_PARKED,
    MAX_PARKED_PER_SENDER,
    MAX_SCHEDULE_AHEAD_S,
    MAX_SCHEDULED,
    MAX_SUBSCRIBERS,
)

logger = logging.getLogger(__name__)

_RECEIVE_BUFFER_BYTES = 1 << 20
DROP_LOG_INTERVAL_S = 10.0
"""At most one log line per interval about datagrams dropped by the allowlist."""


class CommandHandler(Protocol):
    """What the daemon implements. Both methods run on the server's dispatch thread, one call
    at a time, and must return quickly (enqueue work, reply, return); they may call
    `OscServer.reply`/`respond`/`publish`/`subscribe`. An exception is logged and answered with
    `/fail <id> <command> internal <message>`.
    """

    def on_command(self, command: Command, sender: Address) -> None:
        """Handle a checked request from `sender` (due now: bundles were already waited for)."""

    def on_protocol_error(self, error: ProtocolError, sender: Address) -> None:
        """Handle a rejected datagram or message; normally reply `error_reply(error)`."""


class BindError(OSError):
    """The server could not listen on its address; the message says why in plain words."""


class OscServer:
    """The daemon's OSC endpoint on one IPv4 UDP socket.

    Args:
        host: address to listen on; "127.0.0.1" (default in the daemon) keeps it local,
            "0.0.0.0" opens it to the network (logged as a warning).
        port: UDP port; 0 picks a free one (see `bound_address`).
        handler: receives commands and protocol errors.
        fixed_targets: endpoints that get every reply (for Max `[udpsend]`, which cannot
            receive); host names are resolved once, here.
        max_datagram: larger datagrams are `invalid`, in bytes.
        max_subscribers: bound on `/latentloop/notify` subscriptions.
        max_scheduled: bound on messages waiting for dispatch; beyond it the server itself
            answers `/fail ... busy`.
        max_schedule_ahead_s: bundles timetagged further ahead are `invalid`.
        allow: source networks ("192.168.1.0/24", "10.0.0.7"); datagrams from other sources
            are dropped unanswered (a reply to a forged source would make the daemon a
            reflector), counted (`dropped`) and logged at most once per `DROP_LOG_INTERVAL_S`.
            Empty: every source (the daemon's config requires a list off loopback).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: CommandHandler,
        *,
        fixed_targets: Sequence[Address] = (),
        max_datagram: int = MAX_DATAGRAM_BYTES,
        max_subscribers: int = MAX_SUBSCRIBERS,
        max_scheduled: int = MAX_SCHEDULED,
        max_schedule_ahead_s: float = MAX_SCHEDULE_AHEAD_S,
        allow: Sequence[str] = (),
    ) -> None:
        self._host, self._port = host, port
        self._allow = tuple(ipaddress.IPv4Network(n, strict=False) for n in allow)
        self._dropped = 0
        self._dropped_logged = 0
        self._drop_logged_s = -math.inf
        self._handler = handler
        self._fixed = tuple(dict.fromkeys(_resolve(target) for target in fixed_targets))
        self._max_datagram = max_datagram
        self._max_subscribers = max_subscribers
        self._max_ahead_s = max_schedule_ahead_s
        self._subscribers: list[Address] = []
        self._lock = threading.Lock()  # subscribers and lifecycle state
        self._send_lock = threading.Lock()  # the socket, against close() during a send
        self._sock: socket.socket | None = None
        self._bound: Address | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._closing = False
        self._receiver = threading.Thread(
            target=self._receive_loop, name="latentloop-osc-receive", daemon=True
        )
        self._parked: Counter[Address] = Counter()  # future-timetagged deliveries waiting
        self._parked_ids: set[int] = set()
        self._parked_lock = threading.Lock()
        self._scheduler: Scheduler[Delivery] = Scheduler(
            self._dispatch, max_items=max_scheduled, name="latentloop-osc-dispatch"
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket and start the receive and dispatch threads.

        Raises:
            BindError: promptly, e.g. "port 7878 on 127.0.0.1 is already in use (another
                latentloop?)". The socket is exclusive: no SO_REUSEADDR.
        """
        with self._lock:
            if self._sock is not None or self._closing:
                raise RuntimeError("an OscServer can be started once")
            self._sock = _bind(self._host, self._port)
            host, port = self._sock.getsockname()[:2]
            self._bound = (str(host), int(port))
            self._wake = socket.socketpair()
        self._scheduler.start()
        self._receiver.start()
        logger.info("listening for OSC on udp %s:%d", *self._bound)
        if not _is_loopback(self._bound[0]):
            logger.warning(
                "udp %s:%d is reachable from the network: anyone who can reach it can queue "
                "renders; use 127.0.0.1 unless you need this",
                *self._bound,
            )

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop receiving, stop dispatching, close the socket; waits at most ~2 * `timeout_s`.

        Messages still waiting (future bundles) reach the handler as `stopping` errors, so
        their senders get an answer. Safe to call twice, and from the handler.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            started = self._sock is not None
        if not started:
            return
        assert self._wake is not None and self._bound is not None
        self._wake[1].send(b"\x00")
        if self._receiver is not threading.current_thread():
            self._receiver.join(timeout_s)
        for delivery in self._scheduler.close(timeout_s):
            self._dispatch(stopping(delivery))
        with self._send_lock:
            assert self._sock is not None
            self._sock.close()
            for end in self._wake:
                end.close()
        logger.info("stopped listening on udp %s:%d", *self._bound)

    def __enter__(self) -> OscServer:
        if self._sock is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def bound_address(self) -> Address:
        """The (host, port) actually bound, e.g. the real port when started with port 0."""
        if self._bound is None:
            raise RuntimeError("the server is not started")
        return self._bound

    @property
    def fixed_targets(self) -> tuple[Address, ...]:
        """Endpoints that get every reply, resolved to IPv4 addresses."""
        return self._fixed

    @property
    def dropped(self) -> int:
        """Datagrams dropped because their source is outside `allow`."""
        return self._dropped

    def is_allowed(self, host: str) -> bool:
        """Whether datagrams from `host` are read (always, when no allowlist is set)."""
        if not self._allow:
            return True
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return any(address in network for network in self._allow)

    @property
    def subscribers(self) -> tuple[Address, ...]:
        """Current `/latentloop/notify` subscriptions, oldest first."""
        with self._lock:
            return tuple(self._subscribers)

    # --- sending (any thread) -------------------------------------------------------------

    def reply(self, to: Address, address: str, args: Sequence[ReplyArg]) -> bool:
        """Send one message to one endpoint; False (and a warning) when it could not be sent."""
        return self.send([to], address, args) == 1

    def respond(self, sender: Address, address: str, args: Sequence[ReplyArg]) -> int:
        """Answer a request: to its sender and the fixed targets. Returns datagrams sent."""
        return self.send([sender, *self._fixed], address, args)

    def publish(self, job_sender: Address, address: str, args: Sequence[ReplyArg]) -> int:
        """Report on a job: to its sender, every subscriber and the fixed targets."""
        return self.send([job_sender, *self.subscribers, *self._fixed], address, args)

    def notify(self, address: str, args: Sequence[ReplyArg], at_unix_s: float | None = None) -> int:
        """A notification no request caused: to the subscribers and the fixed targets; in a
        bundle timetagged ``at_unix_s`` when given (e.g. `/latentloop/bar` at the downbeat)."""
        targets = [*self.subscribers, *self._fixed]
        if at_unix_s is None:
            return self.send(targets, address, args)
        data = encode_bundle(at_unix_s, address, args)
        return sum(self._send_datagram(data, target) for target in dict.fromkeys(targets))

    def send(self, targets: Iterable[Address], address: str, args: Sequence[ReplyArg]) -> int:
        """Send one message to each distinct target, from the listening socket.

        Raises:
            TypeError, ValueError: the arguments are not `i`/`f`/`s`-encodable (a bug).
        """
        data = encode_message(address, args)
        sent = 0
        for target in dict.fromkeys(targets):
            sent += self._send_datagram(data, target)
            logger.debug("to %s:%d: %s %s", target[0], target[1], address, shown(args))
        return sent

    def _send_datagram(self, data: bytes, target: Address) -> int:
        with self._send_lock:
            if self._sock is None or self._sock.fileno() < 0:
                logger.warning("not sent to %s:%d: the OSC server is not running", *target)
                return 0
            try:
                self._sock.sendto(data, target)
            except OSError as error:
                logger.warning("could not send to %s:%d: %s", target[0], target[1], error)
                return 0
        return 1

    # --- subscriptions (any thread) -------------------------------------------------------

    def subscribe(self, target: Address) -> bool:
        """Add a subscriber; True if new, False if it was already subscribed.

        Raises:
            ProtocolError: `busy` when `max_subscribers` are subscribed; `invalid` for
                latentloop's own address (replies would loop back).
            ValueError: a port outside 1..65535 or an unresolvable host (a bug: `notify`
                requests are checked before they get here).
        """
        target = _resolve(target)
        if self._is_own(target):
            raise ProtocolError(
                FailCode.INVALID, "cannot subscribe latentloop's own port", "notify"
            )
        with self._lock:
            if target in self._subscribers:
                return False
            if len(self._subscribers) >= self._max_subscribers:
                message = f"{self._max_subscribers} subscribers already; unsubscribe one first"
                raise ProtocolError(FailCode.BUSY, message, "notify")
            self._subscribers.append(target)
        logger.info("subscribed %s:%d to replies", *target)
        return True

    def unsubscribe(self, target: Address) -> bool:
        """Remove a subscriber; False if it was not subscribed."""
        target = _resolve(target)
        with self._lock:
            if target not in self._subscribers:
                return False
            self._subscribers.remove(target)
        logger.info("unsubscribed %s:%d", *target)
        return True

    # --- receive thread -------------------------------------------------------------------

    def _receive_loop(self) -> None:
        assert self._sock is not None and self._wake is not None
        sock, wake = self._sock, self._wake[0]
        while not self._closing:
            try:
                readable, _, _ = select.select([sock, wake], [], [])
            except (OSError, ValueError):  # closed under us after a join timeout
                return
            if wake in readable:
                return
            try:
                data, source = sock.recvfrom(self._max_datagram + 1)
            except ConnectionResetError:  # Windows: ICMP port unreachable from an earlier send
                logger.debug("a reply was refused by its receiver (port closed)")
                continue
            except OSError as error:
                logger.warning("receive failed: %s", error)
                time.sleep(0.01)  # not a timetag wait: avoid spinning on a persistent error
                continue
            sender = (str(source[0]), int(source[1]))
            try:
                self._on_datagram(data, sender)
            except Exception:
                logger.exception("unexpected error on a datagram from %s:%d", *sender)

    def _on_datagram(self, data: bytes, sender: Address) -> None:
        if not self.is_allowed(sender[0]):
            self._drop(sender)
            return
        if self._is_own(sender):
            logger.warning("ignored a datagram from latentloop's own port %s:%d", *sender)
            return
        deliveries = admit_datagram(
            data,
            sender,
            now_unix_s=time.time(),
            now_s=time.monotonic(),
            max_datagram=self._max_datagram,
            max_ahead_s=self._max_ahead_s,
        )
        for delivery in deliveries:
            self._enqueue(delivery)

    def _drop(self, sender: Address) -> None:
        """Count a datagram from outside the allowlist; log a summary now and then (never reply:
        the source address may be forged)."""
        self._dropped += 1
        now = time.monotonic()
        if now - self._drop_logged_s >= DROP_LOG_INTERVAL_S:
            new = self._dropped - self._dropped_logged
            self._drop_logged_s, self._dropped_logged = now, self._dropped
            logger.warning(
                "dropped %d datagram(s) from sources outside osc.allow (%d in all; latest "
                "from %s:%d)",
                new,
                self._dropped,
                *sender,
            )

    def _enqueue(self, delivery: Delivery) -> None:
        request = delivery.request
        future = not isinstance(request, ProtocolError) and delivery.due_s > time.monotonic()
        if future and not self._park(delivery):
            assert not isinstance(request, ProtocolError)
            message = (
                f"too many timetagged messages waiting (at most {MAX_PARKED_PER_SENDER} per "
                f"sender, {MAX_PARKED} in all)"
            )
            self.respond(
                delivery.sender,
                *fail_reply(request.reply_id, request.command, FailCode.BUSY, message),
            )
            return
        if self._scheduler.submit(delivery.due_s, delivery):
            return
        self._unpark(delivery)
        if isinstance(request, ProtocolError):
            reply = error_reply(request)
        else:
            message = f"latentloop's dispatch queue is full ({self._scheduler.pending} waiting)"
            reply = fail_reply(request.reply_id, request.command, FailCode.BUSY, message)
        logger.warning("dispatch queue full; answered %s:%d directly", *delivery.sender)
        self.respond(delivery.sender, *reply)

    # --- dispatch thread ------------------------------------------------------------------

    def _park(self, delivery: Delivery) -> bool:
        """Count a future-timetagged delivery against its sender's and the global bound."""
        with self._parked_lock:
            if self._parked[delivery.sender] >= MAX_PARKED_PER_SENDER:
                return False
            if sum(self._parked.values()) >= MAX_PARKED:
                return False
            self._parked[delivery.sender] += 1
            self._parked_ids.add(id(delivery))
            return True

    def _unpark(self, delivery: Delivery) -> None:
        with self._parked_lock:
            if id(delivery) in self._parked_ids:
                self._parked_ids.discard(id(delivery))
                self._parked[delivery.sender] -= 1
                if self._parked[delivery.sender] <= 0:
                    del self._parked[delivery.sender]

    def _dispatch(self, delivery: Delivery) -> None:
        self._unpark(delivery)
        request, sender = delivery.request, delivery.sender
        late_s = time.monotonic() - delivery.due_s
        if late_s > 0.05:
            logger.debug(
                "dispatching a message from %s:%d %.3f s late", sender[0], sender[1], late_s
            )
        try:
            if isinstance(request, ProtocolError):
                self._handler.on_protocol_error(request, sender)
            else:
                self._handler.on_command(request, sender)
        except Exception as exc:
            logger.exception("the handler failed on a message from %s:%d", *sender)
            request_id, command = request_ids(request)
            message = f"internal error in {command}: {type(exc).__name__}: {exc}"
            self.respond(sender, *fail_reply(request_id, command, FailCode.INTERNAL, message))

    def _is_own(self, address: Address) -> bool:
        bound = self._bound
        if bound is None or address[1] != bound[1]:
            return False
        return address[0] == bound[0] or (bound[0] == "0.0.0.0" and _is_loopback(address[0]))


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)  # Windows: no port sharing
        if exclusive is not None:
            sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
        except OSError:
            logger.debug("could not enlarge the receive buffer")
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise BindError(error.errno, _bind_message(host, port, error)) from error
    return sock


def _bind_message(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another latentloop?)"
    if error.errno == errno.EACCES:
        return f"no permission to listen on {host}:{port}"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}:{port}: {host} is not an address of this machine"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def _resolve(target: Address) -> Address:
    """Validate an endpoint and resolve its host to an IPv4 address (for de-duplication)."""
    host, port = target
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port!r}")
    try:
        return (socket.gethostbyname(host), port)
    except OSError as error:
        raise ValueError(f"cannot resolve reply host {host!r}: {error}") from error


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
