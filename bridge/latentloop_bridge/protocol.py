"""latentloop's OSC protocol v1: requests -> `Command`s, replies -> bytes (`docs/protocol.md`).

This module is the protocol's front door: it parses requests (`parse_message`), builds replies
(`*_reply` -> `(address, args)`) and encodes them (`encode_message`, `i`/`f`/`s` only), and
re-exports the vocabulary defined in the small modules beside it. Pure functions, any thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pythonosc.osc_message_builder import OscMessageBuilder

from latentloop_bridge import playback as pb
from latentloop_bridge.commands import (
    Address,
    AudioCommand,
    AuthCommand,
    CancelCommand,
    Command,
    GainCommand,
    LinkCommand,
    NotifyCommand,
    PingCommand,
    PlayCommand,
    RenderCommand,
    StatusCommand,
    StopCommand,
    TempoCommand,
    TransportCommand,
)
from latentloop_bridge.errors import NO_ID, UNKNOWN_COMMAND, FailCode, ProtocolError
from latentloop_bridge.packets import (
    IMMEDIATELY,
    TimedMessage,
    ntp_to_unix,
    parse_packet,
    unix_to_ntp,
)
from latentloop_bridge.render_args import parse_canonical, parse_positional
from latentloop_bridge.spec import (
    AUDIO,
    AUTH,
    AUTH_REPLY,
    CANCEL,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DONE,
    FAIL,
    GAIN,
    INT32_MAX,
    INT32_MIN,
    LINK,
    MAX_TOKEN_CHARS,
    NOTIFY,
    NOTIFY_REPLY,
    PING,
    PLAY,
    PONG,
    PREFIX,
    PROGRESS,
    PROTOCOL_VERSION,
    QUEUED,
    RENDER,
    REPLY_ADDRESSES,
    REQUEST_ADDRESSES,
    RETRY,
    STATUS,
    STATUS_REPLY,
    STOP,
    SUGGESTED_REPLY_PORT,
    TEMPO,
    TRANSPORT,
    command_name,
)
from latentloop_bridge.values import (
    InvalidValue,
    OscArg,
    as_flag,
    as_port,
    as_request_id,
    as_text,
    describe,
    is_number,
)

__all__ = [
    "Address", "CancelCommand", "Command", "NotifyCommand", "PingCommand", "RenderCommand",
    "StatusCommand", "NO_ID", "UNKNOWN_COMMAND", "FailCode", "ProtocolError",
    "IMMEDIATELY", "TimedMessage", "ntp_to_unix", "parse_packet", "unix_to_ntp", "CANCEL",
    "DEFAULT_HOST", "DEFAULT_PORT", "DONE", "FAIL", "NOTIFY", "NOTIFY_REPLY", "PING", "PONG",
    "RETRY",
    "PREFIX", "PROGRESS", "PROTOCOL_VERSION", "QUEUED", "RENDER", "REPLY_ADDRESSES",
    "REQUEST_ADDRESSES", "STATUS", "STATUS_REPLY", "SUGGESTED_REPLY_PORT", "command_name",
    "OscArg", "ReplyArg", "Reply", "parse_message", "encode_message", "queued_reply",
    "progress_reply", "done_reply", "fail_reply", "error_reply", "status_reply", "pong_reply",
    "notify_reply", "MAX_FAIL_MESSAGE_CHARS", "AudioCommand", "GainCommand", "LinkCommand",
    "PlayCommand", "StopCommand", "TempoCommand", "TransportCommand", "encode_bundle",
    "play_reply", "stop_reply", "gain_reply", "tempo_reply", "transport_reply", "link_reply",
    "audio_reply", "playing_notice", "bar_notice",
    "AUTH", "AUTH_REPLY", "AuthCommand", "auth_reply",
]  # fmt: skip

play_reply, stop_reply, gain_reply = pb.play_reply, pb.stop_reply, pb.gain_reply
tempo_reply, transport_reply, link_reply = pb.tempo_reply, pb.transport_reply, pb.link_reply
audio_reply, playing_notice, bar_notice = pb.audio_reply, pb.playing_notice, pb.bar_notice

ReplyArg = int | float | str
Reply = tuple[str, list[ReplyArg]]
"""`(address, args)`, ready for `OscServer.reply`/`publish` or `encode_message`."""

MAX_FAIL_MESSAGE_CHARS = 500
_FLOAT32_MAX = 3.4028234663852886e38


# --- requests ---------------------------------------------------------------------------------


def parse_message(address: str, args: Sequence[OscArg]) -> Command:
    """Check one request message and return its command.

    Raises:
        ProtocolError: `unknown` for an address that is not a request, `invalid` for wrong,
            missing or out-of-range arguments; with the request id when one could be read.
    """
    parse = _PARSERS.get(address)
    if parse is None:
        raise ProtocolError(
            FailCode.UNKNOWN, _unknown(address), command_name(address), _leading_id(args)
        )
    try:
        return parse(args)
    except InvalidValue as error:
        request_id = _id_hint(address, args)
        raise ProtocolError(
            FailCode.INVALID, str(error), command_name(address), request_id
        ) from None


def _parse_render(args: Sequence[OscArg]) -> RenderCommand:
    if len(args) < 2:
        raise InvalidValue(
            f"render needs at least 2 arguments, got {len(args)}: "
            "render <id> <name> <value> ... or render <bpm> <bars> <prompt words...>"
        )
    if isinstance(args[1], str):
        try:
            client_id = as_request_id(args[0], allow_none_id=False)
        except InvalidValue as error:
            raise InvalidValue(f"{error} (form: render <id> <name> <value> ...)") from None
        return parse_canonical(client_id, args[1:])
    if is_number(args[1]):
        return parse_positional(args)
    raise InvalidValue(
        "render's second argument must be a parameter name (string) or bars (number), "
        f"got {describe(args[1])}"
    )


def _parse_cancel(args: Sequence[OscArg]) -> CancelCommand:
    _check_count(args, 1, 1, "cancel <id> (-1: all your jobs)")
    return CancelCommand(as_request_id(args[0], allow_none_id=True))


def _parse_status(args: Sequence[OscArg]) -> StatusCommand:
    _check_count(args, 0, 1, "status [<id>]")
    return StatusCommand(as_request_id(args[0], allow_none_id=True) if args else NO_ID)


def _parse_ping(args: Sequence[OscArg]) -> PingCommand:
    _check_count(args, 0, 1, "ping [<id>]")
    return PingCommand(as_request_id(args[0], allow_none_id=True) if args else NO_ID)


def _parse_notify(args: Sequence[OscArg]) -> NotifyCommand:
    _check_count(args, 1, 2, "notify <1|0> [<port>]")
    port = as_port("port", args[1]) if len(args) == 2 else None
    return NotifyCommand(as_flag("notify flag", args[0]), port)


def _parse_auth(args: Sequence[OscArg]) -> AuthCommand:
    _check_count(args, 2, 2, "auth <id> <token>")
    token = as_text("token", args[1], MAX_TOKEN_CHARS)
    return AuthCommand(as_request_id(args[0], allow_none_id=True), token)


_PARSERS: dict[str, Callable[[Sequence[OscArg]], Command]] = {
    RENDER: _parse_render,
    CANCEL: _parse_cancel,
    STATUS: _parse_status,
    PING: _parse_ping,
    NOTIFY: _parse_notify,
    AUTH: _parse_auth,
    PLAY: pb.parse_play,
    STOP: pb.parse_stop,
    GAIN: pb.parse_gain,
    TEMPO: pb.parse_tempo,
    TRANSPORT: pb.parse_transport,
    LINK: pb.parse_link,
    AUDIO: pb.parse_audio,
}


def _check_count(args: Sequence[OscArg], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise InvalidValue(f"usage: {usage}; got {len(args)} arguments")


def _unknown(address: str) -> str:
    if address in REPLY_ADDRESSES:
        return f"{address} is a reply, not a request"
    requests = ", ".join(sorted(command_name(a) for a in REQUEST_ADDRESSES))
    if address.startswith(PREFIX):
        return f"unknown address {address}; the requests are {requests}"
    return f"unknown address {address}; latentloop's requests are {PREFIX}{{{requests}}}"


def _leading_id(args: Sequence[OscArg]) -> int:
    """The first argument as a request id when it can be one, else -1."""
    try:
        return as_request_id(args[0], allow_none_id=True) if args else NO_ID
    except InvalidValue:
        return NO_ID


def _id_hint(address: str, args: Sequence[OscArg]) -> int:
    """The id to echo in an `invalid` reply: none for notify and for positional renders."""
    if address == NOTIFY or (address == RENDER and len(args) >= 2 and is_number(args[1])):
        return NO_ID
    return _leading_id(args)


# --- replies ----------------------------------------------------------------------------------


def queued_reply(request_id: int, position: int) -> Reply:
    """`/latentloop/queued <id> <position>`: jobs ahead of this one (0: it starts next)."""
    return QUEUED, [request_id, position]


def progress_reply(request_id: int, step: int, total: int, fraction: float | None = None) -> Reply:
    """`/latentloop/progress <id> <step> <total> <fraction 0..1 of the whole job>`.

    `fraction` defaults to `step / total` (a one-variation job).
    """
    if fraction is None:
        fraction = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    return PROGRESS, [request_id, step, total, float(fraction)]


def done_reply(
    request_id: int,
    path: str,
    seconds: float,
    bpm: float,
    bars: float,
    seed: int | str,
    variation: int,
    measured_bpm: float | None = None,
    deviation_pct: float | None = None,
) -> Reply:
    """`/latentloop/done <id> <path> <seconds> <bpm> <bars> <seed s> <variation>
    <measured_bpm f> <deviation f>`, one per file.

    The seed goes out as a decimal string (Pd's 24-bit float mantissa would corrupt it). The
    two tempo-check values (appended to the v1 shape) are 0 when the tempo was not measured.
    """
    return DONE, [
        request_id, path, float(seconds), float(bpm), float(bars), str(seed), variation,
        float(measured_bpm or 0.0), float(deviation_pct or 0.0),
    ]  # fmt: skip


def retry_reply(request_id: int, attempt: int, measured_bpm: float) -> Reply:
    """`/latentloop/retry <id> <attempt i> <measured_bpm f>`: the tempo was off; re-rendering
    with a new seed (attempt 1 is the first re-render)."""
    return RETRY, [request_id, attempt, float(measured_bpm)]


def fail_reply(request_id: int, command: str, code: str, message: str) -> Reply:
    """`/latentloop/fail <id> <command> <code> <message>` (message cut to 500 characters)."""
    if len(message) > MAX_FAIL_MESSAGE_CHARS:
        message = message[: MAX_FAIL_MESSAGE_CHARS - 3] + "..."
    return FAIL, [request_id, command, str(code), message]


def error_reply(error: ProtocolError) -> Reply:
    """The `/latentloop/fail` reply for a `ProtocolError`."""
    return fail_reply(error.request_id, error.command, error.code, error.message)


def status_reply(
    request_id: int, state: str, queue: int, model: str, device: str, version: str
) -> Reply:
    """`/latentloop/status.reply <id> <state> <queue> <model> <device> <version>`."""
    return STATUS_REPLY, [request_id, state, queue, model, device, version]


def pong_reply(request_id: int, version: int = PROTOCOL_VERSION) -> Reply:
    """`/latentloop/pong <id> <protocol version>`."""
    return PONG, [request_id, version]


def auth_reply(request_id: int, ttl_s: int) -> Reply:
    """`/latentloop/auth.reply <id> <seconds>`: the sender's host is authorised that long."""
    return AUTH_REPLY, [request_id, ttl_s]


def notify_reply(subscribed: bool, port: int) -> Reply:
    """`/latentloop/notify.reply -1 <1|0> <port>`: the subscription's state after the request."""
    return NOTIFY_REPLY, [NO_ID, int(subscribed), port]


def encode_message(address: str, args: Sequence[ReplyArg]) -> bytes:
    """Encode one OSC message with only `i` (int32), `f` (float32) and `s` arguments.

    Raises:
        TypeError: an argument is not int, float or str (bools are refused too).
        ValueError: an int outside int32, a float outside float32, or a NUL in a string.
    """
    if not address.startswith("/"):
        raise ValueError(f"OSC address must start with '/', got {address!r}")
    builder = OscMessageBuilder(address)
    for index, value in enumerate(args):
        builder.add_arg(value, _reply_type(address, index, value))
    return builder.build().dgram


def encode_bundle(unix_s: float, address: str, args: Sequence[ReplyArg]) -> bytes:
    """One message in an OSC bundle timetagged `unix_s` (seconds since 1970, as NTP 32.32)."""
    message = encode_message(address, args)
    head = b"#bundle\x00" + unix_to_ntp(unix_s).to_bytes(8, "big")
    return head + len(message).to_bytes(4, "big") + message


def _reply_type(address: str, index: int, value: ReplyArg) -> str:
    where = f"argument {index} of {address}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{where} must be int, float or str, got {type(value).__name__}")
    if isinstance(value, int):
        if not INT32_MIN <= value <= INT32_MAX:
            raise ValueError(f"{where} does not fit in int32: {value}")
        return "i"
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise ValueError(f"{where} does not fit in float32: {value}")
        return "f"
    if "\x00" in value:
        raise ValueError(f"{where} contains a NUL character")
    return "s"
