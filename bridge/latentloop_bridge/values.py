"""OSC argument values and their checked conversion to request fields, with precise messages.

Every converter takes the field's name (for the message) and one decoded OSC argument, and
either returns a Python value or raises `InvalidValue`; the caller adds the request id and
command. Numbers are accepted as `i`, `h`, `f` or `d`; booleans (`T`/`F`) are not numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from latentloop_bridge.spec import INT32_MAX


@dataclass(frozen=True, slots=True)
class OscChar:
    """An OSC `c` argument: one character."""

    value: str


@dataclass(frozen=True, slots=True)
class OscMidi:
    """An OSC `m` argument: port id, status byte, data1, data2."""

    port: int
    status: int
    data1: int
    data2: int


@dataclass(frozen=True, slots=True)
class OscTimeTag:
    """An OSC `t` argument: a raw 64-bit NTP timetag (seconds since 1900 in 32.32 fixed point)."""

    ntp: int


@dataclass(frozen=True, slots=True)
class OscRgba:
    """An OSC `r` argument: a 32-bit RGBA colour."""

    red: int
    green: int
    blue: int
    alpha: int


@dataclass(frozen=True, slots=True)
class OscImpulse:
    """An OSC `I` argument ("infinitum" in OSC 1.0, "impulse" in 1.1); it carries no data."""


OscArg = (
    int | float | str | bytes | bool | None | OscChar | OscMidi | OscTimeTag | OscRgba | OscImpulse
)
"""A decoded argument: `i`/`h` int, `f`/`d` float, `s`/`S` str, `b` bytes, `T`/`F` bool, `N`."""

SEED_MAX = 2**64 - 1
_SHOWN_CHARS = 40


class InvalidValue(ValueError):
    """An argument has the wrong type or is out of range; the message names the field."""


def describe(value: OscArg) -> str:
    """Describe an argument for an error message: "int 5", "string 'fast'", "blob (3 bytes)"."""
    if isinstance(value, bool):
        return "true (T)" if value else "false (F)"
    if isinstance(value, int):
        return f"int {value}"
    if isinstance(value, float):
        return f"float {format_number(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
        return f"string {shown!r}"
    if isinstance(value, bytes):
        return f"blob ({len(value)} bytes)"
    if value is None:
        return "nil (N)"
    if isinstance(value, OscChar):
        return f"char {value.value!r}"
    if isinstance(value, OscMidi):
        return "MIDI message (m)"
    if isinstance(value, OscTimeTag):
        return "timetag (t)"
    if isinstance(value, OscRgba):
        return "colour (r)"
    return "impulse (I)"


def format_number(value: int | float) -> str:
    """Print a number the way a user typed it: whole floats without ".0" (128.0 -> "128")."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def is_number(value: OscArg) -> bool:
    """Tell whether an argument is an OSC number (`i`, `h`, `f`, `d`; not `T`/`F`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(name: str, value: OscArg) -> float:
    """Read a finite number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidValue(f"{name} must be a number, got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(f"{name} must be a finite number, got {value!r}")
    return float(value)


def as_whole(name: str, value: OscArg) -> int:
    """Read a whole number (an int, or a float without a fractional part as Pd sends)."""
    number = as_number(name, value)
    if isinstance(value, int):
        return value
    if not number.is_integer():
        raise InvalidValue(f"{name} must be a whole number, got {describe(value)}")
    return int(number)


def check_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    """Raise unless `low <= value <= high` (`low < value` when `low_open`)."""
    too_low = value <= low if low_open else value < low
    if not too_low and value <= high:
        return
    lo, hi, got = format_number(low), format_number(high), format_number(value)
    if low_open:
        raise InvalidValue(f"{name} must be > {lo} and <= {hi}, got {got}")
    raise InvalidValue(f"{name} must be {lo}..{hi}, got {got}")


def as_text(name: str, value: OscArg, limit: int) -> str:
    """Read a string (a number is printed, as Max and Pd turn numeric words into numbers)."""
    if is_number(value):
        assert isinstance(value, int | float)
        text = format_number(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise InvalidValue(f"{name} must be a string, got {describe(value)}")
    if len(text) > limit:
        raise InvalidValue(f"{name} is {len(text)} characters long; the limit is {limit}")
    return text


def as_flag(name: str, value: OscArg) -> bool:
    """Read a flag: 1 or 0 (any number type), or `T`/`F`."""
    if isinstance(value, bool):
        return value
    number = as_number(name, value)
    if number not in (0.0, 1.0):
        raise InvalidValue(f"{name} must be 0 or 1, got {format_number(number)}")
    return number == 1.0


def as_seed(name: str, value: OscArg) -> int | None:
    """Read a seed 0..2^64-1 from a whole number or a decimal string; -1 means "random" (None)."""
    if isinstance(value, str):
        text = value.strip()
        if text == "-1":
            return None
        if not text.isascii() or not text.isdigit():
            raise InvalidValue(
                f"{name} must be a whole number 0..{SEED_MAX} or -1 for random, "
                f"as a number or a decimal string, got {describe(value)}"
            )
        seed = int(text)
    else:
        seed = as_whole(name, value)
        if seed == -1:
            return None
    if not 0 <= seed <= SEED_MAX:
        raise InvalidValue(f"{name} must be 0..{SEED_MAX} (or -1 for random), got {seed}")
    return seed


def as_port(name: str, value: OscArg) -> int:
    """Read a UDP port 1..65535."""
    port = as_whole(name, value)
    check_range(name, port, 1, 65535)
    return port


def as_request_id(value: OscArg, *, allow_none_id: bool) -> int:
    """Read a request id 0..2^31-1 (`i` in every reply); -1 too where it means none or all."""
    request_id = as_whole("request id", value)
    if allow_none_id and request_id == -1:
        return request_id
    check_range("request id", request_id, 0, INT32_MAX)
    return request_id
