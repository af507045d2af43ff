"""Playback requests and replies (`docs/protocol.md` §4.6-4.12): parsers and reply builders.

`protocol.parse_message` dispatches `/latentloop/<leaf>` to `parse_<leaf>` here; the parsers
raise `InvalidValue` (the caller adds the id and command). Pure functions, any thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from latentloop_bridge.commands import (
    AudioCommand,
    GainCommand,
    LinkCommand,
    PlayCommand,
    StopCommand,
    TempoCommand,
    TransportCommand,
)
from latentloop_bridge.errors import NO_ID
from latentloop_bridge.spec import (
    AUDIO_ACTIONS,
    AUDIO_REPLY,
    BAR,
    GAIN_REPLY,
    LINK_REPLY,
    MAX_PROMPT_CHARS,
    PLAY_REPLY,
    PLAYING,
    QUANTIZE,
    RANGES,
    STOP_REPLY,
    TEMPO_REPLY,
    TRANSPORT_REPLY,
)
from latentloop_bridge.values import (
    InvalidValue,
    OscArg,
    as_flag,
    as_number,
    as_request_id,
    as_text,
    as_whole,
    check_range,
    describe,
    is_number,
)

Reply = tuple[str, list[int | float | str]]
MAX_PATH_CHARS = 4096


def _count(args: Sequence[OscArg], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise InvalidValue(f"usage: {usage}; got {len(args)} arguments")


def _id(args: Sequence[OscArg]) -> int:
    return as_request_id(args[0], allow_none_id=False)


def as_slot(value: OscArg, *, allow_all: bool = False) -> int | None:
    """A slot number 0..63 (the daemon checks its own count); -1 means all where allowed."""
    slot = as_whole("slot", value)
    if allow_all and slot == -1:
        return None
    r = RANGES["slot"]
    check_range("slot", slot, r.low, r.high)
    return slot


def as_quantize(value: OscArg) -> str:
    """`now`, `beat`, `bar`, `2bar` or `4bar` (a number 1, 2, 4 means that many bars)."""
    if is_number(value):
        bars = as_whole("quantize", value)
        text = {0: "now", 1: "bar", 2: "2bar", 4: "4bar"}.get(bars, str(bars))
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise InvalidValue(f"quantize must be one of {', '.join(QUANTIZE)}, got {describe(value)}")
    if text not in QUANTIZE:
        raise InvalidValue(f"quantize must be one of {', '.join(QUANTIZE)}, got {text!r}")
    return text


def parse_play(args: Sequence[OscArg]) -> PlayCommand:
    usage = "play <id> <job id | path> [slot] [quantize] [variation]"
    _count(args, 2, 5, usage)
    request_id = _id(args)
    what = args[1]
    job_id, path = None, None
    if isinstance(what, str):
        path = as_text("path", what, MAX_PATH_CHARS)
        if not path:
            raise InvalidValue("path must not be empty")
    elif is_number(what):
        job_id = as_whole("job id", what)
        check_range("job id", job_id, 0, 2**31 - 1)
    else:
        raise InvalidValue(f"play needs a job id or a path, got {describe(what)}")
    slot = as_slot(args[2]) if len(args) > 2 else 0
    quantize = as_quantize(args[3]) if len(args) > 3 else None
    variation = 0
    if len(args) > 4:
        variation = as_whole("variation", args[4])
        check_range("variation", variation, 0, RANGES["variation"].high)
    assert slot is not None
    return PlayCommand(request_id, job_id, path, slot, quantize, variation)


def parse_stop(args: Sequence[OscArg]) -> StopCommand:
    _count(args, 1, 3, "stop <id> [slot (-1: all)] [quantize]")
    slot = as_slot(args[1], allow_all=True) if len(args) > 1 else None
    quantize = as_quantize(args[2]) if len(args) > 2 else None
    return StopCommand(_id(args), slot, quantize)


def parse_gain(args: Sequence[OscArg]) -> GainCommand:
    _count(args, 3, 3, "gain <id> <slot> <db>")
    slot = as_slot(args[1])
    assert slot is not None
    db = as_number("db", args[2])
    r = RANGES["gain_db"]
    db = max(db, r.low)  # anything quieter is silence
    check_range("db", db, r.low, r.high)
    return GainCommand(_id(args), slot, db)


def parse_tempo(args: Sequence[OscArg]) -> TempoCommand:
    _count(args, 2, 3, "tempo <id> <bpm> [beats_per_bar]")
    bpm = as_number("bpm", args[1])
    check_range("bpm", bpm, RANGES["bpm"].low, RANGES["bpm"].high)
    beats = None
    if len(args) > 2:
        beats = as_whole("beats_per_bar", args[2])
        r = RANGES["beats_per_bar"]
        check_range("beats_per_bar", beats, r.low, r.high)
    return TempoCommand(_id(args), bpm, beats)


def parse_transport(args: Sequence[OscArg]) -> TransportCommand:
    _count(args, 2, 2, "transport <id> <1|0>")
    return TransportCommand(_id(args), as_flag("transport flag", args[1]))


def parse_link(args: Sequence[OscArg]) -> LinkCommand:
    _count(args, 2, 2, "link <id> <1|0>")
    return LinkCommand(_id(args), as_flag("link flag", args[1]))


def parse_audio(args: Sequence[OscArg]) -> AudioCommand:
    _count(args, 2, 2, "audio <id> restart")
    action = as_text("action", args[1], 32)
    if action not in AUDIO_ACTIONS:
        raise InvalidValue(
            f"audio action must be one of {', '.join(AUDIO_ACTIONS)}, got {action!r}"
        )
    return AudioCommand(_id(args), action)


# --- replies ----------------------------------------------------------------------------------


def play_reply(request_id: int, slot: int, bar: int) -> Reply:
    """`/latentloop/play.reply <id> <slot> <bar it starts on>`."""
    return PLAY_REPLY, [request_id, slot, bar]


def stop_reply(request_id: int, slot: int | None, bar: int) -> Reply:
    """`/latentloop/stop.reply <id> <slot (-1: all)> <bar it stops on>`."""
    return STOP_REPLY, [request_id, NO_ID if slot is None else slot, bar]


def gain_reply(request_id: int, slot: int, db: float) -> Reply:
    """`/latentloop/gain.reply <id> <slot> <db f>`."""
    return GAIN_REPLY, [request_id, slot, float(db)]


def tempo_reply(request_id: int, bpm: float, beats_per_bar: int, bar: int) -> Reply:
    """`/latentloop/tempo.reply <id> <bpm f> <beats_per_bar> <bar it takes effect on>`."""
    return TEMPO_REPLY, [request_id, float(bpm), beats_per_bar, bar]


def transport_reply(request_id: int, running: bool) -> Reply:
    """`/latentloop/transport.reply <id> <1|0>`."""
    return TRANSPORT_REPLY, [request_id, int(running)]


def link_reply(request_id: int, enabled: bool, peers: int) -> Reply:
    """`/latentloop/link.reply <id> <1|0> <peers>`."""
    return LINK_REPLY, [request_id, int(enabled), peers]


def audio_reply(request_id: int, state: str, message: str) -> Reply:
    """`/latentloop/audio.reply <id> <on|off> <message>`; id -1 when a device failed."""
    return AUDIO_REPLY, [request_id, state, message[:MAX_PROMPT_CHARS]]


def playing_notice(slot: int, job_id: int, path: str) -> Reply:
    """`/latentloop/playing -1 <slot> <job id> <path>`: the clip is audible now."""
    return PLAYING, [NO_ID, slot, job_id, path]


def bar_notice(bar: int, bpm: float, beats_per_bar: int) -> Reply:
    """`/latentloop/bar -1 <bar> <bpm f> <beats_per_bar>` (sent in a timetagged bundle)."""
    return BAR, [NO_ID, bar, float(bpm), beats_per_bar]
