"""``latentloop serve``: run the daemon in the foreground (systemd/launchd friendly)."""

from __future__ import annotations

import argparse
from typing import Any

from latentloop_daemon.cli.options import add_config_option, add_model_options, model_overrides


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the OSC render daemon in the foreground",
        description="Keep a model warm and serve OSC render requests (docs/protocol.md). "
        "Settings: defaults < --config TOML < LATENTLOOP_<SECTION>_<KEY> environment < flags "
        "(docs/config.md).",
    )
    add_config_option(p)
    add_model_options(p)
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        default=None,
        help="engine.warmup = false: skip the start-up warm-up render",
    )
    p.add_argument("--host", default=None, help="osc.host (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="osc.port (default 7878)")
    p.add_argument(
        "--reply-target",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="osc.reply_targets: also send replies here (e.g. Max: 127.0.0.1:7879)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="CIDR",
        help="osc.allow: a source network that may send requests (repeatable); required with "
        "a --host other than loopback. The token ([osc] token) is never a flag: see "
        "docs/security.md",
    )
    p.add_argument("--out", default=None, help="render.out_dir (default: out)")
    p.add_argument("--format", default=None, help="render.format: pcm24, pcm16, float")
    p.add_argument("--queue-size", type=int, default=None, help="render.queue_size (default 8)")
    p.add_argument(
        "--no-audio",
        dest="audio",
        action="store_false",
        default=None,
        help="audio.enabled = false: files only, no sound card",
    )
    p.add_argument("--audio-device", default=None, help="audio.device: index or name")
    p.add_argument("--block-size", type=int, default=None, help="audio.block_size (frames)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from latentloop_daemon.config import load_config
    from latentloop_daemon.service import Service

    overrides = {
        **model_overrides(args),
        "engine.warmup": args.warmup,
        "osc.host": args.host,
        "osc.port": args.port,
        "osc.reply_targets": tuple(args.reply_target) if args.reply_target else None,
        "osc.allow": tuple(args.allow) if args.allow else None,
        "render.out_dir": args.out,
        "render.format": args.format,
        "render.queue_size": args.queue_size,
        "audio.enabled": args.audio,
        "audio.device": args.audio_device,
        "audio.block_size": args.block_size,
    }
    config = load_config(args.config, overrides)
    return Service(config).run()
