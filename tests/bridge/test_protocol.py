"""parse_message and the reply encoders: both render forms, every type, every invalid case."""

from __future__ import annotations

import struct

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import (
    CancelCommand,
    Command,
    NotifyCommand,
    PingCommand,
    ProtocolError,
    RenderCommand,
    StatusCommand,
    done_reply,
    encode_message,
    error_reply,
    fail_reply,
    notify_reply,
    parse_message,
    pong_reply,
    progress_reply,
    queued_reply,
    status_reply,
)
from latentloop_bridge.values import OscArg, OscChar

RENDER = "/latentloop/render"


def datagram(address: str, *typed: tuple[str, object]) -> bytes:
    """Raw bytes with explicit type tags, built by python-osc (independent of our code)."""
    builder = OscMessageBuilder(address)
    for tag, value in typed:
        builder.add_arg(value, tag)
    return builder.build().dgram


def parse_datagram(data: bytes) -> Command:
    (message,) = parse_packet(data)
    return parse_message(message.address, message.args)


def invalid(address: str, args: list[OscArg]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_message(address, args)
    return info.value


# --- render, canonical ----------------------------------------------------------------------


@pytest.mark.parametrize("id_tag", ["i", "f", "d", "h"])
@pytest.mark.parametrize("number_tag", ["i", "f", "d", "h"])
def test_canonical_ids_and_numbers_in_every_number_type(id_tag: str, number_tag: str) -> None:
    data = datagram(
        RENDER,
        (id_tag, 7.0 if id_tag in "fd" else 7),
        ("s", "prompt"),
        ("s", "dusty boom bap drums"),
        ("s", "bpm"),
        (number_tag, 92.0 if number_tag in "fd" else 92),
        ("s", "bars"),
        (number_tag, 4.0 if number_tag in "fd" else 4),
        ("s", "steps"),
        (number_tag, 50.0 if number_tag in "fd" else 50),
    )
    command = parse_datagram(data)
    assert command == RenderCommand(
        client_id=7, prompt="dusty boom bap drums", bpm=92.0, bars=4.0, steps=50
    )


def test_canonical_every_name_any_order() -> None:
    command = parse_message(
        RENDER,
        [
            12, "replace", 1, "variations", 3, "cfg", 6.5, "steps", 100,
            "seed", "12345678901234567890",
            "key", "F minor", "beats_per_bar", 3, "bars", 2.5, "bpm", 127.3,
            "negative", "vocals", "prompt", "  tech house  ",
        ],
    )  # fmt: skip
    assert command == RenderCommand(
        client_id=12,
        prompt="tech house",
        negative="vocals",
        bpm=127.3,
        bars=2.5,
        beats_per_bar=3,
        key="F minor",
        seed=12345678901234567890,
        steps=100,
        cfg=6.5,
        variations=3,
        replace=True,
    )


def test_canonical_seconds_and_defaults() -> None:
    command = parse_message(RENDER, [0, "prompt", "rain", "seconds", 10])
    assert command == RenderCommand(client_id=0, prompt="rain", seconds=10.0)
    assert isinstance(command, RenderCommand)
    assert (command.seed, command.steps, command.cfg, command.key) == (None, None, None, None)
    assert (command.variations, command.replace, command.beats_per_bar) == (1, False, None)


@pytest.mark.parametrize(
    ("args", "bpm", "bars", "seconds"),
    [
        ([], None, None, None),  # the daemon's render.seconds
        (["bpm", 92], 92.0, None, None),  # the daemon's render.bars
        (["bpm", 92, "bars", 2], 92.0, 2.0, None),
        (["seconds", 3.5], None, None, 3.5),
        (["bpm", 20, "bars", 64, "beats_per_bar", 32], 20.0, 64.0, None),  # daemon checks length
    ],
)
def test_lengths_left_to_daemon_defaults(
    args: list[OscArg], bpm: float | None, bars: float | None, seconds: float | None
) -> None:
    command = parse_message(RENDER, [1, "prompt", "x", *args])
    assert isinstance(command, RenderCommand)
    assert (command.bpm, command.bars, command.seconds) == (bpm, bars, seconds)


def test_pd_style_canonical_all_floats_from_raw_bytes() -> None:
    data = datagram(
        RENDER,
        ("f", 3.0),
        ("s", "prompt"),
        ("s", "pads"),
        ("s", "bpm"),
        ("f", 120.0),
        ("s", "bars"),
        ("f", 8.0),
        ("s", "seed"),
        ("f", 16777216.0),
        ("s", "replace"),
        ("f", 0.0),
    )
    assert parse_datagram(data) == RenderCommand(
        client_id=3, prompt="pads", bpm=120.0, bars=8.0, seed=16777216
    )


@pytest.mark.parametrize(
    ("value", "seed"),
    [
        ("42", 42),
        (" 42 ", 42),
        ("18446744073709551615", 2**64 - 1),
        (42, 42),
        (42.0, 42),
        (2**62, 2**62),
        (0, 0),
        (-1, None),
        (-1.0, None),
        ("-1", None),
    ],
)
def test_seed_forms(value: OscArg, seed: int | None) -> None:
    command = parse_message(RENDER, [1, "prompt", "x", "seconds", 1, "seed", value])
    assert isinstance(command, RenderCommand) and command.seed == seed


@pytest.mark.parametrize("replace_value", [True, 1, 1.0])
def test_replace_accepts_true_and_one(replace_value: OscArg) -> None:
    command = parse_message(RENDER, [1, "prompt", "x", "seconds", 1, "replace", replace_value])
    assert isinstance(command, RenderCommand) and command.replace is True


def test_numbers_are_accepted_as_text_values() -> None:
    command = parse_message(RENDER, [1, "prompt", 808, "seconds", 1, "key", 7.0])
    assert isinstance(command, RenderCommand)
    assert (command.prompt, command.key) == ("808", "7")


# --- render, positional ---------------------------------------------------------------------


def test_positional_max_style_ints_and_symbols() -> None:
    data = datagram(RENDER, ("i", 92), ("i", 4), ("s", "dusty"), ("s", "boom"), ("s", "bap"))
    assert parse_datagram(data) == RenderCommand(
        client_id=None, prompt="dusty boom bap", bpm=92.0, bars=4.0
    )


def test_positional_pd_style_all_floats_and_numeric_words() -> None:
    data = datagram(
        RENDER,
        ("f", 128.0),
        ("f", 4.0),
        ("f", 128.0),
        ("s", "bpm"),
        ("s", "tech"),
        ("f", 0.5),
        ("i", 808),
        ("d", 2.25),
        ("h", 909),
        ("s", "house"),
    )
    command = parse_datagram(data)
    assert command == RenderCommand(
        client_id=None,
        prompt="128 bpm tech 0.5 808 2.25 909 house",
        bpm=128.0,
        bars=4.0,
    )


def test_positional_strips_and_skips_empty_words() -> None:
    command = parse_message(RENDER, [100, 2, " lofi ", "", "  ", "keys"])
    assert isinstance(command, RenderCommand) and command.prompt == "lofi keys"


# --- render, invalid ------------------------------------------------------------------------

P = [5, "prompt", "x"]  # a canonical prefix


@pytest.mark.parametrize(
    ("args", "request_id", "message"),
    [
        ([], -1, "render needs at least 2 arguments, got 0: render <id> <name> <value> ... "
         "or render <bpm> <bars> <prompt words...>"),
        ([5], 5, "render needs at least 2 arguments, got 1: render <id> <name> <value> ... "
         "or render <bpm> <bars> <prompt words...>"),
        ([5, b"\x01"], 5, "render's second argument must be a parameter name (string) or bars "
         "(number), got blob (1 bytes)"),
        ([5, True], 5, "render's second argument must be a parameter name (string) or bars "
         "(number), got true (T)"),
        (["dark", "techno"], -1, "request id must be a number, got string 'dark' "
         "(form: render <id> <name> <value> ...)"),
        ([5.5, "prompt", "x"], -1, "request id must be a whole number, got float 5.5 "
         "(form: render <id> <name> <value> ...)"),
        ([-1, "prompt", "x"], -1, "request id must be 0..2147483647, got -1 "
         "(form: render <id> <name> <value> ...)"),
        ([2**31, "prompt", "x"], -1, "request id must be 0..2147483647, got 2147483648 "
         "(form: render <id> <name> <value> ...)"),
        ([5, "bpm", 120, "bars", 4], 5, "prompt is missing: render <id> prompt <text> ..."),
        ([5, "prompt", "   ", "seconds", 1], 5, "prompt must not be empty"),
        ([5, "prompt", "x" * 1001, "seconds", 1], 5,
         "prompt is 1001 characters long; the limit is 1000"),
        ([*P, "negative", "y" * 1001, "seconds", 1], 5,
         "negative is 1001 characters long; the limit is 1000"),
        ([*P, "key", "k" * 65, "seconds", 1], 5, "key is 65 characters long; the limit is 64"),
        ([*P, "tempo", 120], 5, "unknown render parameter 'tempo'; known: prompt, negative, "
         "bpm, bars, beats_per_bar, seconds, key, seed, steps, cfg, variations, replace, play, "
         "token"),
        ([*P, "bpm", 120, "bpm", 121], 5, "duplicate render parameter 'bpm'"),
        ([*P, "bpm", 120, "bars"], 5, "render parameter 'bars' has no value"),
        ([*P, 4, "bars"], 5, "render parameter name at argument 4 must be a string, got int 4"),
        ([*P, "bpm", "fast", "bars", 4], 5, "bpm must be a number, got string 'fast'"),
        ([*P, "bpm", True, "bars", 4], 5, "bpm must be a number, got true (T)"),
        ([*P, "bpm", None, "bars", 4], 5, "bpm must be a number, got nil (N)"),
        ([*P, "bpm", b"ab", "bars", 4], 5, "bpm must be a number, got blob (2 bytes)"),
        ([*P, "bpm", OscChar("x"), "bars", 4], 5, "bpm must be a number, got char 'x'"),
        ([*P, "bpm", float("nan"), "bars", 4], 5, "bpm must be a finite number, got nan"),
        ([*P, "bpm", float("inf"), "bars", 4], 5, "bpm must be a finite number, got inf"),
        ([*P, "bpm", 5000, "bars", 4], 5, "bpm must be 20..999, got 5000"),
        ([*P, "bpm", 19.5, "bars", 4], 5, "bpm must be 20..999, got 19.5"),
        ([*P, "bpm", 120, "bars", 0], 5, "bars must be > 0 and <= 64, got 0"),
        ([*P, "bpm", 120, "bars", 65.0], 5, "bars must be > 0 and <= 64, got 65"),
        ([*P, "bpm", 120, "bars", 4, "beats_per_bar", 3.5], 5,
         "beats_per_bar must be a whole number, got float 3.5"),
        ([*P, "bpm", 120, "bars", 4, "beats_per_bar", 33], 5,
         "beats_per_bar must be 1..32, got 33"),
        ([*P, "seconds", 0], 5, "seconds must be > 0 and <= 600, got 0"),
        ([*P, "seconds", 601], 5, "seconds must be > 0 and <= 600, got 601"),
        ([*P, "seconds", 1, "steps", 0], 5, "steps must be 1..1000, got 0"),
        ([*P, "seconds", 1, "steps", 1001], 5, "steps must be 1..1000, got 1001"),
        ([*P, "seconds", 1, "cfg", -0.5], 5, "cfg must be 0..100, got -0.5"),
        ([*P, "seconds", 1, "cfg", 101], 5, "cfg must be 0..100, got 101"),
        ([*P, "seconds", 1, "variations", 17], 5, "variations must be 1..16, got 17"),
        ([*P, "seconds", 1, "variations", 0], 5, "variations must be 1..16, got 0"),
        ([*P, "seconds", 1, "replace", 2], 5, "replace must be 0 or 1, got 2"),
        ([*P, "seconds", 1, "replace", "yes"], 5, "replace must be a number, got string 'yes'"),
        ([*P, "seconds", 1, "seed", 1.5], 5, "seed must be a whole number, got float 1.5"),
        ([*P, "seconds", 1, "seed", -2], 5,
         "seed must be 0..18446744073709551615 (or -1 for random), got -2"),
        ([*P, "seconds", 1, "seed", 2**64], 5,
         "seed must be 0..18446744073709551615 (or -1 for random), got 18446744073709551616"),
        ([*P, "seconds", 1, "seed", "0x10"], 5,
         "seed must be a whole number 0..18446744073709551615 or -1 for random, as a number or "
         "a decimal string, got string '0x10'"),
        ([*P, "seconds", 1, "seed", "1.0"], 5,
         "seed must be a whole number 0..18446744073709551615 or -1 for random, as a number or "
         "a decimal string, got string '1.0'"),
        ([*P, "prompt", "y"], 5, "duplicate render parameter 'prompt'"),
        ([*P, "bars", 4], 5, "bars needs bpm (or give seconds instead)"),
        ([*P, "bars", 4, "beats_per_bar", 3], 5, "bars needs bpm (or give seconds instead)"),
        ([*P, "seconds", 8, "bars", 4], 5, "give either seconds or bpm and bars, not both"),
        ([*P, "seconds", 8, "bpm", 120], 5, "give either seconds or bpm and bars, not both"),
        ([*P, "seconds", 8, "bpm", 120, "bars", 4], 5,
         "give either seconds or bpm and bars, not both"),
        ([*P, "prompt", b"x"], 5, "duplicate render parameter 'prompt'"),
        ([5, "prompt", b"x", "seconds", 1], 5, "prompt must be a string, got blob (1 bytes)"),
        # positional
        (["dark techno", 120, 4], -1, "the positional form is render <bpm> <bars> "
         "<prompt words...>; its first argument must be a number, got string 'dark techno'"),
        ([120, 4], -1, "positional render needs prompt words after <bpm> <bars>"),
        ([120, 4, " ", ""], -1, "positional render needs prompt words after <bpm> <bars>"),
        ([5000, 4, "x"], -1, "bpm must be 20..999, got 5000"),
        ([120, 0, "x"], -1, "bars must be > 0 and <= 64, got 0"),
        ([120, float("nan"), "x"], -1, "bars must be a finite number, got nan"),
        ([120, 4, "x", True], -1,
         "prompt word at argument 4 must be a string or number, got true (T)"),
        ([120, 4, "x", b"\x00"], -1,
         "prompt word at argument 4 must be a string or number, got blob (1 bytes)"),
        ([120, 4, "x" * 1001], -1, "prompt is 1001 characters long; the limit is 1000"),
    ],
)  # fmt: skip
def test_render_invalid(args: list[OscArg], request_id: int, message: str) -> None:
    error = invalid(RENDER, args)
    assert (error.code, error.command, error.request_id) == ("invalid", "render", request_id)
    assert error.message == message


def test_long_strings_are_cut_in_messages() -> None:
    error = invalid(RENDER, [*P, "bpm", "f" * 100, "bars", 4])
    assert error.message == f"bpm must be a number, got string '{'f' * 40}...'"


# --- cancel, status, ping, notify -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "args", "command"),
    [
        ("/latentloop/cancel", [4], CancelCommand(4)),
        ("/latentloop/cancel", [4.0], CancelCommand(4)),
        ("/latentloop/cancel", [-1], CancelCommand(-1)),
        ("/latentloop/status", [], StatusCommand(-1)),
        ("/latentloop/status", [9], StatusCommand(9)),
        ("/latentloop/ping", [], PingCommand(-1)),
        ("/latentloop/ping", [2**31 - 1], PingCommand(2**31 - 1)),
        ("/latentloop/ping", [3.0], PingCommand(3)),
        ("/latentloop/notify", [1], NotifyCommand(True, None)),
        ("/latentloop/notify", [True, 7879], NotifyCommand(True, 7879)),
        ("/latentloop/notify", [0.0, 7879.0], NotifyCommand(False, 7879)),
        ("/latentloop/notify", [False], NotifyCommand(False, None)),
    ],
)
def test_other_requests(address: str, args: list[OscArg], command: Command) -> None:
    assert parse_message(address, args) == command


def test_notify_target_is_the_senders_host() -> None:
    assert NotifyCommand(True, None).target(("127.0.0.1", 5000)) == ("127.0.0.1", 5000)
    assert NotifyCommand(True, 7879).target(("10.0.0.2", 5000)) == ("10.0.0.2", 7879)


@pytest.mark.parametrize(
    ("address", "args", "request_id", "message"),
    [
        ("/latentloop/cancel", [], -1, "usage: cancel <id> (-1: all your jobs); got 0 arguments"),
        ("/latentloop/cancel", [1, 2], 1,
         "usage: cancel <id> (-1: all your jobs); got 2 arguments"),
        ("/latentloop/cancel", ["all"], -1, "request id must be a number, got string 'all'"),
        ("/latentloop/cancel", [-2], -1, "request id must be 0..2147483647, got -2"),
        ("/latentloop/status", [1, 2], 1, "usage: status [<id>]; got 2 arguments"),
        ("/latentloop/ping", [0.5], -1, "request id must be a whole number, got float 0.5"),
        ("/latentloop/ping", [1, "x"], 1, "usage: ping [<id>]; got 2 arguments"),
        ("/latentloop/notify", [], -1, "usage: notify <1|0> [<port>]; got 0 arguments"),
        ("/latentloop/notify", [2], -1, "notify flag must be 0 or 1, got 2"),
        ("/latentloop/notify", [1, 0], -1, "port must be 1..65535, got 0"),
        ("/latentloop/notify", [1, 70000], -1, "port must be 1..65535, got 70000"),
        ("/latentloop/notify", [1, "7879"], -1, "port must be a number, got string '7879'"),
    ],
)  # fmt: skip
def test_other_requests_invalid(
    address: str, args: list[OscArg], request_id: int, message: str
) -> None:
    error = invalid(address, args)
    assert (error.code, error.request_id, error.message) == ("invalid", request_id, message)
    assert error.command == address.rsplit("/", 1)[1]


REQUESTS = (
    "audio, auth, cancel, gain, link, notify, ping, play, render, status, stop, tempo, transport"
)


@pytest.mark.parametrize(
    ("address", "args", "command", "request_id", "message"),
    [
        ("/latentloop/mute", [3, 1], "mute", 3,
         f"unknown address /latentloop/mute; the requests are {REQUESTS}"),
        ("/latentloop/", [], "/latentloop/", -1,
         f"unknown address /latentloop/; the requests are {REQUESTS}"),
        ("/dirt/play", ["s", "bd"], "/dirt/play", -1,
         "unknown address /dirt/play; latentloop's requests are "
         "/latentloop/{audio, auth, cancel, gain, link, notify, ping, play, render, status, stop, "
         "tempo, transport}"),
        ("/latentloop/render/", [1], "render/", 1,
         "unknown address /latentloop/render/; "
         f"the requests are {REQUESTS}"),
        ("/latentloop/done", [1], "done", 1, "/latentloop/done is a reply, not a request"),
        ("/latentloop/*", [], "*", -1,
         f"unknown address /latentloop/*; the requests are {REQUESTS}"),
    ],
)  # fmt: skip
def test_unknown_addresses(
    address: str, args: list[OscArg], command: str, request_id: int, message: str
) -> None:
    error = invalid(address, args)
    assert (error.code, error.command, error.request_id, error.message) == (
        "unknown",
        command,
        request_id,
        message,
    )


# --- replies --------------------------------------------------------------------------------


def decode(address: str, args: list[int | float | str]) -> tuple[str, str, list[object]]:
    message = OscMessage(encode_message(address, args))
    return (
        message.address,
        message.dgram.split(b",", 1)[1].split(b"\x00")[0].decode(),
        message.params,
    )


@pytest.mark.parametrize(
    ("reply", "tags", "params"),
    [
        (queued_reply(1, 0), "ii", [1, 0]),
        (progress_reply(1, 3, 8, 0.375), "iiif", [1, 3, 8, 0.375]),
        (
            done_reply(1, "/out/loop.wav", 8.0, 120, 4, 2**64 - 1, 0),
            "isfffsiff",
            [1, "/out/loop.wav", 8.0, 120.0, 4.0, "18446744073709551615", 0, 0.0, 0.0],
        ),
        (fail_reply(-1, "?", "malformed", "empty datagram"), "isss",
         [-1, "?", "malformed", "empty datagram"]),
        (status_reply(2, "ready", 0, "tiny", "cpu", "0.1.0"), "isisss",
         [2, "ready", 0, "tiny", "cpu", "0.1.0"]),
        (pong_reply(5), "ii", [5, 1]),
        (notify_reply(True, 7879), "iii", [-1, 1, 7879]),
    ],
)  # fmt: skip
def test_replies_use_only_i_f_s(
    reply: tuple[str, list[int | float | str]], tags: str, params: list[object]
) -> None:
    address, actual_tags, actual = decode(*reply)
    assert address == reply[0] and address.startswith("/latentloop/")
    assert actual_tags == tags and set(actual_tags) <= set("ifs")
    assert actual == params


def test_progress_fraction_defaults_to_step_over_total() -> None:
    assert progress_reply(1, 3, 12) == ("/latentloop/progress", [1, 3, 12, 0.25])
    assert progress_reply(1, 0, 0) == ("/latentloop/progress", [1, 0, 0, 0.0])


def test_reply_addresses() -> None:
    assert [r[0] for r in (queued_reply(1, 0), pong_reply(1), notify_reply(False, 1))] == [
        "/latentloop/queued",
        "/latentloop/pong",
        "/latentloop/notify.reply",
    ]
    assert status_reply(1, "", 0, "", "", "")[0] == "/latentloop/status.reply"


def test_error_reply_and_long_messages() -> None:
    error = ProtocolError("invalid", "bpm must be 20..999, got 5000", "render", 7)
    assert error_reply(error) == (
        "/latentloop/fail",
        [7, "render", "invalid", "bpm must be 20..999, got 5000"],
    )
    _, args = fail_reply(1, "render", "internal", "x" * 2000)
    assert isinstance(args[3], str) and len(args[3]) == 500 and args[3].endswith("...")


@pytest.mark.parametrize(
    ("args", "error", "text"),
    [
        ([True], TypeError, "argument 0 of /latentloop/x must be int, float or str, got bool"),
        ([b"x"], TypeError, "must be int, float or str, got bytes"),
        ([None], TypeError, "got NoneType"),
        ([2**31], ValueError, "does not fit in int32: 2147483648"),
        ([-(2**31) - 1], ValueError, "does not fit in int32"),
        ([1e39], ValueError, "does not fit in float32"),
        (["a\x00b"], ValueError, "contains a NUL character"),
    ],
)
def test_encode_refuses_what_pd_and_max_cannot_read(
    args: list[object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        encode_message("/latentloop/x", args)  # type: ignore[arg-type]


def test_encode_round_trips_through_our_parser() -> None:
    data = encode_message("/latentloop/done", [1, "é.wav", 2.5, -(2**31), 2**31 - 1])
    assert len(data) % 4 == 0
    (message,) = parse_packet(data)
    assert message.args == [1, "é.wav", 2.5, -(2**31), 2**31 - 1]
    assert struct.unpack(">f", data[-12:-8]) == (2.5,)
    with pytest.raises(ValueError, match="must start with '/'"):
        encode_message("latentloop/x", [])
