"""The job journal: accepted requests, starts, cancels and outcomes, durable before any reply.

One JSON object per line in ``<out_dir>/.latentloop.journal``, appended and fsynced:

- ``accept``: a job entered the queue (written before ``/queued`` is sent);
- ``start``: the render worker took it (two starts without an end = running in two crashes);
- ``cancel``: a cancel reached it while it ran;
- ``end``: its outcome (``done`` with paths, ``failed``, ``cancelled``), written before the
  ``/done`` or ``/fail`` replies.

``load`` reads the journal at start-up (a torn last line from a kill is skipped) and rewrites
it compacted: unfinished jobs plus the last ``keep_finished`` outcomes (what ``status <id>``
answers from). It is compacted again every ``compact_every`` appends, so it stays small. The
folder lock (``files.lock``) guarantees one writer. Threads: any; one lock serialises writes.
The journal is reopened for every append, so a remount read-only of the folder is not refused
for a file held open.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentloop_daemon.errors import OutputError

if TYPE_CHECKING:
    from latentloop_daemon.service.jobs import RenderJob

logger = logging.getLogger(__name__)

JOURNAL_NAME = ".latentloop.journal"
REQUEST_FIELDS = (
    "prompt", "negative", "bpm", "bars", "beats_per_bar", "seconds", "key", "seed", "steps",
    "cfg", "variations",
)  # fmt: skip
"""The ``LoopRequest`` fields a daemon job carries (no init audio over OSC)."""

Address = tuple[str, int]


@dataclass
class JournalEntry:
    """What the journal knows about one job (by its ``key``, stable across restarts)."""

    key: str
    job_id: int
    request_id: int
    sender: Address
    request: dict[str, Any]
    created_s: float
    starts: int = 0
    cancel_requested: bool = False
    state: str | None = None  # the outcome; None while unfinished
    error: str | None = None
    paths: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The fewest records that rebuild this entry (for compaction)."""
        out: list[dict[str, Any]] = [
            {
                "op": "accept",
                "key": self.key,
                "job": self.job_id,
                "id": self.request_id,
                "sender": list(self.sender),
                "request": self.request,
                "t": self.created_s,
            }  # fmt: skip
        ]
        out += [{"op": "start", "key": self.key}] * self.starts
        if self.cancel_requested:
            out.append({"op": "cancel", "key": self.key})
        if self.state is not None:
            out.append(_end_record(self.key, self.state, self.error, self.paths))
        return out


class Journal:
    """The append-only job journal of one output folder."""

    def __init__(self, folder: Path, keep_finished: int = 64, compact_every: int = 1000) -> None:
        self.path = Path(folder) / JOURNAL_NAME
        self.keep_finished = keep_finished
        self.compact_every = compact_every
        self._entries: dict[str, JournalEntry] = {}
        self._appended = 0
        self._lock = threading.Lock()

    # --- start-up ------------------------------------------------------------------------------

    def load(self) -> list[JournalEntry]:
        """Read and compact the journal; return every entry kept, in acceptance order.

        Raises:
            OutputError: the journal exists but cannot be read or rewritten.
        """
        with self._lock:
            try:
                lines = self.path.read_bytes().splitlines()
            except FileNotFoundError:
                lines = []
            except OSError as e:
                raise OutputError(f"cannot read {self.path}: {e.strerror or e}") from e
            skipped = 0
            for line in lines:
                try:
                    self._apply(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    skipped += 1  # a line torn by a kill mid-write, or not ours
            if skipped:
                logger.warning("journal %s: skipped %d unreadable line(s)", self.path, skipped)
            self._trim()
            self._rewrite()
            return list(self._entries.values())

    # --- transitions (called by the JobQueue under its lock) -----------------------------------

    def accepted(self, job: RenderJob) -> None:
        """Record a new job; raises ``OutputError`` when it cannot be made durable."""
        request = {name: getattr(job.spec, name) for name in REQUEST_FIELDS}
        entry = JournalEntry(
            job.key, job.job_id, job.request_id, job.sender, request, job.created_s
        )
        with self._lock:
            if job.key in self._entries:
                return  # queued again after a restart: journaled already, starts counted
            self._append(entry.records()[0])
            self._entries[job.key] = entry

    def started(self, job: RenderJob) -> None:
        self._record(job.key, {"op": "start", "key": job.key})

    def cancel_requested(self, job: RenderJob) -> None:
        self._record(job.key, {"op": "cancel", "key": job.key})

    def ended(self, job: RenderJob) -> None:
        self._record(job.key, _end_record(job.key, job.state, job.error, job.paths))

    def entry(self, key: str) -> JournalEntry | None:
        with self._lock:
            return self._entries.get(key)

    # --- internals ----------------------------------------------------------------------------

    def _record(self, key: str, record: dict[str, Any]) -> None:
        """Append a transition; a failure is logged (the job goes on; the next start decides)."""
        with self._lock:
            if key not in self._entries:
                return  # not journaled (accept failed): nothing to follow up
            try:
                self._append(record)
            except OutputError as e:
                logger.error("journal: %s", e)
            self._apply(record)
            if self._appended >= self.compact_every:
                self._trim()
                try:
                    self._rewrite()
                except OutputError as e:
                    logger.error("journal compaction failed: %s", e)

    def _apply(self, record: dict[str, Any]) -> None:
        op, key = record["op"], str(record["key"])
        if op == "accept":
            sender = record["sender"]
            self._entries[key] = JournalEntry(
                key, int(record["job"]), int(record["id"]), (str(sender[0]), int(sender[1])),
                dict(record["request"]), float(record["t"]),
            )  # fmt: skip
            return
        entry = self._entries.get(key)
        if entry is None:
            return  # the accept was compacted away: the job finished long ago
        if op == "start":
            entry.starts += 1
        elif op == "cancel":
            entry.cancel_requested = True
        elif op == "end":
            entry.state, entry.error = str(record["state"]), record.get("error")
            entry.paths = [str(p) for p in record.get("paths", [])]

    def _trim(self) -> None:
        finished = [k for k, e in self._entries.items() if e.state is not None]
        for key in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._entries[key]

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise OutputError(f"cannot write the journal {self.path}: {e.strerror or e}") from e
        self._appended += 1

    def _rewrite(self) -> None:
        """Replace the journal with the entries kept (temp file, fsync, atomic rename)."""
        lines = _lines(r for e in self._entries.values() for r in e.records())
        tmp = self.path.with_name(f".latentloop-journal-{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot rewrite the journal {self.path}: {e.strerror or e}") from e
        self._appended = 0


def _end_record(key: str, state: str | None, error: str | None, paths: list[str]) -> dict[str, Any]:
    return {
        "op": "end",
        "key": key,
        "state": state,
        "error": error,
        "paths": paths,
        "t": time.time(),
    }


def _lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join((json.dumps(r, separators=(",", ":")) + "\n").encode() for r in records)
