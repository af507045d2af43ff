"""Exit codes of the `latentloop` command: the one definition (docs/config.md lists them)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `latentloop` process returns to its shell or service manager."""

    OK = 0
    UNEXPECTED = 1  # a bug, or the daemon's render worker died
    NO_RESULT = 1  # client commands: the daemon answered /fail, or not in time
    USAGE = 2  # bad flags, config or input; the message says what to change
    STARTUP = 3  # the daemon could not start: port taken, output folder, model load
    INTERRUPTED = 130  # Ctrl+C during a one-shot command; a second SIGINT to `serve`
