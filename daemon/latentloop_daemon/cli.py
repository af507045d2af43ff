"""The `latentloop` command: argument parsing, logging set-up and exit codes.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which registers the
parser and sets ``handler`` (``(argparse.Namespace) -> int``) as its default. Exit codes: 0 ok,
1 unexpected error, 2 usage or invalid input, 3 start-up failure (model could not be loaded).
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError, LatentloopError, ModelLoadError, RenderCancelled, RenderError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3
EXIT_INTERRUPTED = 130


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
    from . import bench, client_cli, models_cli, render_cli, serve_cli

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
        return EXIT_INTERRUPTED
    except RenderCancelled as e:
        print(f"latentloop: cancelled: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelLoadError as e:
        print(f"latentloop: cannot load model: {e}", file=sys.stderr)
        return EXIT_STARTUP
    except (ConfigError, RenderError) as e:
        print(f"latentloop: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LatentloopError as e:
        print(f"latentloop: {e}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception:
        logger.exception("unexpected error")
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
