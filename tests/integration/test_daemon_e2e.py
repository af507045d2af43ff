"""End to end: `latentloop serve` as a real process, spoken to over real UDP on 127.0.0.1.

One shared daemon (module scope, `shared`) serves every test that leaves it as it found it:
each test talks from its own sockets (request ids are scoped by sender), and its `peers`
cancel whatever they still have queued or running when the test ends. Tests that need another
configuration, watch the start-up, or stop the daemon start their own (`daemon_factory`, and
`small_queue`, which the queue test and the first signal test share).
Renders use the built-in `tiny` model with 2-4 steps; `LONG_STEPS` renders keep the worker
busy (about a minute) and are always cancelled.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import audio_checks
import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from latentloop_bridge.client import Client, RenderFailed
from latentloop_bridge.packets import unix_to_ntp
from latentloop_bridge.protocol import encode_message

HOST = "127.0.0.1"
SAMPLE_RATE = 44100  # the tiny model's rate
LONG_STEPS = 1000  # the protocol's maximum: ~1 min of sampling on a CPU, so always cancelled
SHARED_SECONDS = 3.0  # render.seconds of the shared daemon (the built-in default is 8)
RENDER_T = 60.0  # generous wait for one short render on a loaded 2-core machine

RENDER, CANCEL, STATUS, PING, NOTIFY = (
    "/latentloop/render", "/latentloop/cancel", "/latentloop/status", "/latentloop/ping",
    "/latentloop/notify",
)  # fmt: skip
QUEUED, PROGRESS, DONE, FAIL = (
    "/latentloop/queued", "/latentloop/progress", "/latentloop/done", "/latentloop/fail",
)  # fmt: skip
STATUS_REPLY, PONG, NOTIFY_REPLY = (
    "/latentloop/status.reply", "/latentloop/pong", "/latentloop/notify.reply",
)  # fmt: skip

V1_ARGS = {
    QUEUED: 2, PROGRESS: 4, DONE: 7, FAIL: 4, STATUS_REPLY: 6, PONG: 2, NOTIFY_REPLY: 3,
}  # fmt: skip


STATE_FILES = (".latentloop.lock", ".latentloop.journal")  # the daemon's own, in its folder
_ids = itertools.count(101)  # unique across the module, so replies seen by subscribers match


def new_id() -> int:
    return next(_ids)


# --- a raw UDP peer -----------------------------------------------------------------------------


@dataclass
class Reply:
    """One message received, decoded with python-osc (not the bridge's own parser)."""

    address: str
    args: list
    t: float  # time.monotonic() at arrival
    files_on_arrival: tuple[bool, bool] | None = None  # /done: did the WAV and JSON exist?

    @property
    def v1(self) -> list:
        """The arguments protocol v1 defines (later versions may append more)."""
        return self.args[: V1_ARGS[self.address]]


Match = Callable[[Reply], bool]


def is_(address: str, request_id: int | None = None) -> Match:
    return lambda r: r.address == address and (request_id is None or r.args[0] == request_id)


def about(request_id: int) -> Match:
    return lambda r: bool(r.args) and r.args[0] == request_id


class Peer:
    """A UDP socket on 127.0.0.1 that talks to the daemon and keeps every reply it receives."""

    def __init__(self, daemon_port: int | None, port: int = 0) -> None:
        self.daemon = (HOST, daemon_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((HOST, port))
        self.replies: list[Reply] = []

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: int | float | str) -> None:
        self.send_raw(encode_message(address, list(args)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.daemon)

    def render(self, prompt: str, request_id: int | None = None, **params) -> int:
        """Send a canonical render; return its id."""
        rid = new_id() if request_id is None else request_id
        args: list[int | float | str] = [rid, "prompt", prompt]
        for name, value in params.items():
            args += [name, value]
        self.send(RENDER, *args)
        return rid

    def _receive(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data, _ = self.sock.recvfrom(65536)
        except TimeoutError:
            return False
        t = time.monotonic()
        for timed in OscPacket(data).messages:
            msg = timed.message
            reply = Reply(msg.address, list(msg.params), t)
            if msg.address == DONE:  # look at the files now, at the moment /done arrives
                wav = Path(msg.params[1])
                reply.files_on_arrival = (wav.is_file(), wav.with_suffix(".json").is_file())
            self.replies.append(reply)
        return True

    def collect(self, match: Match, count: int, timeout: float, since: int = 0) -> list[Reply]:
        """The first `count` replies (from index `since` on) that match; fewer after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.replies[since:] if match(r)]
            if len(found) >= count or not self._receive(deadline):
                return found[:count]

    def wait(self, match: Match, count: int = 1, timeout: float = 10.0, since: int = 0):
        found = self.collect(match, count, timeout, since)
        assert len(found) == count, (
            f"{len(found)} of {count} expected replies within {timeout:g} s; "
            f"got: {self.replies[since:]}"
        )
        return found

    def expect(self, address: str, request_id: int, timeout: float = 10.0, since: int = 0):
        """The first reply `address` for `request_id`; a `/fail` instead fails the test."""
        wanted, failed = is_(address, request_id), is_(FAIL, request_id)
        found = self.wait(lambda r: wanted(r) or (address != FAIL and failed(r)), 1, timeout, since)
        assert found[0].address == address, f"expected {address}, got {found[0]}"
        return found[0]

    def quiet(self, match: Match, for_s: float, since: int = 0) -> None:
        """Assert that nothing matching arrives for `for_s` seconds."""
        found = self.collect(match, 1, for_s, since)
        assert not found, f"unexpected reply: {found[0]}"

    def drain(self) -> int:
        """Read what is waiting; return the index of the next reply."""
        while self._receive(time.monotonic() + 0.05):
            pass
        return len(self.replies)

    def settle(self, timeout: float = 30.0) -> None:
        """Cancel all of this peer's jobs; return once the daemon has none left from it.

        `cancel -1` answers `not_found` only when the sender has no queued or running job; a
        running job's cancel flag is seen at its next sampler step.
        """
        not_found = lambda r: r.address == FAIL and r.args[:3] == [-1, "cancel", "not_found"]  # noqa: E731
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            since = len(self.replies)
            self.send(CANCEL, -1)
            if self.collect(not_found, 1, 0.5, since):
                return
        raise AssertionError(f"jobs of {HOST}:{self.port} still running after {timeout:g} s")


# --- OSC bytes that a normal client library would not send ---------------------------------------


def osc_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return raw + b"\x00" * (4 - len(raw) % 4)


def raw_message(address: str, tags: str, payload: bytes = b"") -> bytes:
    return osc_string(address) + osc_string(tags) + payload


def bundle(unix_time: float, *elements: bytes) -> bytes:
    """`#bundle` timetagged at `unix_time` (NTP on the wire) holding `elements`."""
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return b"#bundle\x00" + struct.pack(">Q", unix_to_ntp(unix_time)) + body


def with_blob(request_id: int, name: str, blob: bytes) -> bytes:
    builder = OscMessageBuilder(RENDER)
    for value, tag in ((request_id, "i"), ("prompt", "s"), ("x", "s"), (name, "s"), (blob, "b")):
        builder.add_arg(value, tag)
    return builder.build().dgram


# --- files --------------------------------------------------------------------------------------


def expected_frames(bpm: float, bars: float, beats_per_bar: int) -> int:
    """n = round(bars x beats_per_bar x 60 x 44100 / bpm), exactly."""
    return round(Fraction(bars) * beats_per_bar * 60 * SAMPLE_RATE / Fraction(bpm))


def assert_only_complete_pairs(out_dir: Path) -> set[str]:
    """No temp files, and every WAV has its sidecar (and vice versa); return the stems."""
    names = sorted(p.name for p in out_dir.iterdir() if p.name not in STATE_FILES)
    assert not [n for n in names if n.startswith(".latentloop-")], names
    wavs = {Path(n).stem for n in names if n.endswith(".wav")}
    sidecars = {Path(n).stem for n in names if n.endswith(".json")}
    assert wavs == sidecars and len(names) == 2 * len(wavs), names
    for stem in wavs:
        assert sf.info(str(out_dir / f"{stem}.wav")).frames > 0
        json.loads((out_dir / f"{stem}.json").read_text())
    return wavs


def files_from(out_dir: Path, prompt: str) -> list[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return [p.name for p in out_dir.iterdir() if p.name.startswith(slug)]


# --- fixtures -----------------------------------------------------------------------------------


@dataclass
class Shared:
    daemon: object  # conftest.DaemonProcess
    port: int
    out_dir: Path
    target: Peer  # the fixed reply target (`--reply-target`)
    early: Peer  # sent a render while the model was loading
    early_id: int


@pytest.fixture(scope="module")
def shared(module_daemon_factory, tmp_path_factory):
    """One daemon for the tests that do not disturb each other.

    It renders requests sent during start-up (`render.while_loading = "queue"`, set through
    the environment), defaults to 3 s renders, and sends every reply to a fixed target too.
    One render is sent as soon as the port is known, for the start-up test.
    """
    out_dir = tmp_path_factory.mktemp("shared") / "out"
    target, early = Peer(None), Peer(None)
    env = {
        "LATENTLOOP_RENDER_WHILE_LOADING": "queue",
        "LATENTLOOP_RENDER_SECONDS": str(SHARED_SECONDS),
    }
    try:
        daemon = module_daemon_factory(
            "--no-warmup", "--reply-target", f"{HOST}:{target.port}", out_dir=out_dir, env=env
        )
        port = daemon.wait_port()
        target.daemon = early.daemon = (HOST, port)
        early_id = early.render("early bird", bpm=120, bars=1, steps=2)
        early.expect(QUEUED, early_id)
        daemon.wait_ready()
        early.expect(DONE, early_id, timeout=RENDER_T)  # the worker is idle for the tests
        yield Shared(daemon, port, out_dir.resolve(), target, early, early_id)
    finally:
        early.close()
        target.close()


@pytest.fixture
def peers(shared):
    """Make sockets that talk to the shared daemon; their jobs are cancelled at the end."""
    made: list[Peer] = []

    def make(port: int = 0) -> Peer:
        peer = Peer(shared.port, port)
        made.append(peer)
        return peer

    yield make
    try:
        for peer in made:
            peer.settle()
    finally:
        for peer in made:
            peer.close()


@pytest.fixture(scope="module")
def small_queue(module_daemon_factory):
    """Get a ready daemon with `--queue-size 1`; a new one once a test has stopped it.

    The queue test leaves it running and idle, the signal tests stop it: so the SIGTERM test
    reuses the queue test's daemon, and only the SIGINT test pays for another start.
    """
    started = []

    def get():
        if not started or started[-1].proc.poll() is not None:
            started.append(module_daemon_factory("--no-warmup", "--queue-size", "1"))
        return started[-1]

    return get


def start_long_job(peer: Peer, prompt: str) -> int:
    """Render `LONG_STEPS` steps and return once it runs (its first /progress)."""
    rid = peer.render(prompt, seconds=1, steps=LONG_STEPS)
    peer.expect(PROGRESS, rid, timeout=RENDER_T)
    return rid


# --- 1-3: renders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bpm", "bars", "beats_per_bar"),
    [(120, 1, 4), (93.0, 2.0, 3)],  # ints as `i`, floats as `f`
    ids=["120bpm-1bar-4/4", "93bpm-2bars-3/4"],
)
def test_render_round_trip_writes_an_exact_loop_and_its_sidecar(
    shared, peers, bpm, bars, beats_per_bar
):
    peer = peers()
    prompt = f"round trip {bpm:g}"
    seed = "1234567890123"  # above 2^32, as a decimal string (what Pd must send)
    rid = peer.render(prompt, bpm=bpm, bars=bars, beats_per_bar=beats_per_bar, steps=3, seed=seed)

    queued = peer.expect(QUEUED, rid)
    done = peer.expect(DONE, rid, timeout=RENDER_T)
    progress = [r for r in peer.replies if is_(PROGRESS, rid)(r)]

    assert queued.v1 == [rid, 0]
    assert progress, "no /progress before /done"
    assert all(queued.t <= p.t <= done.t for p in progress)
    assert progress[-1].v1 == [rid, 3, 3, pytest.approx(1.0)]  # the last step is always sent
    frames = expected_frames(bpm, bars, beats_per_bar)
    path = Path(done.args[1])
    assert done.v1 == [
        rid, str(path), pytest.approx(frames / SAMPLE_RATE), float(bpm), float(bars), seed, 0,
    ]  # fmt: skip
    assert isinstance(done.args[5], str)  # the seed travels as a string
    assert done.files_on_arrival == (True, True), "/done arrived before the files existed"
    assert path.is_absolute() and path.parent == shared.out_dir
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 2, frames)
    audio, _ = sf.read(str(path), dtype="float32")
    assert audio.shape == (frames, 2) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["file"] == path.name
    assert sidecar["seed"] == int(seed) and sidecar["frames"] == frames
    request = {
        "id": rid, "sender": f"{HOST}:{peer.port}", "prompt": prompt, "negative": None,
        "bpm": float(bpm), "bars": float(bars), "beats_per_bar": beats_per_bar, "seconds": None,
        "key": None, "seed": int(seed), "steps": 3, "cfg": None, "variations": 1,
    }  # fmt: skip
    assert {name: sidecar["request"].get(name) for name in request} == request
    assert sidecar["settings"]["model"] == "tiny"
    assert sidecar["settings"]["steps"] == 3 and sidecar["settings"]["seconds_total"] > 0
    assert sidecar["sample_rate"] == SAMPLE_RATE and sidecar["channels"] == 2


def test_python_client_round_trip(shared):
    steps: list[tuple[int, int, float]] = []
    with Client(HOST, shared.port) as client:
        assert client.ping() == 1
        assert client.status().state == "ready"
        files = client.render_and_wait(
            "python client", bpm=93, bars=2, beats_per_bar=3, steps=2, seed=42, variations=2,
            on_progress=lambda step, total, fraction: steps.append((step, total, fraction)),
            timeout=RENDER_T,
        )  # fmt: skip
        with pytest.raises(RenderFailed) as failed:
            client.render_and_wait("x", bpm=5000, timeout=10)

    assert steps and steps[-1][:2] == (2, 2) and 0 < steps[-1][2] <= 1
    assert [(f.variation, f.seed, f.bpm, f.bars) for f in files] == [(0, 42, 93, 2), (1, 42, 93, 2)]
    for f in files:
        assert sf.info(f.path).frames == expected_frames(93, 2, 3)
        assert f.seconds == pytest.approx(expected_frames(93, 2, 3) / SAMPLE_RATE)
    assert (failed.value.code, failed.value.message) == ("invalid", "bpm must be 20..999, got 5000")


@pytest.mark.parametrize(
    ("params", "seconds", "bpm", "bars"),
    [
        ({"seconds": 1.5}, 1.5, 0.0, 0.0),
        ({}, SHARED_SECONDS, 0.0, 0.0),  # render.seconds (set to 3 for the shared daemon)
        ({"bpm": 240}, 4.0, 240.0, 4.0),  # render.bars (4) of 4/4 at 240 bpm
    ],
    ids=["seconds", "default-seconds", "default-bars"],
)
def test_render_lengths_in_seconds_and_defaults(shared, peers, params, seconds, bpm, bars):
    peer = peers()
    rid = peer.render(f"lengths {sorted(params)}", steps=2, **params)

    done = peer.expect(DONE, rid, timeout=RENDER_T)

    assert done.args[2:5] == [pytest.approx(seconds), bpm, bars]
    assert sf.info(done.args[1]).frames == round(seconds * SAMPLE_RATE)


def test_variations_give_one_done_and_one_file_each(shared, peers):
    peer = peers()
    rid = peer.render("three variations", bpm=120, bars=1, steps=2, variations=3, seed="777")

    dones = peer.wait(is_(DONE, rid), count=3, timeout=RENDER_T)

    assert len(peer.collect(is_(QUEUED, rid), 2, 0)) == 1
    assert sorted(d.args[6] for d in dones) == [0, 1, 2]
    assert {d.args[5] for d in dones} == {"777"}
    paths = {d.args[1] for d in dones}
    assert len(paths) == 3 and all(d.files_on_arrival == (True, True) for d in dones)
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(paths)]
    assert all(c.shape == (SAMPLE_RATE * 2, 2) for c in clips)
    assert not np.array_equal(clips[0], clips[1]) and not np.array_equal(clips[1], clips[2])


def test_a_length_the_model_cannot_render_fails_as_invalid(shared, peers):
    peer = peers()
    rid = peer.render("too long for tiny", seconds=30, steps=2)

    fail = peer.expect(FAIL, rid, timeout=RENDER_T)

    assert fail.v1[:3] == [rid, "render", "invalid"]
    assert re.search(r"\b30\.00 s\b.* longer than tiny\b.*\b23\.78 s\b", fail.args[3]), fail
    assert not files_from(shared.out_dir, "too long for tiny")


# --- 4-5: cancel and replace --------------------------------------------------------------------


def test_cancel_a_queued_job_drops_it_before_it_runs(shared, peers):
    peer = peers()
    running = start_long_job(peer, "cancel queued: blocker")
    prompt = f"never runs {new_id()}"
    queued = peer.render(prompt, seconds=1, steps=2)
    assert peer.expect(QUEUED, queued).v1 == [queued, 1]

    peer.send(CANCEL, queued)

    fail = peer.expect(FAIL, queued, timeout=5)
    assert fail.v1 == [queued, "render", "cancelled", "cancelled by the client"]
    since = len(peer.replies)
    peer.wait(is_(PROGRESS, running), since=since)  # the running job goes on
    peer.send(CANCEL, running)
    peer.expect(FAIL, running, since=since)
    after = peer.render("cancel queued: next", seconds=1, steps=2)
    # the queue is first in, first out: had the cancelled job stayed, it would run first
    peer.expect(DONE, after, timeout=RENDER_T, since=since)
    assert not [r for r in peer.replies[since:] if about(queued)(r)]
    assert f"started: {prompt!r}" not in shared.daemon.log
    assert not files_from(shared.out_dir, prompt)


def test_cancel_the_running_job_stops_it_at_its_next_step(shared, peers):
    peer = peers()
    prompt = f"cancel me while running {new_id()}"
    rid = peer.render(prompt, seconds=1, steps=LONG_STEPS)
    first, second = peer.wait(is_(PROGRESS, rid), count=2, timeout=RENDER_T)
    steps_per_s = (second.args[1] - first.args[1]) / (second.t - first.t)
    left_s = (LONG_STEPS - second.args[1]) / steps_per_s

    sent = time.monotonic()
    peer.send(CANCEL, rid)

    fail = peer.expect(FAIL, rid, timeout=30)
    took_s = fail.t - sent
    assert fail.args[:3] == [rid, "render", "cancelled"]
    step = int(re.fullmatch(rf"cancelled at step (\d+)/{LONG_STEPS}", fail.args[3]).group(1))
    assert step < LONG_STEPS / 2
    # stopped long before the render would have ended; measured against this machine's own
    # speed, so a loaded machine (slower steps, slower replies) moves both sides together
    assert took_s < left_s / 4, (took_s, left_s)
    peer.quiet(is_(DONE, rid), 0.5)
    assert not files_from(shared.out_dir, prompt)


def test_cancel_minus_one_cancels_all_of_the_senders_jobs(shared, peers):
    peer = peers()
    running = start_long_job(peer, "cancel all: running")
    queued = [peer.render("cancel all: queued", seconds=1, steps=2) for _ in range(2)]
    for rid in queued:
        peer.expect(QUEUED, rid)

    peer.send(CANCEL, -1)

    for rid in [running, *queued]:
        assert peer.expect(FAIL, rid, timeout=10).args[:3] == [rid, "render", "cancelled"]
    assert not peer.collect(is_(FAIL, -1), 1, 0), "cancel -1 hit jobs yet answered not_found"


def test_cancel_from_another_sender_does_not_touch_the_job(shared, peers):
    owner, other = peers(), peers()
    rid = start_long_job(owner, "someone else's job")

    other.send(CANCEL, rid)
    other.send(CANCEL, -1)

    assert other.expect(FAIL, rid).v1 == [
        rid, "cancel", "not_found", f"no queued or running job with id {rid} from this sender",
    ]  # fmt: skip
    assert other.expect(FAIL, -1).args[:3] == [-1, "cancel", "not_found"]
    since = len(owner.replies)
    owner.wait(is_(PROGRESS, rid), since=since)  # still running
    assert not [r for r in owner.replies if is_(FAIL, rid)(r)]
    assert not [r for r in other.replies if r.address != FAIL]


def test_replace_drops_only_the_senders_queued_jobs(shared, peers):
    a, b = peers(), peers()
    running = start_long_job(a, "replace: running")
    old = [a.render("replace: old", seconds=1, steps=2) for _ in range(2)]
    theirs = b.render("replace: someone else", request_id=old[0], seconds=1, steps=2)  # same id
    assert [a.expect(QUEUED, rid).args[1] for rid in old] == [1, 2]
    assert b.expect(QUEUED, theirs).v1 == [theirs, 3]
    since_a, since_b = len(a.replies), len(b.replies)

    new = a.render("replace: new", seconds=1, steps=2, replace=1)

    for rid in old:
        assert a.expect(FAIL, rid, since=since_a).v1 == [
            rid, "render", "cancelled", "replaced by a newer request",
        ]  # fmt: skip
    assert a.expect(QUEUED, new).v1 == [new, 2]  # behind the running job and b's
    a.wait(is_(PROGRESS, running), since=len(a.replies))  # the running job goes on
    assert not [r for r in a.replies[since_a:] if is_(FAIL, running)(r)]
    b.send(STATUS, theirs)  # b's job, with the same id as a's first: still queued
    assert b.expect(STATUS_REPLY, theirs, since=since_b).args[6] == "queued"
    assert not [r for r in b.replies[since_b:] if r.address == FAIL]


# --- 6-7: queue limit and start-up --------------------------------------------------------------


@pytest.mark.slow
def test_a_full_queue_answers_busy(small_queue):
    port = small_queue().wait_ready()
    peer, other = Peer(port), Peer(port)
    try:
        start_long_job(peer, "queue full: running")
        queued = peer.render("queue full: queued", seconds=1, steps=2)
        assert peer.expect(QUEUED, queued).v1 == [queued, 1]

        refused = peer.render("queue full: refused", seconds=1, steps=2)
        theirs = other.render("queue full: also refused", seconds=1, steps=2)

        assert peer.expect(FAIL, refused).v1 == [refused, "render", "busy", "queue full (1)"]
        assert other.expect(FAIL, theirs).v1 == [theirs, "render", "busy", "queue full (1)"]
        peer.send(STATUS, 9)
        assert peer.expect(STATUS_REPLY, 9).args[1:3] == ["ready", 1]
        peer.settle()
    finally:
        peer.close()
        other.close()


def test_render_while_loading_fails_but_ping_and_status_answer(daemon_factory):
    daemon = daemon_factory("--no-warmup")  # render.while_loading = "fail" (the default)
    port = daemon.wait_port()
    peer = Peer(port)
    try:
        rid = peer.render("too early", seconds=1, steps=2)
        peer.send(PING, 5)
        peer.send(STATUS, 6)

        fail = peer.expect(FAIL, rid)
        pong = peer.expect(PONG, 5)
        status = peer.expect(STATUS_REPLY, 6)
    finally:
        peer.close()
        loaded = [
            t
            for t, line in zip(daemon.line_times, daemon.lines, strict=False)
            if " ready on " in line
        ]
        daemon.kill()  # no need to wait for the model

    assert not loaded or loaded[0] > status.t, "the model was ready before the replies"
    assert fail.v1 == [
        rid, "render", "loading", "the model is still loading; retry when status says ready",
    ]  # fmt: skip
    assert pong.v1 == [5, 1]
    assert status.args[:4] == [6, "loading", 0, "tiny"]


def test_render_while_loading_waits_with_the_queue_policy(shared):
    """The shared daemon runs with LATENTLOOP_RENDER_WHILE_LOADING=queue (see `shared`)."""
    ready_t = shared.daemon.wait_log(" ready on ")
    queued = shared.early.expect(QUEUED, shared.early_id, timeout=0)
    done = shared.early.expect(DONE, shared.early_id, timeout=0)

    assert queued.t < ready_t < done.t
    assert queued.v1 == [shared.early_id, 0]
    assert done.files_on_arrival == (True, True)
    assert sf.info(done.args[1]).frames == SAMPLE_RATE * 2


# --- 8-9: bundles and bad input -----------------------------------------------------------------


def test_a_future_bundle_runs_at_its_time_without_blocking_reception(shared, peers):
    peer = peers()
    later, now, rid = new_id(), new_id(), new_id()
    delay_s = 1.5
    render = encode_message(RENDER, [rid, "prompt", "timetagged", "seconds", 1, "steps", 2])

    sent = time.monotonic()
    peer.send_raw(bundle(time.time() + delay_s, encode_message(PING, [later]), render))
    peer.send(PING, now)

    pong_now = peer.expect(PONG, now, timeout=30)
    pong_later = peer.expect(PONG, later, timeout=30)
    queued = peer.expect(QUEUED, rid, timeout=30)
    # the order proves reception went on while the bundle waited
    assert pong_now.t < pong_later.t <= queued.t
    # never early (50 ms: time.time() against time.monotonic()); on time within 5 s, a
    # margin for a loaded machine, far below what ignoring the timetag's value would give
    assert delay_s - 0.05 <= pong_later.t - sent < delay_s + 5.0
    assert delay_s - 0.05 <= queued.t - sent < delay_s + 5.0
    peer.expect(DONE, rid, timeout=RENDER_T)


BAD_INPUT = {
    "garbage": (
        b"hello, daemon!\n",
        [
            -1,
            "?",
            "malformed",
            "not an OSC packet: it starts with b'hello, d'; "
            "a message starts with '/' and a bundle with '#bundle'",
        ],
    ),
    "empty datagram": (b"", [-1, "?", "malformed", "empty datagram"]),
    "truncated message": (
        encode_message(RENDER, [7])[:-2],
        [
            -1,
            "render",
            "malformed",
            "/latentloop/render: argument 1 (type 'i'): needs 4 bytes at offset 24, 2 left",
        ],
    ),
    "unsupported type tag": (
        raw_message(PING, ",x", b"\x00\x00\x00\x01"),
        [-1, "ping", "malformed", "/latentloop/ping: argument 1: unsupported type tag 'x'"],
    ),
    "type tags without comma": (
        raw_message(PING, "i", b"\x00\x00\x00\x01"),
        [-1, "ping", "malformed", "/latentloop/ping: type tag string must start with ',', got 'i'"],
    ),
    "array": (
        raw_message(PING, ",[i]", b"\x00\x00\x00\x01"),
        [
            -1,
            "ping",
            "malformed",
            "/latentloop/ping: argument 1: arrays ('[' ... ']') are not supported",
        ],
    ),
    "truncated bundle": (
        b"#bundle\x00" + struct.pack(">Qi", 1, 16) + encode_message(PING, [])[:8],
        [-1, "?", "malformed", "bundle element 1 at offset 16: claims 16 bytes but 8 remain"],
    ),
    "unknown address": (
        encode_message("/latentloop/mute", [9]),
        [
            9,
            "mute",
            "unknown",
            "unknown address /latentloop/mute; the requests are audio, auth, cancel, gain, "
            "link, notify, ping, play, render, status, stop, tempo, transport",
        ],
    ),
    "foreign address": (
        encode_message("/s_new", ["default"]),
        [
            -1,
            "/s_new",
            "unknown",
            "unknown address /s_new; latentloop's requests are "
            "/latentloop/{audio, auth, cancel, gain, link, notify, ping, play, render, status, "
            "stop, tempo, transport}",
        ],
    ),
    "blob as bpm": (
        with_blob(7, "bpm", b"\x01\x02\x03"),
        [7, "render", "invalid", "bpm must be a number, got blob (3 bytes)"],
    ),
    "string as steps": (
        encode_message(RENDER, [7, "prompt", "x", "steps", "two"]),
        [7, "render", "invalid", "steps must be a number, got string 'two'"],
    ),
    "fractional steps": (
        encode_message(RENDER, [7, "prompt", "x", "steps", 2.5]),
        [7, "render", "invalid", "steps must be a whole number, got float 2.5"],
    ),
    "bpm 5000": (
        encode_message(RENDER, [7, "prompt", "x", "bpm", 5000]),
        [7, "render", "invalid", "bpm must be 20..999, got 5000"],
    ),
    "bpm NaN": (
        encode_message(RENDER, [7, "prompt", "x", "bpm", float("nan")]),
        [7, "render", "invalid", "bpm must be a finite number, got nan"],
    ),
    "variations 0": (
        encode_message(RENDER, [7, "prompt", "x", "variations", 0]),
        [7, "render", "invalid", "variations must be 1..16, got 0"],
    ),
    "steps 0": (
        encode_message(RENDER, [7, "prompt", "x", "steps", 0]),
        [7, "render", "invalid", "steps must be 1..1000, got 0"],
    ),
    "negative seconds": (
        encode_message(RENDER, [7, "prompt", "x", "seconds", -2.0]),
        [7, "render", "invalid", "seconds must be > 0 and <= 600, got -2"],
    ),
    "unknown parameter": (
        encode_message(RENDER, [7, "prompt", "x", "tempo", 120]),
        [
            7,
            "render",
            "invalid",
            "unknown render parameter 'tempo'; known: prompt, negative, "
            "bpm, bars, beats_per_bar, seconds, key, seed, steps, cfg, variations, replace, "
            "play, token",
        ],
    ),
    "duplicate parameter": (
        encode_message(RENDER, [7, "prompt", "x", "bpm", 120, "bpm", 121]),
        [7, "render", "invalid", "duplicate render parameter 'bpm'"],
    ),
    "parameter without value": (
        encode_message(RENDER, [7, "prompt", "x", "bpm", 120, "bars"]),
        [7, "render", "invalid", "render parameter 'bars' has no value"],
    ),
    "seconds with bpm": (
        encode_message(RENDER, [7, "prompt", "x", "bpm", 120, "seconds", 2]),
        [7, "render", "invalid", "give either seconds or bpm and bars, not both"],
    ),
    "positional with words first": (
        encode_message(RENDER, ["dark techno", 4, "loop"]),
        [
            -1,
            "render",
            "invalid",
            "the positional form is render <bpm> <bars> <prompt words...>;"
            " its first argument must be a number, got string 'dark techno'",
        ],
    ),
    "too few render arguments": (
        encode_message(RENDER, [7]),
        [
            7,
            "render",
            "invalid",
            "render needs at least 2 arguments, got 1: render <id> <name> "
            "<value> ... or render <bpm> <bars> <prompt words...>",
        ],
    ),
    "ping with two ids": (
        encode_message(PING, [1, 2]),
        [1, "ping", "invalid", "usage: ping [<id>]; got 2 arguments"],
    ),
    "cancel without id": (
        encode_message(CANCEL, []),
        [-1, "cancel", "invalid", "usage: cancel <id> (-1: all your jobs); got 0 arguments"],
    ),
    "notify port out of range": (
        encode_message(NOTIFY, [1, 70000]),
        [-1, "notify", "invalid", "port must be 1..65535, got 70000"],
    ),
}


@pytest.mark.parametrize(("datagram", "fail"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gets_a_precise_fail_and_the_daemon_stays_up(shared, peers, datagram, fail):
    peer = peers()

    peer.send_raw(datagram)

    assert peer.wait(is_(FAIL)).pop().v1 == fail
    peer.send(PING, 77)
    assert peer.expect(PONG, 77).v1 == [77, 1]
    assert [r.address for r in peer.replies] == [FAIL, PONG]  # one outcome per datagram


def test_replies_sent_to_the_daemon_are_not_answered(shared, peers):
    peer = peers()
    peer.send(DONE, 1, "/tmp/x.wav", 1.0, 120.0, 1.0, "1", 0)
    peer.send("/fail", "/s_new", "no such synthdef")  # scsynth style
    peer.send(PING, 78)

    assert peer.expect(PONG, 78).v1 == [78, 1]
    # handled in order: an answer to either reply would have come before the pong
    assert [r.address for r in peer.replies] == [PONG]


# --- 10-11: signals and a busy port -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_render_stops_cleanly(small_queue, sig):
    daemon = small_queue()
    out_dir = Path(daemon.out_dir)
    peer = Peer(daemon.wait_ready())
    try:
        paths = [p.name for p in out_dir.iterdir() if p.name not in STATE_FILES]
        assert not paths, paths  # the queue test leaves no files
        finished = peer.render("finished before the signal", seconds=1, steps=2)
        paths = [peer.expect(DONE, finished, timeout=RENDER_T).args[1]]
        running = start_long_job(peer, "interrupted by a signal")
        queued = peer.render("queued at the signal", seconds=1, steps=2)
        peer.expect(QUEUED, queued)

        daemon.proc.send_signal(sig)
        # the running render has about a minute left: an exit within 30 s means it was
        # cancelled, not waited for (a loaded machine needs only seconds for the shutdown)
        code = daemon.wait_exit(timeout=30)

        cancelled = peer.expect(FAIL, running)
        assert cancelled.args[:3] == [running, "render", "cancelled"]
        step = re.fullmatch(rf"cancelled at step (\d+)/{LONG_STEPS}", cancelled.args[3])
        assert step is not None and int(step.group(1)) < LONG_STEPS, cancelled
        assert peer.expect(FAIL, queued).v1 == [
            queued, "render", "cancelled", "the daemon is shutting down",
        ]  # fmt: skip
    finally:
        peer.close()
    assert code == 0, daemon.log
    assert "did not stop within" not in daemon.log  # the worker stopped, it was not abandoned
    assert f"received {sig.name}, stopping" in daemon.log
    assert daemon.lines[-1].endswith(": stopped"), daemon.log
    assert "Traceback" not in daemon.log
    assert [Path(p).stem for p in paths] == sorted(assert_only_complete_pairs(out_dir))


def test_a_second_sigint_forces_exit_during_a_slow_shutdown(daemon_factory):
    # Shutdown waits (up to render.cancel_timeout_s) for the worker, which cannot be
    # interrupted while it loads and warms up the model: seconds on a CPU.
    daemon = daemon_factory()
    daemon.wait_port()
    daemon.proc.send_signal(signal.SIGINT)
    daemon.wait_log("received SIGINT, stopping")
    if any(" ready on " in line or ": stopped" in line for line in daemon.lines):
        pytest.skip("the model loaded too fast to make the shutdown slow")

    daemon.proc.send_signal(signal.SIGINT)
    code = daemon.wait_exit(timeout=30)

    # forced, not clean: the exit code and the missing "stopped" line show it, no timing
    assert code == 130, daemon.log
    assert "second interrupt: forcing exit" in daemon.log
    assert not any(line.endswith(": stopped") for line in daemon.lines)


def test_a_second_daemon_on_the_same_port_fails_fast(shared, daemon_factory, peers):
    second = daemon_factory("--no-warmup", "--port", str(shared.port))

    code = second.wait_exit(timeout=60)

    assert code == 3, second.log
    # fast = before loading the model (the port is bound first), not a wall-clock bound
    assert "loading model" not in second.log
    assert not any(" loaded " in line for line in second.lines)
    assert f"port {shared.port} on 127.0.0.1 is already in use" in second.log
    assert "Traceback" not in second.log
    peer = peers()
    peer.send(PING, 79)
    assert peer.expect(PONG, 79).v1 == [79, 1]


# --- 12: subscribers and fixed targets ----------------------------------------------------------


def test_notify_subscribers_receive_other_clients_job_replies(shared, peers):
    client, subscriber, max_port = peers(), peers(), peers()

    subscriber.send(NOTIFY, 1)
    assert subscriber.expect(NOTIFY_REPLY, -1).v1 == [-1, 1, subscriber.port]
    client.send(NOTIFY, 1, max_port.port)  # a port that cannot send (Max's [udpreceive])
    assert client.expect(NOTIFY_REPLY, -1).v1 == [-1, 1, max_port.port]
    assert max_port.expect(NOTIFY_REPLY, -1).v1 == [-1, 1, max_port.port]

    rid = client.render("for the subscribers", seconds=1, steps=2)
    done = client.expect(DONE, rid, timeout=RENDER_T)

    for peer in (subscriber, max_port):
        assert peer.expect(QUEUED, rid).v1 == [rid, 0]
        assert peer.wait(is_(PROGRESS, rid))
        assert peer.expect(DONE, rid).args == done.args

    subscriber.send(NOTIFY, 0)
    assert subscriber.expect(NOTIFY_REPLY, -1, since=len(subscriber.replies)).v1 == [
        -1, 0, subscriber.port,
    ]  # fmt: skip
    client.send(NOTIFY, 0, max_port.port)
    client.expect(NOTIFY_REPLY, -1, since=len(client.replies))
    after = client.render("too long: fails at once", seconds=30)  # a job's queued + fail
    client.expect(FAIL, after, timeout=RENDER_T)
    subscriber.quiet(about(after), 0.3)
    max_port.drain()
    max_port.quiet(about(after), 0)


def test_a_fixed_reply_target_receives_every_reply(shared, peers):
    target, peer = shared.target, peers()
    since = target.drain()
    ping_id, status_id = new_id(), new_id()

    peer.send(PING, ping_id)
    peer.send(STATUS, status_id)
    peer.send(RENDER, status_id, "prompt", "x", "bpm", 5000)
    rid = peer.render("for the fixed target", seconds=1, steps=2)
    done = peer.expect(DONE, rid, timeout=RENDER_T)

    assert target.expect(PONG, ping_id, since=since).v1 == [ping_id, 1]
    assert target.expect(STATUS_REPLY, status_id, since=since).args[1] == "ready"
    assert target.expect(FAIL, status_id, since=since).args[2] == "invalid"
    assert target.expect(QUEUED, rid, since=since).v1 == [rid, 0]
    assert target.wait(is_(PROGRESS, rid), since=since)
    assert target.expect(DONE, rid, since=since).args == done.args


# --- 13-14: the command line --------------------------------------------------------------------


def latentloop(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("latentloop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "latentloop_daemon"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout,
        env={"OMP_NUM_THREADS": "1", **os.environ},
    )  # fmt: skip


def test_cli_send_prints_the_path(shared):
    result = latentloop(
        "send", "cli loop", "--bpm", "120", "--bars", "1", "--steps", "2",
        "--port", str(shared.port), "--timeout", str(RENDER_T),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.is_file() and path.parent == shared.out_dir
    assert sf.info(str(path)).frames == expected_frames(120, 1, 4)


def test_cli_ping_and_status(shared):
    ping = latentloop("ping", "--port", str(shared.port))
    status = latentloop("status", "--port", str(shared.port))

    assert ping.returncode == 0, ping.stderr
    assert re.fullmatch(
        rf"pong from 127\.0\.0\.1:{shared.port}: protocol 1, [\d.]+ ms\n", ping.stdout
    )
    assert status.returncode == 0, status.stderr
    assert re.fullmatch(
        r"state ready  queue 0  model tiny  device cpu  version \S+\n", status.stdout
    ), status.stdout


def test_cli_send_with_an_invalid_value_reports_the_daemons_message(shared):
    result = latentloop("send", "x", "--bpm", "5000", "--bars", "1", "--port", str(shared.port))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "latentloop: render failed: invalid: bpm must be 20..999, got 5000" in result.stderr


def test_cli_ping_without_a_daemon_times_out():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]  # free now, and nobody listens there once closed

    started = time.monotonic()
    result = latentloop("ping", "--port", str(port), "--timeout", "0.5")

    assert result.returncode == 1
    assert 0.5 <= time.monotonic() - started < 10
    assert f"latentloop: no answer from 127.0.0.1:{port} within 0.5s" in result.stderr


def test_cli_watch_prints_the_replies_of_another_client(shared, peers):
    exe = Path(sys.executable).with_name("latentloop")
    since = shared.target.drain()
    watch = subprocess.Popen(
        [str(exe), "watch", "--count", "3", "--port", str(shared.port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # subscribed: the notify.reply also goes to the fixed target
        shared.target.wait(is_(NOTIFY_REPLY, -1), since=since, timeout=30)
        peer = peers()
        rid = peer.render("for the watcher", seconds=1, steps=4)
        peer.expect(DONE, rid, timeout=RENDER_T)
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()

    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0] == f"/latentloop/queued {rid} 0"
    assert all(line.startswith(("/latentloop/progress", "/latentloop/done")) for line in lines[1:])
    assert all(line.split()[1] == str(rid) for line in lines[1:])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--port", "70000"], 2, "latentloop: osc.port must be 1..65535, got 70000"),
        (["--config", "{toml}"], 2, "unknown key osc.prot; known: host, port, reply_targets"),
        (
            ["--model", "/no/such/dir"],
            3,
            "cannot load model '/no/such/dir': no model '/no/such/dir': it is not an existing "
            "file or folder",
        ),
    ],
    ids=["port-out-of-range", "unknown-toml-key", "missing-model-folder"],
)
def test_serve_with_a_bad_config_exits_with_a_clear_message(tmp_path, args, code, message):
    toml = tmp_path / "latentloop.toml"
    toml.write_text("[osc]\nprot = 7878\n")
    args = [a.replace("{toml}", str(toml)) for a in args]

    result = latentloop(
        "serve", "--port", "0", "--out", str(tmp_path / "out"), "--no-audio", *args, timeout=60
    )

    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_loop_files_carry_chunks_loudness_and_seam_metric(shared, peers):
    """The loops pipeline through the real daemon and the tiny model, checked on the file:
    exact length, DAW loop chunks, loudness and true peak re-measured (pyloudnorm, 4x
    oversampling), a smooth wrap, the tempo check appended to /done. (Tiny makes noise: music
    quality is proven on synthetic signals in tests/daemon/loops/test_seam.py, test_loudness.py,
    test_tempo.py; the crossfade itself in test_the_crossfade_changes_only_the_loop_start.)"""
    from latentloop_daemon.files.riff import read_chunks

    peer = peers()
    rid = peer.render(
        "loop check", bpm=100, bars=2, beats_per_bar=3, key="F minor", steps=3, seed=1234
    )  # a fixed seed: noise around a ratio of 3 must not decide it
    done = peer.expect(DONE, rid, timeout=RENDER_T)
    frames = expected_frames(100, 2, 3)
    path = Path(done.args[1])
    assert sf.info(str(path)).frames == frames
    assert len(done.args) >= 9 and all(isinstance(a, float) for a in done.args[7:9])
    chunks = read_chunks(path)
    acid, smpl, cues = chunks["acid"], chunks["smpl"], chunks["cue"]
    assert acid["beats"] == 6 and acid["meter_numerator"] == 3 and acid["meter_denominator"] == 4
    assert acid["tempo"] == pytest.approx(6 * 60 * SAMPLE_RATE / frames, rel=1e-6)
    assert acid["root_note"] == 53  # F3
    assert smpl["loops"][0]["start"] == 0 and smpl["loops"][0]["end"] == frames - 1
    assert [c["position"] for c in cues] == [0, round(frames / 2)]
    assert chunks["labels"] == {1: "Bar 1", 2: "Bar 2"}
    assert chunks["info"]["INAM"] == "loop check, 100 BPM, F minor"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["final_prompt"] == "loop check, 100 BPM, F minor"
    assert side["key"] == "F minor" and side["meter"] == "3/4" and side["bars"] == 2

    audio, rate = audio_checks.read_loop(str(path))
    lufs, peak = audio_checks.integrated_lufs(audio, rate), audio_checks.true_peak_dbtp(audio)
    # One rule, whichever limit the noise hits: the gain is the largest that neither passes
    # the -14 LUFS target nor the -1 dBTP ceiling, so one of the two is met (0.1 dB: the
    # 24-bit file, and this measurement's own tiling of the loop)
    assert lufs <= -14.0 + 0.1 and peak <= -1.0 + 0.1, (lufs, peak)
    assert min(-14.0 - lufs, -1.0 - peak) == pytest.approx(0.0, abs=0.1), (lufs, peak)
    # the sidecar reports what the file holds
    assert side["loudness"]["lufs_after"] == pytest.approx(lufs, abs=0.1)
    assert side["loudness"]["true_peak_after_dbtp"] == pytest.approx(peak, abs=0.1)
    # the wrap is as smooth as the audio around it (docs/loops.md: treated seams measure
    # 0.4-2.7, clicks many times more; this seed measures 1.49)
    ratio = audio_checks.wrap_jump_ratio(audio, rate)
    print(f"wrap jump ratio {ratio:.2f}")
    assert ratio < 3.0
    assert side["seam"]["after"]["wrap_jump_ratio"] == pytest.approx(ratio, rel=0.05)
    assert side["seam"]["crossfade_frames"] == round(0.020 * SAMPLE_RATE)
    assert side["seconds_total_conditioning"] == pytest.approx(frames / SAMPLE_RATE + 2.0)


@pytest.mark.parametrize(("clicks", "rerolls"), [(120.0, 0), (126.0, 1)], ids=["in-tempo", "off"])
def test_the_tempo_check_agrees_with_the_tempo_measured_in_the_file(
    daemon_factory, clicks, rerolls
):
    """The tempo check, held to a measurement of the written file itself: a stand-in engine
    renders a click track at `clicks` BPM (tests/standin_daemon.py) for a 120 BPM request. In
    tempo: `/done` reports the tempo the file measures and no re-roll. 5 % off (past the 4 %
    `render.tempo_tolerance_pct`): one `/retry`, then the best attempt, whose `/done` tempo and
    deviation are again what the file measures. (The tiny model makes noise: no tempo.)"""
    env = {"LATENTLOOP_TEST_CLICK_BPM": str(clicks), "LATENTLOOP_RENDER_MAX_REROLLS": str(rerolls)}
    daemon = daemon_factory("--no-warmup", standin=True, env=env)
    peer = Peer(daemon.wait_port())
    try:
        daemon.wait_ready()
        rid = peer.render("click check", bpm=120, bars=2, steps=2)
        done = peer.expect(DONE, rid, timeout=RENDER_T)
        audio, rate = audio_checks.read_loop(done.args[1])
        assert audio.shape[0] == expected_frames(120, 2, 4)
        measured = audio_checks.click_tempo_bpm(audio, rate, beats=8)
        # the file holds the engine's clicks (their interval rounds to whole samples: < 0.01 %)
        assert measured == pytest.approx(clicks, rel=1e-3)
        # the daemon's own check (onset flux + circular autocorrelation, loops/tempo.py) agrees
        # with it within 0.5 % (its worst error on click tracks is 0.013 %, docs/loops.md)
        assert done.args[7] == pytest.approx(measured, rel=5e-3)
        assert done.args[8] == pytest.approx(100 * (measured - 120) / 120, abs=0.5)
        retries = [r for r in peer.replies if r.address == "/latentloop/retry" and r.args[0] == rid]
        assert len(retries) == rerolls
        for r in retries:
            assert r.args[1] == 1 and r.args[2] == pytest.approx(measured, rel=5e-3)
    finally:
        peer.close()


# --- 15: start-up failures, per-sender state, assigned ids --------------------------------------


def test_serve_exits_3_when_the_output_folder_cannot_be_created(tmp_path, daemon_factory):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out_dir = blocker / "out"  # under a regular file: mkdir fails

    daemon = daemon_factory("--no-warmup", out_dir=out_dir)
    code = daemon.wait_exit(timeout=60)

    assert code == 3, daemon.log
    assert f"cannot create the output folder {out_dir}" in daemon.log
    assert "listening on" not in daemon.log  # it stopped before serving anything
    assert "Traceback" not in daemon.log


def test_status_of_a_job_is_scoped_to_its_sender(shared, peers):
    owner, other = peers(), peers()
    finished = owner.render("status scope: finished", seconds=1, steps=2)
    path = owner.expect(DONE, finished, timeout=RENDER_T).args[1]
    running = start_long_job(owner, "status scope: running")

    for rid in (finished, running):
        owner.send(STATUS, rid)
        other.send(STATUS, rid)  # the same id from another socket names no job of its own

    assert owner.expect(STATUS_REPLY, finished).args[6:8] == ["done", path]
    assert owner.expect(STATUS_REPLY, running).args[6:8] == ["running", ""]
    assert other.expect(STATUS_REPLY, finished).args[6:8] == ["", ""]
    theirs = other.expect(STATUS_REPLY, running)
    assert theirs.args[1] == "ready" and theirs.args[6:8] == ["", ""]  # a status, no job


def test_a_positional_render_is_cancelled_by_its_assigned_id(shared, peers):
    peer, other = peers(), peers()
    start_long_job(peer, "assigned id: blocker")
    words = ["positional", "never", "runs", str(new_id())]
    since = len(peer.replies)

    peer.send(RENDER, 120, 1, *words)  # the positional form: the daemon assigns the id

    queued = peer.wait(is_(QUEUED), since=since).pop()
    assigned, position = queued.v1
    assert 100_000 <= assigned < 1_000_000 and position == 1
    other.send(CANCEL, assigned)  # ids are scoped by sender: not other's job
    assert other.expect(FAIL, assigned).v1[:3] == [assigned, "cancel", "not_found"]
    peer.send(CANCEL, assigned)
    assert peer.expect(FAIL, assigned, since=since).v1 == [
        assigned, "render", "cancelled", "cancelled by the client",
    ]  # fmt: skip
    prompt = " ".join(words)
    peer.settle()  # the blocker stops; the worker is free, and the positional job never ran
    assert f"started: {prompt!r}" not in shared.daemon.log
    assert not files_from(shared.out_dir, prompt)


# --- 16: settings from the config file reach the replies and the files ---------------------------

TUNED_TOML = """\
[render]
target_lufs = -20.0
crossfade_ms = 0.0
progress_interval_s = 0.0
"""


@pytest.fixture(scope="module")
def tuned(module_daemon_factory, tmp_path_factory):
    """A ready daemon started with `--config`: -20 LUFS, hard cut, a /progress every step."""
    config = tmp_path_factory.mktemp("tuned") / "latentloop.toml"
    config.write_text(TUNED_TOML)
    daemon = module_daemon_factory("--no-warmup", "--config", str(config))
    peer = Peer(daemon.wait_ready())
    yield peer
    peer.close()


@pytest.fixture
def tuned_peer(tuned):
    yield tuned
    tuned.settle()


def progress_steps(peer: Peer, rid: int) -> list[list]:
    return [r.v1[1:3] for r in peer.replies if is_(PROGRESS, rid)(r)]


def test_progress_interval_zero_reports_every_step(tuned_peer):
    rid = tuned_peer.render("every step", seconds=1, steps=4)

    tuned_peer.expect(DONE, rid, timeout=RENDER_T)

    assert progress_steps(tuned_peer, rid) == [[1, 4], [2, 4], [3, 4], [4, 4]]


def test_a_long_progress_interval_sends_the_first_and_the_last_step(daemon_factory):
    """`render.progress_interval_s` 60 (its maximum): the first step is always sent (whatever
    the machine's uptime: the interval's clock is `time.monotonic()`), the steps within the
    interval are dropped, the last is always sent."""
    daemon = daemon_factory("--no-warmup", env={"LATENTLOOP_RENDER_PROGRESS_INTERVAL_S": "60"})
    peer = Peer(daemon.wait_ready())
    try:
        rid = peer.render("first and last", seconds=1, steps=4)
        peer.expect(DONE, rid, timeout=RENDER_T)  # 4 tiny steps: seconds, well within 60 s
    finally:
        peer.close()

    assert progress_steps(peer, rid) == [[1, 4], [4, 4]]


def test_the_config_files_loudness_target_reaches_the_file(tuned_peer):
    """`[render] target_lufs = -20` in the `--config` file: the written loop measures -20 LUFS.

    Noise at -20 LUFS peaks about 10 dB below the -1 dBTP ceiling, so the target, not the
    ceiling, sets the gain (asserted, so a change in the model's output cannot hide it).
    """
    rid = tuned_peer.render("quieter", bpm=100, bars=2, beats_per_bar=3, steps=3, seed=5)

    path = tuned_peer.expect(DONE, rid, timeout=RENDER_T).args[1]

    audio, rate = audio_checks.read_loop(path)
    lufs, peak = audio_checks.integrated_lufs(audio, rate), audio_checks.true_peak_dbtp(audio)
    assert lufs == pytest.approx(-20.0, abs=0.1), (lufs, peak)
    assert peak < -3.0, (lufs, peak)  # far from the ceiling: the target set the gain


def test_the_crossfade_changes_only_the_loop_start(shared, peers, tuned_peer):
    """The same request (same seed) from the shared daemon (20 ms crossfade, -14 LUFS) and
    the tuned one (hard cut, -20 LUFS): past the first 20 ms the files differ only by a gain;
    within them, the crossfade changed the audio."""
    request = {"bpm": 120, "bars": 1, "steps": 3, "seed": 4242}
    peer = peers()
    faded = peer.render("seam compare", **request)
    cut = tuned_peer.render("seam compare", **request)
    a, rate = audio_checks.read_loop(peer.expect(DONE, faded, timeout=RENDER_T).args[1])
    b, _ = audio_checks.read_loop(tuned_peer.expect(DONE, cut, timeout=RENDER_T).args[1])

    fade = round(0.020 * rate)
    assert a.shape == b.shape == (expected_frames(120, 1, 4), 2)
    gain = float(np.sum(a[fade:] * b[fade:]) / np.sum(b[fade:] ** 2))
    rest = np.max(np.abs(a[fade:] - gain * b[fade:]))
    start = np.max(np.abs(a[:fade] - gain * b[:fade]))
    # 24-bit rounding only (~1e-7 on a CPU); 1e-3 leaves room for a GPU's rounding
    assert rest < 1e-3, (start, rest)
    assert start > 2e-2, (start, rest)  # the crossfade mixed in the continuation (~0.1)
