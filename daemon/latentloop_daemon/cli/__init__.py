"""The `latentloop` command: argument parsing, logging set-up and exit codes.

Each subcommand lives in its own module of this package exposing ``add_parser(subparsers)``,
which registers the parser and sets ``handler`` (``(argparse.Namespace) -> int``) as its
default: ``serve``, ``render``, ``client`` (send, ping, status, cancel, watch), ``models``
(models, download), ``bench``, ``devices``. Exit codes: ``exit_codes.ExitCode``.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from collections.abc import Sequence

from latentloop_daemon import __version__
from latentloop_daemon.errors import (
    ConfigError,
    LatentloopError,
    ModelLoadError,
    RenderCancelled,
    RenderError,
)
from latentloop_daemon.exit_codes import ExitCode

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Send log records to stderr as ``LEVEL name: message``; quiet noisy third parties."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["stderr"], "level": "WARNING"},
            "loggers": {
                "latentloop_daemon": {"level": level.upper()},
                "latentloop_bridge": {"level": level.upper()},
            },
        }
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    from latentloop_daemon.cli import bench
    from latentloop_daemon.cli import client as client_cli
    from latentloop_daemon.cli import devices as devices_cli
    from latentloop_daemon.cli import models as models_cli
    from latentloop_daemon.cli import render as render_cli
    from latentloop_daemon.cli import serve as serve_cli

    parser = argparse.ArgumentParser(
        prog="latentloop",
        description="Render seamless text-to-audio loops with Stable Audio Open models.",
    )
    parser.add_argument("--version", action="version", version=f"latentloop {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve_cli.add_parser(sub)
    client_cli.add_parsers(sub)
    render_cli.add_parser(sub)
    models_cli.add_parser(sub)
    bench.add_parser(sub)
    devices_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `latentloop` command; return its exit code (never calls sys.exit itself)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help / usage errors
        return int(e.code or 0)
    configure_logging(args.log_level)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("latentloop: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except RenderCancelled as e:
        print(f"latentloop: cancelled: {e}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ModelLoadError as e:
        print(f"latentloop: cannot load model: {e}", file=sys.stderr)
        return ExitCode.STARTUP
    except (ConfigError, RenderError) as e:
        print(f"latentloop: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except LatentloopError as e:
        print(f"latentloop: {e}", file=sys.stderr)
        return ExitCode.UNEXPECTED
    except Exception:
        logger.exception("unexpected error")
        return ExitCode.UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
