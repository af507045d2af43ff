"""docs/protocol.md stays true: every address and fail code is documented, the examples parse."""

from __future__ import annotations

from pathlib import Path

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from latentloop_bridge.errors import FailCode
from latentloop_bridge.packets import parse_packet
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


def typed(address: str, tags: str, *values: object) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in zip(tags, values, strict=True):
        builder.add_arg(value, tag)
    return builder.build().dgram


RENDER = "/latentloop/render"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
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
        (  # Pd [oscformat latentloop render] (floats) and Max message box (ints)
            typed(RENDER, "ffssss", 92.0, 4.0, "dusty", "boom", "bap", "drums"),
            RenderCommand(None, "dusty boom bap drums", bpm=92.0, bars=4.0),
        ),
        (  # Tidal ArgList [bpm, bars, prompt]
            typed(RENDER, "ffs", 92.0, 4.0, "dusty boom bap drums"),
            RenderCommand(None, "dusty boom bap drums", bpm=92.0, bars=4.0),
        ),
        (  # sclang sendMsg with Symbols and a string seed
            typed(RENDER, "isssisiss", 1, "prompt", "dusty boom bap drums", "bpm", 92, "bars",
                  4, "seed", "1234"),
            RenderCommand(1, "dusty boom bap drums", bpm=92.0, bars=4.0, seed=1234),
        ),
        (  # Sonic Pi / Max notify
            typed("/latentloop/notify", "ii", 1, 4560),
            NotifyCommand(True, 4560),
        ),
    ],
)  # fmt: skip
def test_documented_examples_parse(data: bytes, expected: object) -> None:
    (message,) = parse_packet(data)
    assert parse_message(message.address, message.args) == expected
