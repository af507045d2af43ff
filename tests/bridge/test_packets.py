"""parse_packet on hand-built datagrams: every argument type, bundles, timetags, malformed input."""

from __future__ import annotations

import struct
import time

import pytest

from latentloop_bridge.errors import ProtocolError
from latentloop_bridge.packets import (
    IMMEDIATELY,
    TimedMessage,
    ntp_to_unix,
    parse_packet,
    unix_to_ntp,
)
from latentloop_bridge.values import OscChar, OscImpulse, OscMidi, OscRgba, OscTimeTag


def ostr(text: str) -> bytes:
    """An OSC string: UTF-8, NUL-terminated, padded to 4 bytes."""
    raw = text.encode() + b"\x00"
    return raw + b"\x00" * (-len(raw) % 4)


def i32(value: int) -> bytes:
    return struct.pack(">i", value)


def message(address: str, tags: str, *payload: bytes) -> bytes:
    return ostr(address) + ostr("," + tags) + b"".join(payload)


def bundle(timetag: int, *elements: bytes) -> bytes:
    body = b"".join(i32(len(element)) + element for element in elements)
    return b"#bundle\x00" + struct.pack(">Q", timetag) + body


def one(data: bytes) -> TimedMessage:
    messages = parse_packet(data)
    assert len(messages) == 1
    return messages[0]


def malformed(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_packet(data)
    assert info.value.code == "malformed"
    assert info.value.request_id == -1
    return info.value


@pytest.mark.parametrize(
    ("tags", "payload", "expected"),
    [
        ("i", i32(-7), [-7]),
        ("i", i32(2**31 - 1), [2**31 - 1]),
        ("h", struct.pack(">q", 2**40), [2**40]),
        ("h", struct.pack(">q", -(2**63)), [-(2**63)]),
        ("f", struct.pack(">f", 120.0), [120.0]),
        ("f", struct.pack(">f", 0.1), [0.1]),  # shortest round trip, not 0.10000000149
        ("f", struct.pack(">f", 127.3), [127.3]),
        ("f", struct.pack(">f", -2.5e-8), [-2.5e-8]),
        ("d", struct.pack(">d", 0.1), [0.1]),
        ("s", ostr("dusty boom bap"), ["dusty boom bap"]),
        ("s", ostr(""), [""]),
        ("s", ostr("abc"), ["abc"]),  # exactly 4 bytes with its NUL
        ("s", ostr("Grüße 🥁"), ["Grüße 🥁"]),
        ("S", ostr("symbol"), ["symbol"]),
        ("b", i32(3) + b"abc\x00", [b"abc"]),
        ("b", i32(4) + b"abcd", [b"abcd"]),
        ("b", i32(0), [b""]),
        ("T", b"", [True]),
        ("F", b"", [False]),
        ("N", b"", [None]),
        ("I", b"", [OscImpulse()]),
        ("c", i32(ord("x")), [OscChar("x")]),
        ("m", bytes([1, 0x90, 60, 100]), [OscMidi(1, 0x90, 60, 100)]),
        ("t", struct.pack(">Q", 1), [OscTimeTag(1)]),
        ("r", bytes([255, 128, 0, 10]), [OscRgba(255, 128, 0, 10)]),
        ("", b"", []),
    ],
)
def test_every_argument_type(tags: str, payload: bytes, expected: list[object]) -> None:
    parsed = one(message("/latentloop/x", tags, payload))
    assert parsed == TimedMessage(None, "/latentloop/x", expected)


def test_mixed_arguments_keep_order_and_alignment() -> None:
    data = message(
        "/a",
        "isfdhbTFNSc",
        i32(1),
        ostr("two"),
        struct.pack(">f", 3.0),
        struct.pack(">d", 4.5),
        struct.pack(">q", 5),
        i32(1) + b"\x06\x00\x00\x00",
        ostr("sym"),
        i32(ord("z")),
    )
    assert one(data).args == [
        1,
        "two",
        3.0,
        4.5,
        5,
        b"\x06",
        True,
        False,
        None,
        "sym",
        OscChar("z"),
    ]


def test_missing_type_tag_string_means_no_arguments() -> None:
    assert one(ostr("/latentloop/ping")) == TimedMessage(None, "/latentloop/ping", [])


@pytest.mark.parametrize(
    ("data", "command", "text"),
    [
        (b"", "?", "empty datagram"),
        (
            b"hello world",
            "?",
            "not an OSC packet: it starts with b'hello wo'; "
            "a message starts with '/' and a bundle with '#bundle'",
        ),
        (b"/latentloop/ping", "?", "address at offset 0 is not NUL-terminated"),
        (b"/abc\x00", "?", "address at offset 0: padding to 4 bytes is truncated"),
        (b"/abc\x00x\x00\x00", "?", "address at offset 0: padding has non-zero bytes"),
        (b"/a\xff\x00", "?", "address at offset 0 is not valid UTF-8 (invalid start byte)"),
        (
            ostr("/latentloop/render") + ostr("i") + i32(1),
            "render",
            "/latentloop/render: type tag string must start with ',', got 'i'",
        ),
        (
            message("/latentloop/render", "i", b"\x00\x00"),
            "render",
            "/latentloop/render: argument 1 (type 'i'): needs 4 bytes at offset 24, 2 left",
        ),
        (
            message("/a", "d", b"\x00" * 4),
            "/a",
            "/a: argument 1 (type 'd'): needs 8 bytes at offset 8, 4 left",
        ),
        (
            message("/a", "is", i32(1), b"ab"),
            "/a",
            "/a: argument 2 (type 's'): string at offset 12 is not NUL-terminated",
        ),
        (
            message("/a", "s", b"\xc3\x28\x00\x00"),
            "/a",
            "/a: argument 1 (type 's'): string at offset 8 is not valid UTF-8 "
            "(invalid continuation byte)",
        ),
        (
            message("/a", "b", i32(-1)),
            "/a",
            "/a: argument 1 (type 'b'): negative blob size -1",
        ),
        (
            message("/a", "b", i32(5) + b"abcd"),
            "/a",
            "/a: argument 1 (type 'b'): needs 5 bytes at offset 12, 4 left",
        ),
        (
            message("/a", "b", i32(3) + b"abc"),
            "/a",
            "/a: argument 1 (type 'b'): needs 1 bytes at offset 15, 0 left",
        ),
        (
            message("/a", "c", struct.pack(">I", 0x110000)),
            "/a",
            "/a: argument 1 (type 'c'): char code 1114112 is not a Unicode code point",
        ),
        (message("/a", "x", i32(1)), "/a", "/a: argument 1: unsupported type tag 'x'"),
        (
            message("/a", "[i]", i32(1)),
            "/a",
            "/a: argument 1: arrays ('[' ... ']') are not supported",
        ),
        (message("/a", "i", i32(1), i32(2)), "/a", "/a: 4 bytes left after the last argument"),
        (message("/a", "", i32(2)), "/a", "/a: 4 bytes left after the last argument"),
    ],
)
def test_malformed_messages(data: bytes, command: str, text: str) -> None:
    error = malformed(data)
    assert error.command == command
    assert error.message == text


def test_bundle_immediately_and_in_order() -> None:
    data = bundle(
        IMMEDIATELY,
        message("/latentloop/ping", "i", i32(1)),
        message("/latentloop/ping", "i", i32(2)),
    )
    assert parse_packet(data) == [
        TimedMessage(None, "/latentloop/ping", [1]),
        TimedMessage(None, "/latentloop/ping", [2]),
    ]


@pytest.mark.parametrize("offset_s", [-10.0, 0.0, 0.25, 3600.0])
def test_bundle_timetags_past_and_future(offset_s: float) -> None:
    when = time.time() + offset_s
    parsed = one(bundle(unix_to_ntp(when), message("/latentloop/ping", "")))
    assert parsed.timetag_unix == pytest.approx(when, abs=1e-6)


def test_nested_bundles_run_no_earlier_than_their_parent() -> None:
    t0 = time.time()
    early, late = unix_to_ntp(t0 + 1), unix_to_ntp(t0 + 2)
    data = bundle(
        early,
        message("/a", "i", i32(1)),
        bundle(IMMEDIATELY, message("/b", "")),  # inherits the parent's time
        bundle(unix_to_ntp(t0), message("/c", "")),  # earlier than the parent: the parent's
        bundle(late, message("/d", ""), bundle(early, message("/e", ""))),
    )
    times = {m.address: m.timetag_unix for m in parse_packet(data)}
    assert list(times) == ["/a", "/b", "/c", "/d", "/e"]
    assert times["/a"] == times["/b"] == times["/c"] == pytest.approx(t0 + 1, abs=1e-6)
    assert times["/d"] == times["/e"] == pytest.approx(t0 + 2, abs=1e-6)


def test_immediate_bundle_nested_in_immediate_bundle() -> None:
    data = bundle(IMMEDIATELY, bundle(IMMEDIATELY, message("/a", "")))
    assert parse_packet(data) == [TimedMessage(None, "/a", [])]


def test_empty_bundle_has_no_messages() -> None:
    assert parse_packet(bundle(IMMEDIATELY)) == []


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"#bundle\x00\x00\x00", "bundle header is 10 bytes; it needs 16 (#bundle + timetag)"),
        (
            bundle(IMMEDIATELY) + b"\x00\x00",
            "bundle element 1 at offset 16: size field truncated (2 bytes left)",
        ),
        (
            bundle(IMMEDIATELY) + i32(0),
            "bundle element 1 at offset 16: size 0 is not a positive multiple of 4",
        ),
        (
            bundle(IMMEDIATELY) + i32(-8) + b"\x00" * 8,
            "bundle element 1 at offset 16: size -8 is not a positive multiple of 4",
        ),
        (
            bundle(IMMEDIATELY) + i32(6) + b"/a\x00\x00,\x00",
            "bundle element 1 at offset 16: size 6 is not a positive multiple of 4",
        ),
        (
            bundle(IMMEDIATELY) + i32(16) + ostr("/a") + ostr(","),
            "bundle element 1 at offset 16: claims 16 bytes but 8 remain",
        ),
        (
            bundle(IMMEDIATELY, message("/a", ""), b"junk"),
            "bundle element 2 at offset 28: not an OSC packet: it starts with b'junk'; "
            "a message starts with '/' and a bundle with '#bundle'",
        ),
        (
            bundle(IMMEDIATELY, b"#bundl\x00\x00"),
            "bundle element 1 at offset 16: not an OSC packet: it starts with b'#bundl\\x00\\x00'; "
            "a message starts with '/' and a bundle with '#bundle'",
        ),
    ],
)
def test_malformed_bundles(data: bytes, text: str) -> None:
    error = malformed(data)
    assert (error.command, error.message) == ("?", text)


def test_malformed_message_inside_bundle_names_element_and_command() -> None:
    bad = message("/latentloop/render", "i", b"")
    error = malformed(bundle(IMMEDIATELY, message("/latentloop/ping", ""), bundle(1, bad)))
    assert error.command == "render"
    assert error.message == (
        "bundle element 2 at offset 44: bundle element 1 at offset 16: /latentloop/render: "
        "argument 1 (type 'i'): needs 4 bytes at offset 24, 0 left"
    )


def test_bundles_nested_too_deep() -> None:
    data = message("/a", "")
    for _ in range(9):
        data = bundle(IMMEDIATELY, data)
    assert malformed(data).message.endswith("bundles are nested deeper than 8 levels")
    eight = message("/a", "")
    for _ in range(8):
        eight = bundle(IMMEDIATELY, eight)
    assert parse_packet(eight) == [TimedMessage(None, "/a", [])]


def test_ntp_conversion() -> None:
    assert ntp_to_unix(2_208_988_800 << 32) == 0.0
    assert ntp_to_unix((2_208_988_800 << 32) | 0x8000_0000) == 0.5
    assert unix_to_ntp(0.5) == (2_208_988_800 << 32) | 0x8000_0000
    now = time.time()
    assert ntp_to_unix(unix_to_ntp(now)) == pytest.approx(now, abs=1e-6)
    with pytest.raises(ValueError, match="NTP era 0"):
        unix_to_ntp(-2_208_988_801.0)
