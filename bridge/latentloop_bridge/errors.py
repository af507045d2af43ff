"""The protocol's error: a `/latentloop/fail` reply waiting to be sent, with its stable code."""

from __future__ import annotations

from enum import StrEnum

NO_ID = -1
"""The request id of a reply when none could be read (and `cancel -1`: all of a sender's jobs)."""

UNKNOWN_COMMAND = "?"
"""The command of a `/fail` reply when no address could be read from the datagram."""


class FailCode(StrEnum):
    """Short stable words in the third argument of `/latentloop/fail`; new codes may be added."""

    MALFORMED = "malformed"  # the datagram is not valid OSC (bridge)
    UNKNOWN = "unknown"  # the address is not a latentloop request (bridge)
    INVALID = "invalid"  # wrong, missing or out-of-range arguments; oversized datagram (bridge)
    BUSY = "busy"  # a queue or list is full: render queue, subscribers, scheduled bundles
    LOADING = "loading"  # the model is not ready yet (daemon)
    CANCELLED = "cancelled"  # the job was cancelled (daemon)
    NOT_FOUND = "not_found"  # cancel of an id this sender has no job for (daemon)
    STOPPING = "stopping"  # the daemon is shutting down (daemon)
    INTERNAL = "internal"  # a bug: a handler or the daemon's own render code raised
    NO_AUDIO = "no_audio"  # playback is off: --no-audio, no device, or the device failed
    TEMPO = "tempo"  # a loop at another tempo and `audio.conform = "refuse"` (daemon)
    UNAVAILABLE = "unavailable"  # an optional part is not installed (Link: latentloop[link])
    UNAUTHORIZED = "unauthorized"  # a token is configured and this source has not sent it
    IO = "io"  # the output folder could not be written (disk full, read-only, gone)
    INTERRUPTED = "interrupted"  # the daemon stopped (crashed) while the job was accepted
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out of memory, even with a smaller batch
    BAD_OUTPUT = "bad_output"  # the model produced NaN or infinite samples
    ENGINE = "engine"  # the model failed while rendering (its exception, or its process ended)


class ProtocolError(Exception):
    """A request that gets `/latentloop/fail <request_id> <command> <code> <message>`.

    Args:
        code: one of `FailCode` (a plain string is accepted for codes added later).
        message: what was wrong, precise enough to fix it ("bpm must be 20..999, got 5000").
        command: the request's leaf ("render") or the unknown address; `"?"` when none was read.
        request_id: the id to echo, `-1` when none could be read.
    """

    def __init__(
        self,
        code: str,
        message: str,
        command: str = UNKNOWN_COMMAND,
        request_id: int = NO_ID,
    ) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.command = command
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.command}: {self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code!r}, message={self.message!r}, "
            f"command={self.command!r}, request_id={self.request_id})"
        )
