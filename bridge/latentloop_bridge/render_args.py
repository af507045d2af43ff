"""`/latentloop/render` arguments in both forms -> a checked `RenderCommand`.

Canonical: `<id> <name> <value> ...` (SuperDirt style, any order, omitted names take defaults).
Positional: `<bpm> <bars> <prompt words...>` for Max message boxes and Pd lists.
Raises `InvalidValue`; `protocol.parse_message` adds the request id and command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from latentloop_bridge.commands import RenderCommand
from latentloop_bridge.spec import MAX_KEY_CHARS, MAX_PROMPT_CHARS, MAX_TOKEN_CHARS, RANGES, Range
from latentloop_bridge.values import (
    InvalidValue,
    OscArg,
    as_flag,
    as_number,
    as_seed,
    as_text,
    as_whole,
    check_range,
    describe,
    format_number,
    is_number,
)

T = TypeVar("T")
Converter = Callable[[str, OscArg], T]


def _number(r: Range) -> Converter[float]:
    def convert(name: str, value: OscArg) -> float:
        number = as_number(name, value)
        check_range(name, number, r.low, r.high, low_open=r.low_open)
        return number

    return convert


def _whole(r: Range) -> Converter[int]:
    def convert(name: str, value: OscArg) -> int:
        number = as_whole(name, value)
        check_range(name, number, int(r.low), int(r.high))
        return number

    return convert


def _text(limit: int) -> Converter[str]:
    return lambda name, value: as_text(name, value, limit)


_prompt = _text(MAX_PROMPT_CHARS)
_key = _text(MAX_KEY_CHARS)
_token = _text(MAX_TOKEN_CHARS)
_bpm = _number(RANGES["bpm"])
_bars = _number(RANGES["bars"])
_beats_per_bar = _whole(RANGES["beats_per_bar"])
_seconds = _number(RANGES["seconds"])
_steps = _whole(RANGES["steps"])
_cfg = _number(RANGES["cfg"])
_variations = _whole(RANGES["variations"])

NAMES = (
    "prompt",
    "negative",
    "bpm",
    "bars",
    "beats_per_bar",
    "seconds",
    "key",
    "seed",
    "steps",
    "cfg",
    "variations",
    "replace",
    "play",
    "token",
)
"""The canonical parameter names; ranges and defaults are in docs/protocol.md."""


def parse_canonical(client_id: int, pairs: Sequence[OscArg]) -> RenderCommand:
    """Check the name/value pairs that follow the id."""
    raw = _collect_pairs(pairs)
    if "prompt" not in raw:
        raise InvalidValue("prompt is missing: render <id> prompt <text> ...")
    return _build(client_id, raw)


def parse_positional(args: Sequence[OscArg]) -> RenderCommand:
    """Check `<bpm> <bars> <words...>`; numbers among the words are printed without '.0'."""
    if not is_number(args[0]):
        raise InvalidValue(
            "the positional form is render <bpm> <bars> <prompt words...>; "
            f"its first argument must be a number, got {describe(args[0])}"
        )
    words = [_prompt_word(index, word) for index, word in enumerate(args[2:], 3)]
    prompt = " ".join(word for word in words if word)
    raw: dict[str, OscArg] = {"bpm": args[0], "bars": args[1], "prompt": prompt}
    if not prompt:
        raise InvalidValue("positional render needs prompt words after <bpm> <bars>")
    return _build(None, raw)


def _prompt_word(index: int, word: OscArg) -> str:
    if isinstance(word, str):
        return word.strip()
    if isinstance(word, int | float) and not isinstance(word, bool):
        return format_number(word)
    raise InvalidValue(
        f"prompt word at argument {index} must be a string or number, got {describe(word)}"
    )


def _collect_pairs(pairs: Sequence[OscArg]) -> dict[str, OscArg]:
    raw: dict[str, OscArg] = {}
    for index in range(0, len(pairs), 2):
        name = pairs[index]
        if not isinstance(name, str):
            raise InvalidValue(
                f"render parameter name at argument {index + 2} must be a string, "
                f"got {describe(name)}"
            )
        if name not in NAMES:
            raise InvalidValue(f"unknown render parameter {name!r}; known: {', '.join(NAMES)}")
        if name in raw:
            raise InvalidValue(f"duplicate render parameter {name!r}")
        if index + 1 >= len(pairs):
            raise InvalidValue(f"render parameter {name!r} has no value")
        raw[name] = pairs[index + 1]
    return raw


def _get(raw: Mapping[str, OscArg], name: str, convert: Converter[T]) -> T | None:
    return convert(name, raw[name]) if name in raw else None


def _build(client_id: int | None, raw: Mapping[str, OscArg]) -> RenderCommand:
    prompt = _get(raw, "prompt", _prompt) or ""
    if not prompt:
        raise InvalidValue("prompt must not be empty")
    bpm = _get(raw, "bpm", _bpm)
    bars = _get(raw, "bars", _bars)
    seconds = _get(raw, "seconds", _seconds)
    _check_length(bpm, bars, seconds)
    return RenderCommand(
        client_id=client_id,
        prompt=prompt,
        negative=_get(raw, "negative", _prompt) or "",
        bpm=bpm,
        bars=bars,
        beats_per_bar=_get(raw, "beats_per_bar", _beats_per_bar),
        seconds=seconds,
        key=_get(raw, "key", _key) or None,
        seed=_get(raw, "seed", as_seed),
        steps=_get(raw, "steps", _steps),
        cfg=_get(raw, "cfg", _cfg),
        variations=_get(raw, "variations", _variations) or 1,
        replace=_get(raw, "replace", as_flag) or False,
        play=_get(raw, "play", _whole(RANGES["slot"])),
        token=_get(raw, "token", _token),
    )


def _check_length(bpm: float | None, bars: float | None, seconds: float | None) -> None:
    """At most one length: `seconds`, or `bpm` (+ `bars`); the daemon fills what is omitted."""
    if seconds is not None and (bpm is not None or bars is not None):
        raise InvalidValue("give either seconds or bpm and bars, not both")
    if bars is not None and bpm is None:
        raise InvalidValue("bars needs bpm (or give seconds instead)")
