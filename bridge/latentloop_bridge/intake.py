"""Datagram -> deliveries: what the receive thread does with each datagram, without sockets.

Every datagram gets an outcome: each message in it becomes a `Delivery` of a command (due at
its timetag) or of a `ProtocolError` (due now), or is logged and not answered when it is a
reply (answering replies can loop between two peers). Pure apart from logging; any thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from latentloop_bridge.commands import Address, Command
from latentloop_bridge.errors import UNKNOWN_COMMAND, FailCode, ProtocolError
from latentloop_bridge.packets import TimedMessage, parse_packet
from latentloop_bridge.protocol import parse_message
from latentloop_bridge.spec import AUTH, RENDER, REPLY_ADDRESSES

logger = logging.getLogger(__name__)

FOREIGN_REPLIES = frozenset({"/fail", "/done"})
"""scsynth-style replies: a peer answering our `/fail` with `/fail` must not start a loop."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A command or an error for the handler, from `sender`, due at monotonic `due_s`."""

    request: Command | ProtocolError
    sender: Address
    due_s: float


def admit_datagram(
    data: bytes,
    sender: Address,
    *,
    now_unix_s: float,
    now_s: float,
    max_datagram: int,
    max_ahead_s: float,
) -> list[Delivery]:
    """Parse and check one datagram; `now_unix_s` is `time.time()`, `now_s` `time.monotonic()`."""
    if len(data) > max_datagram:
        text = f"datagram is larger than the {max_datagram}-byte limit"
        return [_rejected(ProtocolError(FailCode.INVALID, text, UNKNOWN_COMMAND), sender, now_s)]
    try:
        messages = parse_packet(data)
    except ProtocolError as error:
        return [_rejected(error, sender, now_s)]
    if not messages:
        logger.debug("empty bundle from %s:%d: nothing to do", *sender)
    deliveries = (_admit(m, sender, now_unix_s, now_s, max_ahead_s) for m in messages)
    return [delivery for delivery in deliveries if delivery is not None]


def _admit(
    message: TimedMessage, sender: Address, now_unix_s: float, now_s: float, max_ahead_s: float
) -> Delivery | None:
    """Check one message; schedule it at its timetag, or its error now."""
    logger.debug(
        "from %s:%d: %s %s",
        *sender,
        message.address,
        shown(redacted(message.address, message.args)),
    )
    if message.address in REPLY_ADDRESSES or message.address in FOREIGN_REPLIES:
        logger.warning(
            "ignored %s from %s:%d: it is a reply, and answering replies can loop",
            message.address,
            *sender,
        )
        return None
    try:
        command = parse_message(message.address, message.args)
    except ProtocolError as error:
        return _rejected(error, sender, now_s)
    delay_s = 0.0 if message.timetag_unix is None else message.timetag_unix - now_unix_s
    if delay_s > max_ahead_s:
        text = f"timetag is {delay_s:.0f} s ahead; the limit is {max_ahead_s:.0f} s"
        too_far = ProtocolError(FailCode.INVALID, text, command.command, command.reply_id)
        return _rejected(too_far, sender, now_s)
    if delay_s > 0:
        logger.debug("%s from %s:%d scheduled in %.3f s", command.command, *sender, delay_s)
    return Delivery(command, sender, now_s + max(delay_s, 0.0))


def _rejected(error: ProtocolError, sender: Address, now_s: float) -> Delivery:
    logger.warning("rejected input from %s:%d: %s", sender[0], sender[1], error)
    return Delivery(error, sender, now_s)


def stopping(delivery: Delivery) -> Delivery:
    """A command still waiting at shutdown becomes a `stopping` error for its sender."""
    request = delivery.request
    if isinstance(request, ProtocolError):
        return delivery
    text = "latentloop stopped before this message's timetag"
    error = ProtocolError(FailCode.STOPPING, text, request.command, request.reply_id)
    return Delivery(error, delivery.sender, delivery.due_s)


def request_ids(request: Command | ProtocolError) -> tuple[int, str]:
    """The (request id, command) a `/fail` about `request` carries."""
    if isinstance(request, ProtocolError):
        return request.request_id, request.command
    return request.reply_id, request.command


def redacted(address: str, args: Sequence[object]) -> list[object]:
    """`args` with the shared token hidden (auth's second argument, render's `token` value)."""
    shown_args = list(args)
    if address == AUTH and len(shown_args) >= 2:
        shown_args[1] = "***"
    elif address == RENDER:
        for index, value in enumerate(shown_args[:-1]):
            if value == "token":
                shown_args[index + 1] = "***"
    return shown_args


def shown(args: Sequence[object]) -> str:
    """Arguments for a log line, cut to 200 characters."""
    text = repr(list(args))
    return text if len(text) <= 200 else text[:197] + "..."
