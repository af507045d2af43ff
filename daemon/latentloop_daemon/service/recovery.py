"""Start-up after a crash: clean the output folder and settle every job the journal left open.

Runs once, after the OSC port is bound (so replies can go out) and before the render worker
starts. For each unfinished job, in acceptance order:

1. its files are all there (the crash came after the last WAV, before the journal's ``end``):
   journal it done and send its ``/done`` replies from the sidecars; never render it again;
2. otherwise remove any of its files that were published (all variations or none);
3. a cancel had reached it: ``/fail ... cancelled``;
4. it was running during two crashes in a row (two ``start`` records), or ``[render]
   on_restart = "report"``: ``/fail <id> render interrupted ...``;
5. else (``on_restart = "rerun"``) queue it again under the same id for the same sender.

Replies go to the job's original sender and the fixed targets (subscriptions did not survive).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentloop_bridge import protocol as p
from latentloop_bridge.errors import FailCode
from latentloop_daemon.errors import LatentloopError
from latentloop_daemon.files.atomic import remove_orphan_sidecars, remove_stale_temp_files
from latentloop_daemon.service.jobs import CANCELLED, DONE, FAILED, QueueFull, RenderJob

if TYPE_CHECKING:
    from latentloop_daemon.service.jobs import JobQueue
    from latentloop_daemon.service.journal import Journal, JournalEntry
    from latentloop_daemon.service.replies import Replies

logger = logging.getLogger(__name__)

MAX_CRASHES = 2
"""A job started this many times without an outcome is reported, never run again."""


@dataclass(frozen=True, slots=True)
class JobFile:
    wav: Path
    side: Path
    meta: dict[str, Any]


def clean_output_folder(folder: Path) -> None:
    """Remove our temp files and orphan sidecars (call it holding the folder lock)."""
    temps = remove_stale_temp_files(folder, older_than_s=-1.0)
    orphans = remove_orphan_sidecars(folder)
    if temps or orphans:
        logger.info(
            "removed %d temp file(s) and %d orphan sidecar(s) from %s", temps, orphans, folder
        )


def recover_jobs(
    journal: Journal,
    entries: list[JournalEntry],
    queue: JobQueue,
    replies: Replies,
    out_dir: Path,
    on_restart: str,
) -> Counter[str]:
    """Settle what the journal left open (steps in the module docstring); return counts."""
    from latentloop_daemon.loops.pipeline import LoopRequest

    counts: Counter[str] = Counter()
    if entries:
        queue.skip_ids(max(e.job_id for e in entries))
    unfinished = [e for e in entries if e.state is None]
    files = _files_by_job(out_dir) if unfinished else {}
    for entry in entries:
        job = RenderJob(entry.job_id, entry.request_id, entry.sender, LoopRequest(**entry.request))
        job.key, job.created_s = entry.key, entry.created_s
        if entry.state is not None:  # finished before the restart: for status <id>
            job.state, job.error, job.paths = entry.state, entry.error, list(entry.paths)
            queue.remember(job)
            continue
        outcome = _settle(job, entry, files.get(entry.key, []), queue, replies, on_restart)
        counts[outcome] += 1
    if unfinished:
        logger.info("recovered %d unfinished job(s): %s", len(unfinished), dict(counts))
    return counts


def _settle(
    job: RenderJob,
    entry: JournalEntry,
    found: list[JobFile],
    queue: JobQueue,
    replies: Replies,
    on_restart: str,
) -> str:
    variations = int(entry.request.get("variations") or 1)
    if len(found) == variations:  # 1. complete but not journaled: done, never rendered again
        job.paths = [str(f.wav) for f in sorted(found, key=_variation)]
        queue.finish(job, DONE)
        for f in sorted(found, key=_variation):
            replies.publish(job.sender, *_done_reply(job.request_id, f))
        return "done"
    for f in found:  # 2. all variations or none
        f.wav.unlink(missing_ok=True)
        f.side.unlink(missing_ok=True)
    if entry.cancel_requested:  # 3.
        return _report(
            job, queue, replies, CANCELLED, FailCode.CANCELLED, "cancelled by the client"
        )
    if entry.starts >= MAX_CRASHES or on_restart == "report":  # 4.
        why = (
            f"it was running during {entry.starts} daemon crashes; not run again"
            if entry.starts >= MAX_CRASHES
            else "the daemon stopped unexpectedly before it finished"
        )
        return _report(job, queue, replies, FAILED, FailCode.INTERRUPTED, why)
    try:  # 5.
        queue.submit(job)
    except (QueueFull, LatentloopError) as e:
        why = f"could not be queued again after a restart: {e}"
        return _report(job, queue, replies, FAILED, FailCode.INTERRUPTED, why)
    logger.info("job %d (id %d from %s:%d) queued again", job.job_id, job.request_id, *job.sender)
    return "rerun"


def _report(
    job: RenderJob, queue: JobQueue, replies: Replies, state: str, code: FailCode, message: str
) -> str:
    queue.finish(job, state, f"{code}: {message}")
    replies.publish(
        job.sender, *p.fail_reply(job.request_id, p.RenderCommand.command, code, message)
    )
    return str(code)


def _files_by_job(folder: Path) -> dict[str, list[JobFile]]:
    """Complete WAV + sidecar pairs in ``folder`` by the ``job_key`` their sidecars carry."""
    found: dict[str, list[JobFile]] = {}
    for side in _sidecars(folder):
        wav = side.with_suffix(".wav")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        key = meta.get("job_key") if isinstance(meta, dict) else None
        if isinstance(key, str) and wav.is_file():
            found.setdefault(key, []).append(JobFile(wav, side, meta))
    return found


def _sidecars(folder: Path) -> Iterable[Path]:
    return Path(folder).glob("*.json")


def _variation(f: JobFile) -> int:
    return int(f.meta.get("variation_index") or 0)


def _done_reply(request_id: int, f: JobFile) -> p.Reply:
    m = f.meta
    return p.done_reply(
        request_id,
        str(f.wav.resolve()),
        float(m.get("seconds") or 0.0),
        float(m.get("bpm") or 0.0),
        float(m.get("bars") or 0.0),
        str(m.get("seed", "")),
        _variation(f),
        m.get("measured_bpm"),
        m.get("tempo_deviation_pct"),
    )
