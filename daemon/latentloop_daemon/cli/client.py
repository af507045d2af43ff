"""Client commands for a running daemon: send, ping, status, cancel, watch. Never import torch.

Exit codes: 0 ok; 1 the daemon answered /fail (for ``send``) or did not answer in time;
2 usage errors.

A daemon with a shared token (``[osc] token``): the commands read it from
``LATENTLOOP_OSC_TOKEN`` or the ``--config`` file (never a flag, which ``ps`` would show) and
authorise this host with ``/latentloop/auth`` before their request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from latentloop_daemon.exit_codes import ExitCode

DEFAULT_TIMEOUT_S = 600.0


def _add_target(p: argparse.ArgumentParser, timeout: float) -> None:
    p.add_argument("--host", default="127.0.0.1", help="daemon address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7878, help="daemon UDP port (default 7878)")
    p.add_argument("--timeout", type=float, default=timeout, help=f"seconds (default {timeout:g})")
    p.add_argument(
        "--config", type=Path, default=None, help="the daemon's TOML file, for [osc] token"
    )


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("send", help="render through a running daemon; print the WAV path(s)")
    s.add_argument("prompt", help="text prompt")
    s.add_argument("--bpm", type=float, default=None, help="tempo (with --bars)")
    s.add_argument("--bars", type=float, default=None, help="length in bars (with --bpm)")
    s.add_argument("--beats-per-bar", type=int, default=None, help="meter numerator (default 4)")
    s.add_argument("--seconds", type=float, default=None, help="length in seconds (no --bpm)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--cfg", type=float, default=None)
    s.add_argument("--negative", default=None, help="negative prompt")
    s.add_argument("--variations", type=int, default=None)
    s.add_argument("--replace", action="store_true", help="drop my queued jobs in favour of this")
    s.add_argument(
        "--play",
        type=int,
        default=None,
        metavar="SLOT",
        help="play the loop in this slot on the next bar (docs/playback.md)",
    )
    _add_target(s, DEFAULT_TIMEOUT_S)
    s.set_defaults(handler=run_send)

    p = sub.add_parser("ping", help="check that a daemon answers; print its protocol version")
    _add_target(p, 2.0)
    p.set_defaults(handler=run_ping)

    st = sub.add_parser("status", help="print a daemon's state, queue, model and device")
    _add_target(st, 2.0)
    st.set_defaults(handler=run_status)

    c = sub.add_parser("cancel", help="cancel a job by id (-1: all jobs of this client port)")
    c.add_argument("id", type=int, help="request id")
    c.add_argument(
        "--from-port",
        type=int,
        default=0,
        help="send from this local port (ids are scoped by sender address)",
    )
    _add_target(c, 2.0)
    c.set_defaults(handler=run_cancel)

    w = sub.add_parser("watch", help="subscribe and print every reply the daemon sends")
    w.add_argument("--count", type=int, default=0, help="stop after N replies (0: never)")
    _add_target(w, 0.0)
    w.set_defaults(handler=run_watch)


class _Unauthorized(Exception):
    """The daemon refused the token."""


def _token(args: argparse.Namespace) -> str:
    """The shared token: ``LATENTLOOP_OSC_TOKEN``, else ``[osc] token`` of ``--config``."""
    token = os.environ.get("LATENTLOOP_OSC_TOKEN", "")
    if token or args.config is None:
        return token
    from latentloop_daemon.config import load_config

    return load_config(args.config).osc.token


def _client(args: argparse.Namespace, listen_port: int = 0) -> Any:
    """A client for the daemon, authorised first when a token is configured."""
    from latentloop_bridge.client import Client, ClientTimeout, RequestFailed

    client = Client(args.host, args.port, listen_port=listen_port)
    token = _token(args)
    if token:
        try:
            client.auth(token, timeout=max(args.timeout, 2.0) if args.timeout else 2.0)
        except (RequestFailed, ClientTimeout) as e:
            client.close()
            raise _Unauthorized(str(e)) from e
    return client


def _no_answer(args: argparse.Namespace, what: str) -> int:
    print(
        f"latentloop: {what} from {args.host}:{args.port} within {args.timeout:g}s", file=sys.stderr
    )
    return ExitCode.NO_RESULT


def _authorised(run: Any) -> Any:
    """``run``, with a refused token reported as a message and exit code 1."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except _Unauthorized as e:
            print(f"latentloop: the daemon refused the token: {e}", file=sys.stderr)
            return ExitCode.NO_RESULT

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


@_authorised
def run_ping(args: argparse.Namespace) -> int:
    from latentloop_bridge.client import ClientTimeout

    with _client(args) as client:
        t0 = time.perf_counter()
        try:
            version = client.ping(timeout=args.timeout)
        except ClientTimeout:
            return _no_answer(args, "no answer")
        print(
            f"pong from {args.host}:{args.port}: protocol {version}, "
            f"{(time.perf_counter() - t0) * 1000:.1f} ms"
        )
    return ExitCode.OK


@_authorised
def run_status(args: argparse.Namespace) -> int:
    from latentloop_bridge.client import ClientTimeout

    with _client(args) as client:
        try:
            s = client.status(timeout=args.timeout)
        except ClientTimeout:
            return _no_answer(args, "no answer")
    print(
        f"state {s.state}  queue {s.queue}  model {s.model}  device {s.device}  version {s.version}"
    )
    return ExitCode.OK


@_authorised
def run_cancel(args: argparse.Namespace) -> int:
    from latentloop_bridge.client import ClientTimeout, RequestFailed

    with _client(args, listen_port=args.from_port) as client:
        try:
            client.cancel(args.id, timeout=args.timeout)
        except RequestFailed as e:
            print(f"latentloop: {e.code}: {e.message}", file=sys.stderr)
            return ExitCode.NO_RESULT
        except ClientTimeout:
            pass  # a cancelled job answers through its own sender; no news is fine here
    print(f"cancel sent for id {args.id}")
    return ExitCode.OK


@_authorised
def run_send(args: argparse.Namespace) -> int:
    from latentloop_bridge.client import ClientTimeout, RenderFailed
    from latentloop_daemon.cli.progress import progress_bar

    fields = {
        "bpm": args.bpm,
        "bars": args.bars,
        "beats_per_bar": args.beats_per_bar,
        "seconds": args.seconds,
        "seed": args.seed,
        "steps": args.steps,
        "cfg": args.cfg,
        "negative": args.negative,
        "variations": args.variations,
        "replace": True if args.replace else None,
        "play": args.play,
    }
    with _client(args) as client, progress_bar() as on_step:
        try:
            done = client.render_and_wait(
                args.prompt,
                timeout=args.timeout,
                on_progress=lambda step, total, fraction: on_step(step, total, 0.0),
                **{k: v for k, v in fields.items() if v is not None},
            )
        except RenderFailed as e:
            print(f"latentloop: render failed: {e.code}: {e.message}", file=sys.stderr)
            return ExitCode.NO_RESULT
        except ClientTimeout:
            return _no_answer(args, "no result")
    for d in done:
        print(d.path)
    return ExitCode.OK


@_authorised
def run_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.notify(True)
        n = 0
        try:
            for address, values in client.replies(timeout=args.timeout or None):
                print(address, *values, flush=True)
                n += 1
                if args.count and n >= args.count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            client.notify(False)
    return ExitCode.OK
