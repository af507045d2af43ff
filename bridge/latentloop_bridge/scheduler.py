"""A one-thread scheduler: runs items at monotonic due times, in (due time, arrival) order.

The OSC receive thread submits and returns at once, so a bundle timetagged for later never
stalls reception (python-osc's dispatcher sleeps in the receive thread instead).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(order=True, slots=True)
class _Entry(Generic[T]):
    due_s: float
    seq: int
    item: T = field(compare=False)


class Scheduler(Generic[T]):
    """Call `run(item)` on the scheduler's own thread when each item falls due.

    `run` is called one item at a time; an exception from it is logged and the thread goes on.
    Due times are `time.monotonic()` seconds. At most `max_items` wait at once.
    """

    def __init__(self, run: Callable[[T], None], *, max_items: int, name: str) -> None:
        self._run = run
        self._max_items = max_items
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The thread that calls `run`."""
        return self._thread

    @property
    def pending(self) -> int:
        """Items waiting (not yet running)."""
        with self._cond:
            return len(self._heap)

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread.start()

    def submit(self, due_s: float, item: T) -> bool:
        """Queue `item` to run at monotonic time `due_s` (now or past: next). Any thread.

        Returns:
            False, without queueing, when `max_items` are waiting or the scheduler is closed.
        """
        with self._cond:
            if self._closed or len(self._heap) >= self._max_items:
                return False
            heapq.heappush(self._heap, _Entry(due_s, next(self._seq), item))
            self._cond.notify()
            return True

    def close(self, timeout_s: float = 2.0) -> list[T]:
        """Stop the thread (after the item it is running) and return the items that never ran."""
        with self._cond:
            self._closed = True
            dropped = [entry.item for entry in sorted(self._heap)]
            self._heap.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("%s did not stop within %.1f s", self._thread.name, timeout_s)
        return dropped

    def _loop(self) -> None:
        while (entry := self._next_due()) is not None:
            try:
                self._run(entry.item)
            except Exception:
                logger.exception("scheduled item failed: %r", entry.item)

    def _next_due(self) -> _Entry[T] | None:
        """Wait for the earliest item to fall due; None once closed."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait_s = self._heap[0].due_s - time.monotonic()
                if wait_s <= 0:
                    return heapq.heappop(self._heap)
                self._cond.wait(wait_s)
            return None
