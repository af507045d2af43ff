"""Datagram -> timed OSC messages: our own parser for messages, bundles and timetags.

Why not python-osc's: its dispatcher sleeps in the receive thread for future timetags and its
parse errors are silent; here every malformed datagram raises `ProtocolError("malformed")` with
the byte offset and the reason. Pure functions, safe on any thread.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from latentloop_bridge.errors import FailCode, ProtocolError
from latentloop_bridge.spec import MAX_BUNDLE_DEPTH, command_name
from latentloop_bridge.values import (
    OscArg,
    OscChar,
    OscImpulse,
    OscMidi,
    OscRgba,
    OscTimeTag,
)

NTP_UNIX_OFFSET_S = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""
IMMEDIATELY = 1
"""The raw timetag that means "now" (OSC 1.0)."""
BUNDLE_TAG = b"#bundle\x00"


def ntp_to_unix(timetag: int) -> float:
    """Convert a raw 64-bit NTP timetag (32.32 fixed point) to Unix time in seconds."""
    seconds, fraction = timetag >> 32, timetag & 0xFFFF_FFFF
    return seconds - NTP_UNIX_OFFSET_S + fraction / 2**32


def unix_to_ntp(unix_s: float) -> int:
    """Convert Unix time in seconds to a raw 64-bit NTP timetag (era 0: until 2036-02-07)."""
    ntp_s = unix_s + NTP_UNIX_OFFSET_S
    seconds = math.floor(ntp_s)
    fraction = min(round((ntp_s - seconds) * 2**32), 2**32 - 1)
    if not 0 <= seconds < 2**32:
        raise ValueError(f"time {unix_s} s is outside the NTP era 0 (1900..2036)")
    return (seconds << 32) | fraction


@dataclass(frozen=True, slots=True)
class TimedMessage:
    """One OSC message and when to run it.

    `timetag_unix` is Unix time in seconds, or None for "immediately" (a bare message, or a
    bundle timetagged 1). Nested bundles run no earlier than their enclosing bundle.
    """

    timetag_unix: float | None
    address: str
    args: list[OscArg]


class _Malformed(Exception):
    """A parse failure inside one message or bundle, before its command is known."""


def parse_packet(data: bytes) -> list[TimedMessage]:
    """Parse one UDP datagram into its messages, in order (a bundle's elements depth first).

    Raises:
        ProtocolError: code `malformed`, command `"?"` unless the failing message's address
            was read, request id -1.
    """
    messages: list[TimedMessage] = []
    _parse_element(data, None, 0, messages)
    return messages


def _parse_element(data: bytes, timetag: float | None, depth: int, out: list[TimedMessage]) -> None:
    if data.startswith(BUNDLE_TAG):
        _parse_bundle(data, timetag, depth + 1, out)
    elif data.startswith(b"/"):
        out.append(_parse_message(data, timetag))
    elif not data:
        raise _malformed("empty datagram")
    else:
        raise _malformed(
            f"not an OSC packet: it starts with {data[:8]!r}; "
            "a message starts with '/' and a bundle with '#bundle'"
        )


def _parse_bundle(data: bytes, outer: float | None, depth: int, out: list[TimedMessage]) -> None:
    if depth > MAX_BUNDLE_DEPTH:
        raise _malformed(f"bundles are nested deeper than {MAX_BUNDLE_DEPTH} levels")
    if len(data) < 16:
        raise _malformed(f"bundle header is {len(data)} bytes; it needs 16 (#bundle + timetag)")
    (ntp,) = struct.unpack_from(">Q", data, 8)
    timetag = _later(outer, None if ntp == IMMEDIATELY else ntp_to_unix(ntp))
    pos, index = 16, 1
    while pos < len(data):
        where = f"bundle element {index} at offset {pos}"
        if pos + 4 > len(data):
            raise _malformed(f"{where}: size field truncated ({len(data) - pos} bytes left)")
        (size,) = struct.unpack_from(">i", data, pos)
        if size <= 0 or size % 4:
            raise _malformed(f"{where}: size {size} is not a positive multiple of 4")
        if pos + 4 + size > len(data):
            raise _malformed(f"{where}: claims {size} bytes but {len(data) - pos - 4} remain")
        try:
            _parse_element(data[pos + 4 : pos + 4 + size], timetag, depth, out)
        except ProtocolError as error:
            raise ProtocolError(error.code, f"{where}: {error.message}", error.command) from None
        pos, index = pos + 4 + size, index + 1


def _later(outer: float | None, inner: float | None) -> float | None:
    """An element runs no earlier than its enclosing bundle (None = immediately)."""
    if outer is None or inner is None:
        return inner if outer is None else outer
    return max(outer, inner)


def _parse_message(data: bytes, timetag: float | None) -> TimedMessage:
    reader = _Reader(data)
    try:
        address = reader.string("address")
    except _Malformed as error:
        raise _malformed(str(error)) from None
    try:
        if reader.at_end():  # OSC 1.0 tolerates a missing type tag string: no arguments
            return TimedMessage(timetag, address, [])
        tags = reader.string("type tag string")
        if not tags.startswith(","):
            raise _Malformed(f"type tag string must start with ',', got {tags[:16]!r}")
        args = [_read_arg(reader, tag, index) for index, tag in enumerate(tags[1:], 1)]
        if not reader.at_end():
            raise _Malformed(f"{reader.left} bytes left after the last argument")
    except _Malformed as error:
        raise _malformed(f"{address}: {error}", command_name(address)) from None
    return TimedMessage(timetag, address, args)


def _malformed(message: str, command: str = "?") -> ProtocolError:
    return ProtocolError(FailCode.MALFORMED, message, command)


def _read_arg(reader: _Reader, tag: str, index: int) -> OscArg:
    read = _ARG_READERS.get(tag)
    if read is None:
        if tag in "[]":
            raise _Malformed(f"argument {index}: arrays ('[' ... ']') are not supported")
        raise _Malformed(f"argument {index}: unsupported type tag {tag!r}")
    try:
        return read(reader)
    except _Malformed as error:
        raise _Malformed(f"argument {index} (type '{tag}'): {error}") from None


class _Reader:
    """A cursor over one message's bytes; every read checks bounds and alignment."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise _Malformed(f"needs {size} bytes at offset {self.pos}, {self.left} left")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def string(self, what: str) -> str:
        start = self.pos
        end_nul = self.data.find(b"\x00", start)
        if end_nul < 0:
            raise _Malformed(f"{what} at offset {start} is not NUL-terminated")
        padded_end = start + 4 * ((end_nul - start) // 4 + 1)
        if padded_end > len(self.data):
            raise _Malformed(f"{what} at offset {start}: padding to 4 bytes is truncated")
        if self.data[end_nul:padded_end].strip(b"\x00"):
            raise _Malformed(f"{what} at offset {start}: padding has non-zero bytes")
        self.pos = padded_end
        try:
            return self.data[start:end_nul].decode("utf-8")
        except UnicodeDecodeError as error:
            raise _Malformed(
                f"{what} at offset {start} is not valid UTF-8 ({error.reason})"
            ) from None

    def blob(self) -> bytes:
        (size,) = struct.unpack(">i", self.take(4))
        if size < 0:
            raise _Malformed(f"negative blob size {size}")
        data = self.take(size)
        self.take(-size % 4)
        return data


_FLOAT32_MAX = 3.4028234663852886e38


def _read_float32(reader: _Reader) -> float:
    """Read `f` as the shortest decimal that round-trips (Pd's 127.3 is 127.3, not 127.30000305)."""
    raw = reader.take(4)
    (value,) = struct.unpack(">f", raw)
    if not math.isfinite(value):
        return float(value)
    for digits in range(1, 10):
        shortest = float(f"{value:.{digits}g}")
        # a short decimal of a value near the float32 maximum can round past it (3.402824e38)
        if abs(shortest) <= _FLOAT32_MAX and struct.pack(">f", shortest) == raw:
            return shortest
    return float(value)  # pragma: no cover - 9 significant digits always round-trip


def _read_char(reader: _Reader) -> OscChar:
    (code,) = struct.unpack(">I", reader.take(4))
    if code > 0x10FFFF:
        raise _Malformed(f"char code {code} is not a Unicode code point")
    return OscChar(chr(code))


def _read_int(fmt: str) -> Callable[[_Reader], OscArg]:
    def read(reader: _Reader) -> OscArg:
        (value,) = struct.unpack(fmt, reader.take(struct.calcsize(fmt)))
        return int(value)

    return read


_ARG_READERS: dict[str, Callable[[_Reader], OscArg]] = {
    "i": _read_int(">i"),
    "h": _read_int(">q"),
    "f": _read_float32,
    "d": lambda reader: float(struct.unpack(">d", reader.take(8))[0]),
    "s": lambda reader: reader.string("string"),
    "S": lambda reader: reader.string("symbol"),
    "b": _Reader.blob,
    "T": lambda reader: True,
    "F": lambda reader: False,
    "N": lambda reader: None,
    "I": lambda reader: OscImpulse(),
    "c": _read_char,
    "m": lambda reader: OscMidi(*struct.unpack(">BBBB", reader.take(4))),
    "t": lambda reader: OscTimeTag(int(struct.unpack(">Q", reader.take(8))[0])),
    "r": lambda reader: OscRgba(*struct.unpack(">BBBB", reader.take(4))),
}
