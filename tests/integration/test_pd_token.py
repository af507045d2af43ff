"""The Pd kit with a daemon that needs a token: ``osc auth <id> <token>`` through ``[latentloop]``
authorises Pd's host, after which a render is done; before it the render is ``unauthorized``.
Runs the real daemon around the stand-in engine (tests/standin_daemon.py), so no torch start."""

from __future__ import annotations

import pytest
from tests.conftest import require_tool
from tests.integration.test_hosts import (
    Patch,
    free_udp_port,
    pd_lines,
    run_pd,
)

TOKEN = "pd-studio-token-42"


@pytest.fixture
def pd_tool() -> str:
    return require_tool("pd")


def test_pd_kit_sends_the_token_with_osc_auth(pd_tool, daemon_factory, tmp_path) -> None:
    daemon = daemon_factory("--no-warmup", standin=True, env={"LATENTLOOP_OSC_TOKEN": TOKEN})
    port = daemon.wait_ready()
    p = Patch()
    p.obj("ll", f"latentloop 127.0.0.1 {port} {free_udp_port()}")
    p.obj("print", "print reply")
    p.obj("lb", "loadbang")
    p.obj("seq", "t b b b")
    p.msg("before", "osc render 1 prompt locked seconds 1 steps 1")
    p.msg("auth", f"osc auth 2 {TOKEN}")
    p.obj("wait", "delay 300")
    p.msg("connect", "connect")  # subscribe again, now that the host is authorised
    p.obj("wait2", "delay 300")
    p.msg("after", "osc render 3 prompt open seconds 1 steps 1")
    p.obj("route", "route done")
    p.wire("lb", "seq")
    p.wire("seq", "before", 2)  # [t b b b] fires right to left: before, auth, then the delay
    p.wire("seq", "auth", 1)
    p.wire("seq", "wait", 0)
    p.wire("before", "ll")
    p.wire("auth", "ll")
    p.wire("wait", "connect")
    p.wire("connect", "ll")
    p.wire("wait", "wait2")
    p.wire("wait2", "after")
    p.wire("after", "ll")
    p.wire("ll", "print")
    p.wire("ll", "route")
    p.obj("done_t", "t b")
    p.wire("route", "done_t")
    p.quit_after("done_t", 0)
    out = run_pd(p.write(tmp_path / "token.pd"))
    replies = pd_lines(out, "reply")
    assert any(r.startswith("fail 1 render unauthorized") for r in replies), out
    assert "auth.reply 2 3600" in replies, out
    assert any(r.startswith("done 3 ") for r in replies), out
    # the subscription at creation came before auth; `connect` after auth subscribes
    assert any(r.startswith("fail -1 notify unauthorized") for r in replies), out
    assert any(r.startswith("notify.reply -1 1 ") for r in replies), out
    assert TOKEN not in daemon.log
    print("Pd: render and subscription before auth unauthorized; auth.reply 2 3600; connect "
          "subscribes; render after it done")  # fmt: skip
