"""Replies: how the daemon answers over OSC, and job events (from the render worker) as replies.

``Replies`` wraps the bridge's server: ``reply`` goes to the sender and the fixed targets,
``publish`` also to ``/notify`` subscribers (job events). Every fail code comes from the
protocol's vocabulary (``FailCode``). Threads: any; the server's send is thread-safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentloop_bridge import protocol as p
from latentloop_bridge.errors import FailCode

if TYPE_CHECKING:
    from latentloop_bridge.server import OscServer
    from latentloop_daemon.loops.clip import Clip
    from latentloop_daemon.service.jobs import RenderJob

Address = tuple[str, int]


class Replies:
    """Sends replies through the OSC server once it is bound (before that, nothing is sent)."""

    def __init__(self) -> None:
        self.server: OscServer | None = None

    def reply(self, to: Address, address: str, args: list[Any]) -> None:
        """To the sender and the fixed targets (hosts that cannot receive on their own port)."""
        if self.server is not None:
            self.server.respond(to, address, args)

    def publish(self, sender: Address, address: str, args: list[Any]) -> None:
        """To the sender, the fixed targets and the ``/notify`` subscribers."""
        if self.server is not None:
            self.server.publish(sender, address, args)

    def notify(self, address: str, args: list[Any], at_unix_s: float | None = None) -> None:
        """A notification no request caused (first argument -1): subscribers, fixed targets."""
        if self.server is not None:
            self.server.notify(address, args, at_unix_s)

    def fail(
        self, to: Address, request_id: int | None, command: str, code: FailCode, message: str
    ) -> None:
        """``/latentloop/fail <id> <command> <code> <message>`` to the sender (id -1 if None)."""
        rid = p.NO_ID if request_id is None else request_id
        self.reply(to, *p.fail_reply(rid, command, code, message))


class JobReplies:
    """The render worker's ``JobEvents`` as OSC replies to the job's sender and subscribers."""

    def __init__(self, replies: Replies) -> None:
        self.replies = replies

    def progress(self, job: RenderJob, step: int, total: int) -> None:
        self.replies.publish(job.sender, *p.progress_reply(job.request_id, step, total))

    def done(self, job: RenderJob, clip: Clip, path: Path) -> None:
        length = clip.length
        measured = None if clip.tempo is None else clip.tempo.bpm
        self.replies.publish(
            job.sender,
            *p.done_reply(
                job.request_id,
                str(path.resolve()),
                clip.seconds,
                length.bpm or 0.0,  # as requested; the file carries the frame count's tempo
                length.bars or 0.0,
                str(clip.seed),
                clip.variation,
                measured,
                clip.tempo_deviation_pct,
            ),
        )

    def retry(self, job: RenderJob, attempt: int, measured_bpm: float) -> None:
        self.replies.publish(job.sender, *p.retry_reply(job.request_id, attempt, measured_bpm))

    def failed(self, job: RenderJob, code: FailCode, message: str) -> None:
        self.replies.publish(
            job.sender, *p.fail_reply(job.request_id, p.RenderCommand.command, code, message)
        )
