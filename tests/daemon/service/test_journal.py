"""The job journal and what a restart does with it (``service.journal``, ``service.recovery``):
the two-crashes rule, complete-but-unjournaled jobs, ``on_restart``, torn lines, compaction."""

from __future__ import annotations

import json

import pytest

from latentloop_daemon.loops.pipeline import LoopRequest
from latentloop_daemon.service.jobs import DONE, JobQueue, RenderJob
from latentloop_daemon.service.journal import JOURNAL_NAME, Journal
from latentloop_daemon.service.recovery import recover_jobs

SENDER = ("127.0.0.1", 5555)


class Sent:
    """Stands in for ``Replies``: records what would be published."""

    def __init__(self) -> None:
        self.published: list[tuple[tuple[str, int], str, list]] = []

    def publish(self, sender, address, args) -> None:
        self.published.append((sender, address, args))


def run(folder, jobs=(), *, crash_after=None):
    """One daemon life: load the journal, accept ``jobs``, start the first ``crash_after``."""
    journal = Journal(folder)
    entries = journal.load()
    queue = JobQueue(8, journal=journal)
    sent = Sent()
    counts = recover_jobs(journal, entries, queue, sent, folder, "rerun")  # type: ignore[arg-type]
    for request_id, prompt in jobs:
        queue.submit(RenderJob(queue.new_job_id(), request_id, SENDER, LoopRequest(prompt)))
    started = [queue.next(0) for _ in range(crash_after or 0)]
    return queue, sent, counts, started


def fails(sent: Sent) -> list[tuple[int, str]]:
    return [(a[0], a[2]) for _, addr, a in sent.published if addr == "/latentloop/fail"]


def test_a_job_running_during_two_crashes_is_reported_not_run_a_third_time(tmp_path) -> None:
    queue, *_ = run(tmp_path, [(1, "crasher"), (2, "waiting")], crash_after=1)
    queue, sent, counts, started = run(tmp_path, crash_after=1)  # 1 rerun, crashes again
    assert counts == {"rerun": 2} and started[0].request_id == 1
    queue, sent, counts, _ = run(tmp_path)
    assert counts == {"interrupted": 1, "rerun": 1}
    assert fails(sent) == [(1, "interrupted")]
    assert queue.find(SENDER, 1).state == "failed" and queue.find(SENDER, 2).state == "queued"


def test_report_policy_and_cancels(tmp_path) -> None:
    queue, *_ = run(tmp_path, [(1, "a"), (2, "b")], crash_after=1)
    queue.cancel(SENDER, 1)  # running: the cancel is journaled, the crash comes first
    journal = Journal(tmp_path)
    entries = journal.load()
    queue, sent = JobQueue(8, journal=journal), Sent()
    counts = recover_jobs(journal, entries, queue, sent, tmp_path, "report")  # type: ignore[arg-type]
    assert counts == {"cancelled": 1, "interrupted": 1}
    assert sorted(fails(sent)) == [(1, "cancelled"), (2, "interrupted")]
    assert len(queue) == 0


def test_complete_files_without_an_end_record_are_reported_done(tmp_path) -> None:
    queue, _, _, (job,) = run(tmp_path, [(7, "complete")], crash_after=1)
    for v in range(2):  # what the writer leaves, sidecar + WAV, with the job's key
        meta = {"software": "latentloop", "file": f"c{v}.wav", "job_key": job.key,
                "variation_index": v, "seconds": 1.0, "seed": 3, "frames": 44100}  # fmt: skip
        (tmp_path / f"c{v}.json").write_text(json.dumps(meta))
        (tmp_path / f"c{v}.wav").write_bytes(b"RIFF")
    entries = Journal(tmp_path).load()
    entries[0].request["variations"] = 2
    (tmp_path / JOURNAL_NAME).write_text(
        "".join(json.dumps(r) + "\n" for e in entries for r in e.records())
    )
    queue, sent, counts, _ = run(tmp_path)
    assert counts == {"done": 1} and len(queue) == 0  # never rendered again
    done = [a for _, addr, a in sent.published if addr == "/latentloop/done"]
    assert [(a[0], a[1].rsplit("/", 1)[1], a[6]) for a in done] == [
        (7, "c0.wav", 0),
        (7, "c1.wav", 1),
    ]
    assert queue.find(SENDER, 7).state == DONE  # status <id> answers from the journal


def test_partial_files_are_removed_and_the_job_rerun(tmp_path) -> None:
    _, _, _, (job,) = run(tmp_path, [(8, "partial")], crash_after=1)
    meta = {"software": "latentloop", "file": "p0.wav", "job_key": job.key}
    (tmp_path / "p0.json").write_text(json.dumps(meta))
    (tmp_path / "p0.wav").write_bytes(b"RIFF")
    entries = Journal(tmp_path).load()
    entries[0].request["variations"] = 2
    (tmp_path / JOURNAL_NAME).write_text(
        "".join(json.dumps(r) + "\n" for e in entries for r in e.records())
    )
    queue, _, counts, _ = run(tmp_path)
    assert counts == {"rerun": 1} and len(queue) == 1
    assert not (tmp_path / "p0.wav").exists() and not (tmp_path / "p0.json").exists()


def test_a_torn_last_line_is_skipped_and_the_journal_compacts(tmp_path) -> None:
    queue, *_ = run(tmp_path, [(i, f"job {i}") for i in range(1, 4)])
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(b'{"op":"start","ke')  # a kill in the middle of a write
    queue, _, counts, _ = run(tmp_path)
    assert counts == {"rerun": 3}
    journal = Journal(tmp_path, keep_finished=2, compact_every=10)
    journal.load()
    q = JobQueue(100, journal=journal)
    for i in range(50):
        job = RenderJob(q.new_job_id() + 100, 1000 + i, SENDER, LoopRequest("x"))
        q.submit(job)
        q.next(0)
        job.paths = ["x.wav"]
        q.finish(job, DONE)
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) < 40, len(lines)  # compacted: 3 unfinished + 2 finished + < 10 appends
    entries = Journal(tmp_path, keep_finished=2).load()
    assert [e.request_id for e in entries if e.state is None] == [1, 2, 3]


def test_an_accept_that_cannot_be_journaled_is_not_queued(tmp_path) -> None:
    from latentloop_daemon.errors import OutputError

    journal = Journal(tmp_path / "missing-folder")
    queue = JobQueue(8, journal=journal)
    with pytest.raises(OutputError):
        queue.submit(RenderJob(1, 1, SENDER, LoopRequest("x")))
    assert len(queue) == 0
