"""docs/protocol.md stays true: every address and fail code is documented, the examples parse."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from latentloop_bridge.errors import FailCode
from latentloop_bridge.packets import parse_packet, unix_to_ntp
from latentloop_bridge.protocol import (
    NotifyCommand,
    RenderCommand,
    parse_message,
)
from latentloop_bridge.spec import REPLY_ADDRESSES, REQUEST_ADDRESSES

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("address", sorted(REQUEST_ADDRESSES | REPLY_ADDRESSES))
def test_every_address_has_a_row(address: str) -> None:
    assert f"| `{address}` |" in DOC


@pytest.mark.parametrize("code", [code.value for code in FailCode])
def test_every_fail_code_has_a_row(code: str) -> None:
    assert f"| `{code}` |" in DOC


def bundle(timetag: int, *elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(element)) + element for element in elements)
    return b"#bundle\x00" + struct.pack(">Q", timetag) + body


def typed(address: str, tags: str, *values: object) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in zip(tags, values, strict=True):
        builder.add_arg(value, tag)
    return builder.build().dgram


RENDER = "/latentloop/render"


HOST_CASES = [
    (  # liblo oscsend, canonical
        typed(RENDER, "isssisiss", 1, "prompt", "dusty boom bap drums", "bpm", 92, "bars",
              4, "seed", "1234"),
        RenderCommand(1, "dusty boom bap drums", bpm=92.0, bars=4.0, seed=1234),
    ),
    (  # liblo oscsend, positional
        typed(RENDER, "ffsss", 92.0, 4.0, "dusty", "boom", "bap"),
        RenderCommand(None, "dusty boom bap", bpm=92.0, bars=4.0),
    ),
    (  # Pd [oscformat -f isssisisi latentloop render]
        typed(RENDER, "isssisisi", 7, "prompt", "pads", "bpm", 120, "bars", 8, "seed", 1234),
        RenderCommand(7, "pads", bpm=120.0, bars=8.0, seed=1234),
    ),
    (  # Pd [oscformat latentloop render]: every number a float
        typed(RENDER, "ffssss", 92.0, 4.0, "dusty", "boom", "bap", "drums"),
        RenderCommand(None, "dusty boom bap drums", bpm=92.0, bars=4.0),
    ),
    (  # Max message box [/latentloop/render 92 4 dusty boom bap drums(: ints
        typed(RENDER, "iissss", 92, 4, "dusty", "boom", "bap", "drums"),
        RenderCommand(None, "dusty boom bap drums", bpm=92.0, bars=4.0),
    ),
    (  # Tidal ArgList [bpm, bars, prompt]
        typed(RENDER, "ffs", 92.0, 4.0, "dusty boom bap drums"),
        RenderCommand(None, "dusty boom bap drums", bpm=92.0, bars=4.0),
    ),
    (  # sclang sendBundle(0.2, [...]): the message inside a timetagged bundle
        bundle(unix_to_ntp(1_900_000_000.2),
               typed(RENDER, "isssisi", 2, "prompt", "dub chords", "bpm", 92, "bars", 4)),
        RenderCommand(2, "dub chords", bpm=92.0, bars=4.0),
    ),
    (  # Sonic Pi osc_send: ints and strings, no seed
        typed(RENDER, "isssisi", 1, "prompt", "dusty boom bap drums", "bpm", 92, "bars", 4),
        RenderCommand(1, "dusty boom bap drums", bpm=92.0, bars=4.0),
    ),
    (  # Sonic Pi / Max notify
        typed("/latentloop/notify", "ii", 1, 4560),
        NotifyCommand(True, 4560),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), HOST_CASES)
def test_documented_examples_parse(data: bytes, expected: object) -> None:
    (message,) = parse_packet(data)
    assert parse_message(message.address, message.args) == expected


def test_host_cases_are_distinct() -> None:
    """Each host case above sends different bytes (one was once an exact copy of another)."""
    datagrams = [data for data, _ in HOST_CASES]
    assert len(set(datagrams)) == len(datagrams)
