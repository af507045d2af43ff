"""``latentloop serve``: run the daemon in the foreground (systemd/launchd friendly)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the OSC render daemon in the foreground",
        description="Keep a model warm and serve OSC render requests (docs/protocol.md). "
        "Settings: defaults < --config TOML < LATENTLOOP_<SECTION>_<KEY> environment < flags "
        "(docs/config.md).",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML config file")
    p.add_argument("--model", default=None, help="engine.model (default: tiny)")
    p.add_argument("--device", default=None, help="engine.device: auto, cpu, cuda, mps")
    p.add_argument("--precision", default=None, help="engine.precision")
    p.add_argument("--t5", default=None, help="engine.t5: folder with a T5 encoder + tokenizer")
    p.add_argument("--offline", action="store_true", default=None, help="engine.offline")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        default=None,
        help="engine.trust_checkpoint: allow unsafe .ckpt unpickling",
    )
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
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .service import Service

    overrides = {
        "engine.model": args.model,
        "engine.device": args.device,
        "engine.precision": args.precision,
        "engine.t5": args.t5,
        "engine.offline": args.offline,
        "engine.trust_checkpoint": args.trust_checkpoint,
        "engine.warmup": args.warmup,
        "osc.host": args.host,
        "osc.port": args.port,
        "osc.reply_targets": tuple(args.reply_target) if args.reply_target else None,
        "render.out_dir": args.out,
        "render.format": args.format,
        "render.queue_size": args.queue_size,
        "audio.enabled": args.audio,
    }
    config = load_config(args.config, overrides)
    return Service(config).run()
