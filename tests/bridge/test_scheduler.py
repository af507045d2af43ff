"""Scheduler: order by due time then arrival, bound, errors, close."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from latentloop_bridge.scheduler import Scheduler


def collect(max_items: int = 16) -> tuple[Scheduler[str], list[str], threading.Event]:
    ran: list[str] = []
    event = threading.Event()

    def run(item: str) -> None:
        if item == "raise":
            raise RuntimeError("bad item")
        ran.append(item)
        if item == "last":
            event.set()

    return Scheduler(run, max_items=max_items, name="test-scheduler"), ran, event


def test_runs_by_due_time_then_arrival() -> None:
    scheduler, ran, event = collect()
    now = time.monotonic()
    for due, item in [(0.10, "c"), (0.05, "b1"), (0.05, "b2"), (-1.0, "a"), (0.15, "last")]:
        assert scheduler.submit(now + due, item)
    scheduler.start()
    assert event.wait(10)
    assert ran == ["a", "b1", "b2", "c", "last"]
    assert scheduler.close() == []


def test_an_item_that_raises_is_logged_and_the_thread_goes_on(caplog) -> None:
    scheduler, ran, event = collect()
    scheduler.start()
    with caplog.at_level(logging.ERROR, logger="latentloop_bridge.scheduler"):
        scheduler.submit(0, "raise")
        scheduler.submit(0, "last")
        assert event.wait(10)
    assert ran == ["last"]
    assert "scheduled item failed: 'raise'" in caplog.text
    scheduler.close()


def test_bound_and_close_returns_what_never_ran() -> None:
    scheduler, ran, _ = collect(max_items=2)
    scheduler.start()
    later = time.monotonic() + 60
    assert scheduler.submit(later + 1, "y")
    assert scheduler.submit(later, "x")
    assert not scheduler.submit(later, "z")
    assert scheduler.pending == 2
    # close() must not wait for the items (due in a minute): they come back unrun, and the
    # thread is gone within the join timeout, which is long only for a loaded machine
    assert scheduler.close(timeout_s=30) == ["x", "y"]
    assert not scheduler.thread.is_alive()
    assert not scheduler.submit(0, "after close")
    assert ran == []


@pytest.mark.parametrize("delay_s", [0.02, 0.1])
def test_items_run_on_time(delay_s: float) -> None:
    stamps: list[float] = []
    done = threading.Event()

    def run(item: float) -> None:
        stamps.append(time.monotonic() - item)
        done.set()

    scheduler: Scheduler[float] = Scheduler(run, max_items=4, name="test-scheduler")
    scheduler.start()
    due = time.monotonic() + delay_s
    scheduler.submit(due, due)
    assert done.wait(10)
    scheduler.close()
    assert stamps[0] >= 0  # never early: this is the property
    # and on time: a loaded 2-core machine wakes a thread well within 1 s
    assert stamps[0] < 1.0
