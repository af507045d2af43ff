"""Render jobs: a bounded queue shared by the OSC handlers and the render worker, and a history.

Threads: handlers (OSC receive / scheduler threads) call ``submit``, ``cancel`` and
``snapshot``; the render worker calls ``next`` and ``finish``. One lock guards everything; no
method blocks except ``next`` (which waits on a condition, with a timeout).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latentloop_daemon.loops.pipeline import LoopRequest
    from latentloop_daemon.service.journal import Journal

Address = tuple[str, int]

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


@dataclass(eq=False)
class RenderJob:
    """One request from one sender; ``request_id`` is the sender's id (scoped by sender)."""

    job_id: int
    request_id: int
    sender: Address
    spec: LoopRequest
    state: str = QUEUED
    cancel_event: threading.Event = field(default_factory=threading.Event)
    created_s: float = field(default_factory=time.time)
    started_s: float | None = None
    finished_s: float | None = None
    paths: list[str] = field(default_factory=list)
    error: str | None = None
    play_slot: int | None = None  # the render option `play`: queue the result into this slot
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # the journal's, across restarts

    def summary(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "id": self.request_id,
            "sender": f"{self.sender[0]}:{self.sender[1]}",
            "state": self.state,
            "prompt": self.spec.prompt,
            "paths": list(self.paths),
            "error": self.error,
        }


class QueueFull(Exception):
    """The queue holds ``size`` jobs already."""

    def __init__(self, size: int) -> None:
        super().__init__(f"queue full ({size})")
        self.size = size


class JobQueue:
    """Bounded FIFO of queued jobs, the running job, and a bounded history of finished ones."""

    def __init__(
        self, maxsize: int, history_size: int = 64, journal: Journal | None = None
    ) -> None:
        self.maxsize = maxsize
        self.journal = journal  # told of every transition, under the lock, before any reply
        self._queue: deque[RenderJob] = deque()
        self._running: RenderJob | None = None
        self._history: deque[RenderJob] = deque(maxlen=history_size)
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False

    def new_job_id(self) -> int:
        with self._cond:
            return next(self._ids)

    def submit(self, job: RenderJob, replace: bool = False) -> tuple[int, list[RenderJob]]:
        """Queue ``job``; return (position, jobs dropped by ``replace``).

        Position 0 means it starts next (nothing running ahead of it), 1 one job ahead, ...
        ``replace`` drops the same sender's queued (not running) jobs, which makes room.

        Raises:
            QueueFull: no room (even after the drops), or the queue is closed.
            OutputError: the journal could not make the new job durable.
            Either way nothing changed: nothing is queued and nothing is dropped, so a refused
            ``replace`` leaves the jobs it would have replaced to run (each still ends in its
            one outcome). The drops are journaled after the accept; a crash in between leaves
            them queued in the journal, and the restart settles them like any other.
        """
        with self._cond:
            if self._closed:
                raise QueueFull(0)
            dropped = [j for j in self._queue if j.sender == job.sender] if replace else []
            if len(self._queue) - len(dropped) >= self.maxsize:
                raise QueueFull(self.maxsize)
            if self.journal is not None:
                self.journal.accepted(job)  # OutputError: not accepted, nothing changed
            for j in dropped:
                self._queue.remove(j)
                self._retire(j, CANCELLED, "cancelled: replaced by a newer request")
            self._queue.append(job)
            position = len(self._queue) - 1 + (1 if self._running is not None else 0)
            self._cond.notify_all()
            return position, dropped

    def next(self, timeout: float) -> RenderJob | None:
        """(Worker) take the next job and mark it running; None after ``timeout`` or when closed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed or not self._queue:
                return None
            job = self._queue.popleft()
            job.state, job.started_s = RUNNING, time.time()
            self._running = job
            if self.journal is not None:
                self.journal.started(job)
            return job

    def finish(self, job: RenderJob, state: str, error: str | None = None) -> None:
        """(Worker) the running job ended in ``state``."""
        with self._cond:
            if self._running is job:
                self._running = None
            self._retire(job, state, error)
            self._cond.notify_all()

    def cancel(self, sender: Address, request_id: int) -> list[RenderJob]:
        """Cancel that sender's job (``request_id`` -1: all its jobs). Returns the jobs hit.

        Queued jobs are removed at once (state cancelled); a running one gets its cancel flag
        set and is finished by the worker when the render stops at its next step.
        """
        with self._cond:
            hit = [
                j
                for j in self._queue
                if j.sender == sender and (request_id == -1 or j.request_id == request_id)
            ]
            for j in hit:
                self._queue.remove(j)
                self._retire(j, CANCELLED, "cancelled: cancelled by the client")
            running = self._running
            if (
                running is not None
                and running.sender == sender
                and (request_id == -1 or running.request_id == request_id)
            ):
                running.cancel_event.set()
                hit.append(running)
                if self.journal is not None:
                    self.journal.cancel_requested(running)
            return hit

    def close(self) -> tuple[list[RenderJob], RenderJob | None]:
        """Stop accepting jobs; return (queued jobs removed, running job flagged to cancel)."""
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            for j in dropped:
                self._retire(j, CANCELLED, "cancelled: the daemon is shutting down")
            if self._running is not None:
                self._running.cancel_event.set()
            self._cond.notify_all()
            return dropped, self._running

    def skip_ids(self, last: int) -> None:
        """Continue job ids after ``last`` (the journal's highest), so ids stay unique."""
        with self._cond:
            self._ids = itertools.count(max(last + 1, next(self._ids)))

    def remember(self, job: RenderJob) -> None:
        """Put a finished job (from the journal) into the history ``find`` searches."""
        with self._cond:
            self._history.append(job)

    def find(self, sender: Address, request_id: int) -> RenderJob | None:
        """The most recent job of ``sender`` with ``request_id`` (queued, running or finished)."""
        with self._cond:
            for j in [
                *reversed(self._queue),
                *([self._running] if self._running else []),
                *reversed(self._history),
            ]:
                if j.sender == sender and j.request_id == request_id:
                    return j
            return None

    def snapshot(self) -> dict[str, Any]:
        """Counts and summaries for status replies and logs."""
        with self._cond:
            return {
                "queued": len(self._queue),
                "running": self._running.summary() if self._running else None,
                "history": [j.summary() for j in self._history],
            }

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def _retire(self, job: RenderJob, state: str, error: str | None) -> None:
        job.state, job.error, job.finished_s = state, error, time.time()
        self._history.append(job)
        if self.journal is not None:
            self.journal.ended(job)
