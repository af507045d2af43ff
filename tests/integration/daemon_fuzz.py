"""Datagram generators and a UDP driver for fuzzing and loading a running daemon.

Used by ``test_fuzz_load.py`` (a few thousand datagrams in CI) and ``tools/soak.py``
(>= 100,000). ``invalid_datagrams`` never yields a datagram that the bridge would admit as a
render (checked with the bridge's own admission and dropped), so a file written during a fuzz
run is a bug.
"""

from __future__ import annotations

import math
import os
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator

from hypothesis import strategies as st
from pythonosc.osc_packet import OscPacket

from latentloop_bridge.commands import RenderCommand
from latentloop_bridge.errors import ProtocolError
from latentloop_bridge.intake import admit_datagram
from latentloop_bridge.protocol import encode_message


def bundle(timetag: int, *elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(element)) + element for element in elements)
    return b"#bundle\x00" + struct.pack(">Q", timetag) + body


def osc_string(text: bytes) -> bytes:
    return text + b"\x00" * (4 - len(text) % 4)


RENDER = encode_message("/latentloop/render", [1, "prompt", "drums", "bpm", 92, "bars", 4.0])
SEEDS = [
    RENDER,
    encode_message("/latentloop/render", [92, 4, "dusty", "boom"]),
    encode_message("/latentloop/ping", [3]),
    encode_message("/latentloop/status", [4]),
    encode_message("/latentloop/cancel", [5]),
    encode_message("/latentloop/auth", [6, "not-the-token"]),
    encode_message("/latentloop/play", [7, 0, "job", 1]),
    bundle(1, encode_message("/latentloop/ping", [8]), RENDER),
]
ADDRESSES = ["/latentloop/render", "/latentloop/ping", "/latentloop/status", "/latentloop/cancel",
             "/latentloop/notify", "/latentloop/auth", "/latentloop/play", "/latentloop/x",
             "/latentloop/done", "/fail", "", "/", "latentloop/render"]  # fmt: skip
FLOATS = [math.nan, math.inf, -math.inf, 1e38, -0.0, 5e-324]


def admits_a_render(data: bytes) -> bool:
    try:
        deliveries = admit_datagram(data, ("127.0.0.1", 9), now_unix_s=time.time(),
                                    now_s=0.0, max_datagram=65536, max_ahead_s=60.0)  # fmt: skip
    except ProtocolError:
        return False
    return any(isinstance(d.request, RenderCommand) for d in deliveries)


def _wrong_tags(draw_tags: str, payload: bytes) -> bytes:
    return osc_string(b"/latentloop/render") + osc_string(b"," + draw_tags.encode()) + payload


_scalar = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from(FLOATS),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
    st.sampled_from(["prompt", "seconds", "bpm", "bars", "steps", "variations", "cfg", "token"]),
)


def _encode(address: str, args: list) -> bytes:
    """An OSC message, or the raw address alone when the encoder refuses (no leading '/')."""
    try:
        return encode_message(address, args)
    except ValueError:
        return osc_string(address.encode())


_message = st.builds(_encode, st.sampled_from(ADDRESSES), st.lists(_scalar, max_size=10))
_bundles = st.recursive(
    _message,
    lambda inner: st.builds(
        lambda tag, parts: bundle(tag, *parts),
        st.sampled_from([0, 1, 2**64 - 1, int((time.time() + 2208988800 + 3600) * 2**32)]),
        st.lists(inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(seed) - 1))
        seed[i] = draw(st.integers(0, 255))
    return bytes(seed)


INVALID = st.one_of(
    st.binary(max_size=300),  # random bytes
    st.builds(lambda s, k: s[:k], st.sampled_from(SEEDS), st.integers(0, 200)),  # truncated
    _mutated(),
    _bundles,  # nested bundles, some malformed by their contents, timetags in the past/future
    st.builds(
        lambda s, cut: s[: max(16, len(s) - cut)] + b"\x00\x00\x00\x7f", _bundles, st.integers(0, 8)
    ),  # fmt: skip  # bundles whose last element lies about its size
    st.builds(
        lambda n: encode_message("/latentloop/render", [1, "prompt", "p" * n]),
        st.integers(1001, 60_000),
    ),  # fmt: skip  # huge strings
    st.builds(
        lambda f, key: encode_message("/latentloop/render", [1, "prompt", "x", key, f]),
        st.sampled_from(FLOATS),
        st.sampled_from(["bpm", "bars", "seconds", "cfg"]),
    ),  # fmt: skip
    st.builds(_wrong_tags, st.text("ifsbhdTFNI[]xyz", max_size=8), st.binary(max_size=40)),
)


def invalid_datagrams(rng: random.Random, n: int) -> Iterator[bytes]:
    """``n`` cheap invalid datagrams for load (hypothesis's ``INVALID`` is for ``@given``)."""
    sent = 0
    while sent < n:
        data = _fast_invalid(rng)
        if admits_a_render(data):
            continue
        sent += 1
        yield data


def _fast_invalid(rng: random.Random) -> bytes:
    """A cheap mutation or truncation of a seed, or random bytes (``.example()`` is slow)."""
    kind = rng.randrange(7)
    seed = bytearray(rng.choice(SEEDS))
    if kind == 0:
        return os.urandom(rng.randrange(1, 300))
    if kind == 1:
        return bytes(seed[: rng.randrange(len(seed))])
    if kind == 2:
        for _ in range(rng.randrange(1, 6)):
            seed[rng.randrange(len(seed))] = rng.randrange(256)
        return bytes(seed)
    if kind == 3:  # bundles nested 1-40 deep around a seed, one byte of them corrupted or not
        data = bytes(seed)
        for _ in range(rng.randrange(1, 41)):
            data = bundle(1, data)
        if rng.random() < 0.5:
            damaged = bytearray(data)
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            data = bytes(damaged)
        return data
    if kind == 4:  # a bundle whose element claims more bytes than there are
        return bundle(1, bytes(seed))[:-2] + b"\xff\xff"
    if kind == 5:  # a huge prompt
        return encode_message("/latentloop/render", [1, "prompt", "p" * rng.randrange(1001, 9000)])
    if kind == 6:  # type tags that do not match the payload
        return _wrong_tags("".join(rng.choices("ifsbhdTFN[]x", k=5)), os.urandom(12))
    f = rng.choice(FLOATS)
    return encode_message("/latentloop/render", [1, "prompt", "x", rng.choice(["bpm", "cfg"]), f])


class Client:
    """One UDP socket that sends and counts every reply by address."""

    def __init__(self, port: int) -> None:
        self.daemon = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.replies: Counter[str] = Counter()
        self.finals: dict[int, list[str]] = {}  # render id -> its final replies (done/fail)
        self.pongs: dict[int, float] = {}  # ping id -> arrival (monotonic)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.daemon)

    def drain(self, timeout: float) -> int:
        """Read replies until ``timeout`` passes without one; return how many were read."""
        self.sock.settimeout(timeout)
        n = 0
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                return n
            n += 1
            self._record(data)

    def ping(self, request_id: int, timeout: float = 10.0) -> float:
        """Round trip of one ping, in seconds (replies that arrive meanwhile are recorded)."""
        t0 = time.monotonic()
        self.send(encode_message("/latentloop/ping", [request_id]))
        deadline = t0 + timeout
        while request_id not in self.pongs:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no pong for ping {request_id}"
            self.sock.settimeout(remaining)
            data, _ = self.sock.recvfrom(65536)
            self._record(data)
        return self.pongs[request_id] - t0

    def _record(self, data: bytes) -> None:
        now = time.monotonic()
        for timed in OscPacket(data).messages:
            address, args = timed.message.address, list(timed.message.params)
            self.replies[address] += 1
            if address == "/latentloop/pong":
                self.pongs[args[0]] = now
            elif address == "/latentloop/done" or (
                address == "/latentloop/fail" and len(args) > 1 and args[1] == "render"
            ):
                self.finals.setdefault(args[0], []).append(address)

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    """Resident memory of a process (Linux), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
