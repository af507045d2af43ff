"""No input escapes as anything but ProtocolError: random and mutated datagrams."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from latentloop_bridge.errors import ProtocolError
from latentloop_bridge.intake import admit_datagram
from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import encode_message, parse_message

SEEDS = [
    encode_message("/latentloop/render", [1, "prompt", "drums", "bpm", 92, "bars", 4.0]),
    encode_message("/latentloop/render", [92, 4, "dusty", "boom"]),
    encode_message("/latentloop/ping", [3]),
    b"#bundle\x00" + struct.pack(">Qi", 1, 20) + encode_message("/latentloop/ping", [3]),
]


def check(data: bytes) -> None:
    try:
        messages = parse_packet(data)
    except ProtocolError:
        return
    for message in messages:
        try:
            parse_message(message.address, message.args)
        except ProtocolError:
            pass
    admit_datagram(data, ("127.0.0.1", 9), now_unix_s=0.0, now_s=0.0, max_datagram=65536,
                   max_ahead_s=3600.0)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=128))
def test_random_bytes(data: bytes) -> None:
    check(data)
    check(b"/" + data)
    check(b"#bundle\x00" + data)


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from(SEEDS), st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_mutated_datagrams(seed: bytes, at: int, patch: bytes) -> None:
    at %= len(seed)
    check(seed[:at] + patch + seed[at + len(patch) :])
    check(seed[:at])
