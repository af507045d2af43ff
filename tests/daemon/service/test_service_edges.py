"""Edges of a job's life that a real process cannot time: the in-process Service around a fake
engine that stops where the test needs it, spoken to over real UDP.

Imports only names that stay where they are when the daemon's modules move:
``config.load_config``, ``engine``, ``errors`` and ``service.Service``.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from fake_engines import capabilities
from inprocess import start_service, stop_service
from pythonosc.osc_packet import OscPacket

from latentloop_bridge.client import Client, RenderFailed
from latentloop_bridge.protocol import encode_message
from latentloop_daemon.config import load_config
from latentloop_daemon.engine import RenderResult
from latentloop_daemon.errors import RenderCancelled
from latentloop_daemon.service import Service
from latentloop_daemon.service.journal import JOURNAL_NAME

RATE = 44100
WINDOW = RATE * 10
WAIT_S = 30.0  # for events that come in milliseconds: room for a loaded 2-core machine


class HoldAfterLastStep:
    """An engine that runs every sampler step, then holds (the sampler has finished) until
    the job's cancel flag is set, and returns its audio as if nothing had happened."""

    def __init__(self) -> None:
        self.after_last_step = threading.Event()
        self.cancel_seen = threading.Event()
        self.capabilities = capabilities("hold", WINDOW, default_steps=3)

    def render(self, request, on_step=None, should_cancel=None):
        steps = request.steps or 3
        for i in range(1, steps + 1):
            if on_step:
                on_step(i, steps, 1.0 / i)
            if should_cancel and should_cancel():
                raise RenderCancelled(f"cancelled at step {i}/{steps}")
        self.after_last_step.set()  # no step is left to notice a cancel
        deadline = time.monotonic() + WAIT_S
        while should_cancel is not None and not should_cancel():
            assert time.monotonic() < deadline, "the cancel never reached the job"
            time.sleep(0.005)
        self.cancel_seen.set()
        rng = np.random.default_rng(request.seed or 0)
        audio = 0.1 * rng.standard_normal((request.batch_size, 2, WINDOW))
        return RenderResult(audio.astype(np.float32), RATE, request.seed or 5, {"steps": steps})

    def close(self) -> None:
        pass


@pytest.fixture
def held(tmp_path):
    """A running Service on 127.0.0.1:0 whose engine holds after the last step."""
    overrides = {"osc.port": 0, "render.out_dir": str(tmp_path / "out"), "engine.warmup": False}
    engine = HoldAfterLastStep()
    svc = Service(load_config(overrides=overrides, environ={}), loader=lambda: engine)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while svc.state != "ready":
        assert thread.is_alive() and time.monotonic() < deadline, "service did not start"
        time.sleep(0.01)
    yield svc, engine, tmp_path / "out"
    svc.should_exit.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_cancel_after_the_last_step_stops_the_job_before_files_are_written(held):
    """Broken on purpose (the worker's `if job.cancel_event.is_set()` check before
    `write_loops` removed), this test fails: the job writes its file and answers /done."""
    svc, engine, out_dir = held
    with Client("127.0.0.1", svc.server.bound_address[1], timeout=WAIT_S) as client:
        rid = client.render("held after the last step", bpm=120, bars=1, steps=3, seed=7)
        assert engine.after_last_step.wait(WAIT_S)
        client.cancel(rid)
        with pytest.raises(RenderFailed) as failed:
            client.wait_for(rid, ["/latentloop/done"], timeout=WAIT_S)
        client.send("/latentloop/status", [rid])  # the job's state and why, for a missed /fail
        _, status = client.wait_for(rid, ["/latentloop/status.reply"], timeout=WAIT_S)

    assert engine.cancel_seen.is_set()  # the engine returned its audio: the worker had it
    assert (failed.value.code, failed.value.message) == (
        "cancelled",
        "cancelled before the files were written",
    )
    assert (status[6], status[10]) == (
        "cancelled",
        "cancelled: cancelled before the files were written",
    )
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == []
    (job,) = svc.queue.snapshot()["history"]
    assert (job["id"], job["state"], job["paths"]) == (rid, "cancelled", [])


class HeldUntilReleased:
    """An engine whose renders wait for ``release``; ``started`` is set when one begins."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.capabilities = capabilities("gate", WINDOW, default_steps=1)

    def render(self, request, on_step=None, should_cancel=None):
        self.started.set()
        assert self.release.wait(WAIT_S), "the test never released the render"
        audio = np.zeros((request.batch_size, 2, WINDOW), dtype=np.float32)
        return RenderResult(audio, RATE, request.seed or 5, {"steps": 1})

    def close(self) -> None:
        pass


class Replies:
    """One UDP socket; every reply it gets, by request id."""

    FINAL = ("/latentloop/done", "/latentloop/fail")

    def __init__(self, port: int) -> None:
        self.daemon = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.got: list[tuple[str, list]] = []

    def send(self, address: str, *args: object) -> None:
        self.sock.sendto(encode_message(address, list(args)), self.daemon)

    def of(self, rid: int, *addresses: str) -> list[tuple[str, list]]:
        return [r for r in self.got if r[0] in addresses and r[1][:1] == [rid]]

    def wait(self, rid: int, *addresses: str, timeout: float = WAIT_S) -> tuple[str, list]:
        deadline = time.monotonic() + timeout
        while not self.of(rid, *addresses):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {addresses} for id {rid}; got {self.got}"
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            for timed in OscPacket(data).messages:
                self.got.append((timed.message.address, list(timed.message.params)))
        return self.of(rid, *addresses)[0]


def test_a_replace_whose_accept_fails_leaves_every_accepted_id_one_outcome(tmp_path):
    """`replace` meets a journal that cannot record the new job (a real EISDIR: the journal
    is swapped for a folder). The new request gets /fail io and no /queued; the job it would
    have replaced was accepted, so it still ends in exactly one outcome. Broken on purpose
    (jobs dropped before the journal accepts the new one), id 2 never hears a thing."""
    engine = HeldUntilReleased()
    svc, thread = start_service(tmp_path, lambda: engine, **{"render.seconds": 1.0})
    peer = Replies(svc.server.bound_address[1])
    journal, saved = tmp_path / JOURNAL_NAME, tmp_path / "journal.saved"
    try:
        peer.send("/latentloop/render", 1, "prompt", "running")
        peer.wait(1, "/latentloop/queued")
        assert engine.started.wait(WAIT_S)
        peer.send("/latentloop/render", 2, "prompt", "queued behind it")
        peer.wait(2, "/latentloop/queued")
        journal.rename(saved)
        journal.mkdir()  # every append now fails: EISDIR
        try:
            peer.send("/latentloop/render", 3, "prompt", "the replacement", "replace", 1)
            address, args = peer.wait(3, *Replies.FINAL)
        finally:
            journal.rmdir()
            saved.rename(journal)
        assert (address, args[1], args[2]) == ("/latentloop/fail", "render", "io"), args
        assert "not accepted" in args[3]
        engine.release.set()
        outcomes = {rid: peer.wait(rid, *Replies.FINAL)[0] for rid in (1, 2)}
        peer.send("/latentloop/ping", 4)  # the daemon answers in order: later replies are in
        peer.wait(4, "/latentloop/pong")
    finally:
        engine.release.set()
        stop_service(svc, thread)
        peer.sock.close()
    for rid in (1, 2, 3):
        assert len(peer.of(rid, *Replies.FINAL)) == 1, (rid, peer.of(rid, *Replies.FINAL))
    assert peer.of(3, "/latentloop/queued") == []
    print(f"replace refused (io): {args[3]}; outcomes of the accepted ids: {outcomes}")
