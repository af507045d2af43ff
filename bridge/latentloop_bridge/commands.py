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
class AuthCommand:
    """`/latentloop/auth <id> <token>`: authorise the sender's host for `[osc] auth_ttl_s`."""

    command: ClassVar[str] = "auth"

    request_id: int
    token: str = field(repr=False)

    @property
    def reply_id(self) -> int:
        """The id to echo in replies."""
        return self.request_id


Command = RenderCommand | CancelCommand | StatusCommand | PingCommand | NotifyCommand | AuthCommand
"""Every request the daemon's handler receives."""
