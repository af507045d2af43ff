"""Protocol v1 constants: version, addresses, default ports and limits (`docs/protocol.md`)."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1
"""Sent in `/latentloop/pong`; bumped only when a v1 shape changes (v1 shapes may only grow)."""

PREFIX = "/latentloop/"

# Requests (client -> daemon): one constant and one parser (`protocol._parse_<leaf>`) each.
RENDER = "/latentloop/render"
CANCEL = "/latentloop/cancel"
STATUS = "/latentloop/status"
PING = "/latentloop/ping"
NOTIFY = "/latentloop/notify"
AUTH = "/latentloop/auth"  # authorisation (docs/security.md)
# playback (docs/playback.md)
PLAY = "/latentloop/play"
STOP = "/latentloop/stop"
GAIN = "/latentloop/gain"
TEMPO = "/latentloop/tempo"
TRANSPORT = "/latentloop/transport"
LINK = "/latentloop/link"
AUDIO = "/latentloop/audio"

# Replies (daemon -> client). Every reply's first argument is the request id (`i`, -1 for none).
QUEUED = "/latentloop/queued"
PROGRESS = "/latentloop/progress"
DONE = "/latentloop/done"
FAIL = "/latentloop/fail"
STATUS_REPLY = "/latentloop/status.reply"
PONG = "/latentloop/pong"
NOTIFY_REPLY = "/latentloop/notify.reply"
RETRY = "/latentloop/retry"
AUTH_REPLY = "/latentloop/auth.reply"
PLAY_REPLY = "/latentloop/play.reply"
STOP_REPLY = "/latentloop/stop.reply"
GAIN_REPLY = "/latentloop/gain.reply"
TEMPO_REPLY = "/latentloop/tempo.reply"
TRANSPORT_REPLY = "/latentloop/transport.reply"
LINK_REPLY = "/latentloop/link.reply"
AUDIO_REPLY = "/latentloop/audio.reply"
# Notifications (to subscribers and fixed targets; first argument -1)
PLAYING = "/latentloop/playing"
BAR = "/latentloop/bar"

PLAYBACK_REQUESTS = frozenset({PLAY, STOP, GAIN, TEMPO, TRANSPORT, LINK, AUDIO})
REQUEST_ADDRESSES = frozenset({RENDER, CANCEL, STATUS, PING, NOTIFY, AUTH, *PLAYBACK_REQUESTS})
REPLY_ADDRESSES = frozenset(
    {QUEUED, PROGRESS, DONE, FAIL, STATUS_REPLY, PONG, NOTIFY_REPLY, RETRY, AUTH_REPLY,
     PLAY_REPLY, STOP_REPLY, GAIN_REPLY, TEMPO_REPLY, TRANSPORT_REPLY, LINK_REPLY, AUDIO_REPLY,
     PLAYING, BAR}
)  # fmt: skip

QUANTIZE = ("now", "beat", "bar", "2bar", "4bar")
"""Launch quantization of `play`/`stop` (and the render option `play`)."""
AUDIO_ACTIONS = ("restart",)

# Authorisation: `/latentloop/auth <id> <token>` -> `auth.reply <id> <ttl_s>`
UNAUTHENTICATED_COMMANDS = frozenset({"ping", "auth"})
"""Requests answered without a token when one is configured; everything else is `unauthorized`."""
MAX_TOKEN_CHARS = 256

DEFAULT_HOST = "127.0.0.1"
"""Loopback only; listening on the network is an explicit choice (and logged as a warning)."""
DEFAULT_PORT = 7878
SUGGESTED_REPLY_PORT = 7879
"""For hosts that cannot receive on their sending socket (Max `[udpsend]`): notify/fixed target."""

MAX_DATAGRAM_BYTES = 65536
"""Default datagram cap. UDP over IPv4 carries at most 65,507 bytes, so only smaller caps bite."""
MAX_PROMPT_CHARS = 1000
"""Limit for `prompt` and `negative`, in characters after stripping surrounding whitespace."""
MAX_KEY_CHARS = 64
MAX_SUBSCRIBERS = 32
MAX_SCHEDULED = 1024
"""Messages waiting for dispatch (future bundle elements and immediate ones not yet handled)."""
MAX_SCHEDULE_AHEAD_S = 60.0
"""Bundles timetagged further ahead than this are `invalid` (live-coding latency is well below)."""
MAX_PARKED_PER_SENDER = 64
"""Future-timetagged messages one sender may have waiting; more are answered `busy`."""
MAX_PARKED = 256
"""Future-timetagged messages waiting in all; immediate ones always keep the rest of the queue."""
MAX_BUNDLE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Range:
    """A request parameter's allowed values: ``low..high`` (``low`` excluded when ``low_open``)."""

    low: float
    high: float
    low_open: bool = False
    whole: bool = False  # an integer parameter

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        low = f"{self.low:g}"
        return f"{'> ' + low + ' and <= ' if self.low_open else low + '..'}{self.high:g}"


RANGES: dict[str, Range] = {
    "bpm": Range(20, 999),
    "bars": Range(0, 64, low_open=True),
    "beats_per_bar": Range(1, 32, whole=True),
    "seconds": Range(0, 600, low_open=True),
    "steps": Range(1, 1000, whole=True),
    "cfg": Range(0, 100),
    "variations": Range(1, 16, whole=True),
    "slot": Range(0, 63, whole=True),  # the daemon checks its own `audio.slots` too
    "gain_db": Range(-120, 24),  # -120 and below: silent
    "variation": Range(0, 15, whole=True),
}
"""Protocol v1's ranges: the one definition, used by the parser, the daemon's config and the
`latentloop render` command. The daemon checks lengths against the model's own maximum too."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def command_name(address: str) -> str:
    """Name a request in `/fail` replies: the leaf under `/latentloop/`, else the whole address."""
    if address.startswith(PREFIX) and len(address) > len(PREFIX):
        return address[len(PREFIX) :]
    return address
