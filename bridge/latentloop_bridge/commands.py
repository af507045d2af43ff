"""Checked requests: one frozen dataclass per request address (built by `parse_message`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from latentloop_bridge.errors import NO_ID

Address = tuple[str, int]
"""A UDP endpoint: (IPv4 host, port), as `socket.recvfrom` returns it."""


@dataclass(frozen=True, slots=True)
class RenderCommand:
    """`/latentloop/render`: a loop (`bpm`, `bars`) or a clip (`seconds`).

    At most one length is given: `seconds`, or `bpm` with or without `bars`. None means the
    daemon's default: `bars` (`render.bars`) when only `bpm` is given, `seconds`
    (`render.seconds`) when neither is, `beats_per_bar`, `steps`, `cfg` (model defaults).
    `seed` None means random. `client_id` is None for the positional form: the daemon assigns
    the id. `key` ("F minor") is carried for the loops issue.
    """

    command: ClassVar[str] = "render"

    client_id: int | None
    prompt: str
    negative: str = ""
    bpm: float | None = None
    bars: float | None = None
    beats_per_bar: int | None = None
    seconds: float | None = None
    key: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    variations: int = 1
    replace: bool = False
    play: int | None = None  # queue the result into this playback slot
    token: str | None = field(default=None, repr=False)  # the shared token, when sent with it

    @property
    def reply_id(self) -> int:
        """The id to echo before the daemon assigns one: the client's, else -1."""
        return NO_ID if self.client_id is None else self.client_id


@dataclass(frozen=True, slots=True)
class CancelCommand:
    """`/latentloop/cancel <id>`: cancel the sender's job `request_id`; -1 cancels all of them."""

    command: ClassVar[str] = "cancel"

    request_id: int

    @property
    def reply_id(self) -> int:
        """The id to echo in replies."""
        return self.request_id


@dataclass(frozen=True, slots=True)
class StatusCommand:
    """`/latentloop/status [<id>]`: ask for `/latentloop/status.reply` (id -1 when omitted)."""

    command: ClassVar[str] = "status"

    request_id: int = NO_ID

    @property
    def reply_id(self) -> int:
        """The id to echo in replies."""
        return self.request_id


@dataclass(frozen=True, slots=True)
class PingCommand:
    """`/latentloop/ping [<id>]`: ask for `/latentloop/pong <id> <protocol version>`."""

    command: ClassVar[str] = "ping"

    request_id: int = NO_ID

    @property
    def reply_id(self) -> int:
        """The id to echo in replies."""
        return self.request_id


@dataclass(frozen=True, slots=True)
class NotifyCommand:
    """`/latentloop/notify <1|0> [<port>]`: (un)subscribe the sender's host at `port`.

    `port` None means the sender's own source port.
    """

    command: ClassVar[str] = "notify"

    subscribe: bool
    port: int | None = None

    @property
    def reply_id(self) -> int:
        """Notify carries no id: replies use -1."""
        return NO_ID

    def target(self, sender: Address) -> Address:
        """The endpoint to (un)subscribe: the sender's host at `port` or at its own port."""
        return (sender[0], sender[1] if self.port is None else self.port)


@dataclass(frozen=True, slots=True)
class PlayCommand:
    """`/latentloop/play <id> <what> [slot] [quantize] [variation]`.

    `what` is a job id of the sender's (`job_id`, its file number `variation`) or a path under
    the output folder (`path`). None means the default: slot 0, the daemon's quantization.
    """

    command: ClassVar[str] = "play"

    request_id: int
    job_id: int | None = None
    path: str | None = None
    slot: int = 0
    quantize: str | None = None
    variation: int = 0

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class StopCommand:
    """`/latentloop/stop <id> [slot] [quantize]`: slot None (omitted or -1) stops all."""

    command: ClassVar[str] = "stop"

    request_id: int
    slot: int | None = None
    quantize: str | None = None

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class GainCommand:
    """`/latentloop/gain <id> <slot> <db>`."""

    command: ClassVar[str] = "gain"

    request_id: int
    slot: int
    db: float

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class TempoCommand:
    """`/latentloop/tempo <id> <bpm> [beats_per_bar]`: from the next bar (Link: the session's)."""

    command: ClassVar[str] = "tempo"

    request_id: int
    bpm: float
    beats_per_bar: int | None = None

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class TransportCommand:
    """`/latentloop/transport <id> <1|0>`: start or stop the transport."""

    command: ClassVar[str] = "transport"

    request_id: int
    run: bool

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class LinkCommand:
    """`/latentloop/link <id> <1|0>`: join or leave the Ableton Link session."""

    command: ClassVar[str] = "link"

    request_id: int
    enabled: bool

    @property
    def reply_id(self) -> int:
        return self.request_id


@dataclass(frozen=True, slots=True)
class AudioCommand:
    """`/latentloop/audio <id> restart`: re-scan the devices and restart the stream."""

    command: ClassVar[str] = "audio"

    request_id: int
    action: str

    @property
    def reply_id(self) -> int:
        return self.request_id


PlaybackCommand = (
    PlayCommand | StopCommand | GainCommand | TempoCommand | TransportCommand | LinkCommand
    | AudioCommand
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuthCommand:
    """`/latentloop/auth <id> <token>`: authorise the sender's host for `[osc] auth_ttl_s`."""

    command: ClassVar[str] = "auth"

    request_id: int
    token: str = field(repr=False)

    @property
    def reply_id(self) -> int:
        """The id to echo in replies."""
        return self.request_id


Command = (
    RenderCommand | CancelCommand | StatusCommand | PingCommand | NotifyCommand | AuthCommand
    | PlaybackCommand
)  # fmt: skip
"""Every request the daemon's handler receives."""
