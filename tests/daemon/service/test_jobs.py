"""The job queue: positions, bounds, sender-scoped cancel, replace, close, history."""

import threading

import pytest

from latentloop_daemon.errors import OutputError
from latentloop_daemon.loops.pipeline import LoopRequest
from latentloop_daemon.service.jobs import JobQueue, QueueFull, RenderJob

A, B = ("127.0.0.1", 9001), ("127.0.0.1", 9002)


def _job(q, sender, rid):
    return RenderJob(q.new_job_id(), rid, sender, LoopRequest(prompt=f"p{rid}"))


def test_positions_and_bound():
    q = JobQueue(maxsize=2)
    assert q.submit(_job(q, A, 1))[0] == 0
    assert q.submit(_job(q, A, 2))[0] == 1
    with pytest.raises(QueueFull, match=r"queue full \(2\)"):
        q.submit(_job(q, A, 3))
    running = q.next(timeout=0.1)
    assert running.request_id == 1 and running.state == "running"
    assert q.submit(_job(q, B, 1))[0] == 2  # one running + one queued ahead


def test_cancel_is_scoped_by_sender():
    q = JobQueue(maxsize=8)
    for rid in (1, 2):
        q.submit(_job(q, A, rid))
    q.submit(_job(q, B, 1))
    running = q.next(timeout=0.1)  # A's job 1
    assert q.cancel(B, 2) == []
    hit = q.cancel(A, 1)
    assert hit == [running] and running.cancel_event.is_set() and running.state == "running"
    hit = q.cancel(A, -1)
    assert [j.request_id for j in hit] == [2, 1] and hit[0].state == "cancelled"
    assert len(q) == 1  # B's job remains


def test_replace_drops_only_the_senders_queued_jobs():
    q = JobQueue(maxsize=8)
    q.submit(_job(q, A, 1))
    running = q.next(timeout=0.1)
    q.submit(_job(q, A, 2))
    q.submit(_job(q, B, 7))
    position, dropped = q.submit(_job(q, A, 3), replace=True)
    assert [j.request_id for j in dropped] == [2] and dropped[0].error.startswith(
        "cancelled: replaced"
    )
    assert running.state == "running" and position == 2


def test_a_refused_replace_drops_nothing():
    """QueueFull (no room even after the drops) and a journal that cannot accept leave the
    sender's queued jobs queued: no job is cancelled by a request that was not accepted."""

    class RefusingJournal:
        def accepted(self, job):
            raise OutputError("cannot write the journal: No space left on device")

        def ended(self, job):
            pass

    q = JobQueue(maxsize=2)
    q.submit(_job(q, B, 1))
    q.submit(_job(q, B, 2))
    with pytest.raises(QueueFull):  # A has nothing queued to make room
        q.submit(_job(q, A, 3), replace=True)
    _, dropped = q.submit(_job(q, B, 4), replace=True)  # B's own drops make room
    assert [j.request_id for j in dropped] == [1, 2]
    q.journal = RefusingJournal()  # type: ignore[assignment]
    with pytest.raises(OutputError):
        q.submit(_job(q, B, 5), replace=True)
    q.journal = None
    assert [j["id"] for j in q.snapshot()["history"]] == [1, 2]  # the accepted replace's drops
    assert len(q) == 1 and q.next(timeout=0.1).request_id == 4  # still queued, not cancelled


def test_next_waits_and_close_wakes_the_worker():
    q = JobQueue(maxsize=2)
    got = []
    t = threading.Thread(target=lambda: got.append(q.next(timeout=5)))
    t.start()
    q.submit(_job(q, A, 1))
    t.join(2)
    assert got and got[0].request_id == 1
    q.submit(_job(q, A, 2))
    dropped, running = q.close()
    assert [j.request_id for j in dropped] == [2] and running is got[0]
    assert running.cancel_event.is_set()
    assert q.next(timeout=0.1) is None
    with pytest.raises(QueueFull):
        q.submit(_job(q, A, 3))


def test_history_and_find():
    q = JobQueue(maxsize=4, history_size=2)
    for rid in (1, 2, 3):
        q.submit(_job(q, A, rid))
        q.finish(q.next(timeout=0.1), "done")
    snap = q.snapshot()
    assert [h["id"] for h in snap["history"]] == [2, 3]
    assert q.find(A, 3).state == "done" and q.find(B, 3) is None
