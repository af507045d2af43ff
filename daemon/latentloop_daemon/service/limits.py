"""The ``[limits]`` section at the door: a render's values against the daemon's own (tighter)
limits, and a per-source-address render rate. Called on the dispatch thread, before a job
exists; each check returns the ``/fail`` message or None.

The bridge has already enforced protocol v1's ranges (``spec.RANGES``); ``[limits]`` may only
narrow them (``config.LimitsConfig``). Queue depth and subscribers are bounded by
``render.queue_size`` and ``osc.max_subscribers`` where they are enforced (``busy``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from latentloop_bridge import protocol as p

if TYPE_CHECKING:
    from latentloop_daemon.config import LimitsConfig, RenderConfig


def render_over_limits(
    cmd: p.RenderCommand, limits: LimitsConfig, render: RenderConfig
) -> str | None:
    """Why ``cmd`` exceeds ``[limits]`` (the message of a ``/fail ... invalid``), or None."""
    for name, text in (("prompt", cmd.prompt), ("negative", cmd.negative)):
        if len(text) > limits.max_prompt_chars:
            return (
                f"{name} is {len(text)} characters; this daemon takes at most "
                f"{limits.max_prompt_chars} ([limits] max_prompt_chars)"
            )
    if cmd.seconds is not None and cmd.seconds > limits.max_seconds:
        return _over("seconds", cmd.seconds, limits.max_seconds, "max_seconds")
    if cmd.bars is not None and cmd.bars > limits.max_bars:
        return _over("bars", cmd.bars, limits.max_bars, "max_bars")
    if cmd.bpm is not None:  # a loop: its length in seconds counts too
        bars = cmd.bars if cmd.bars is not None else render.bars
        beats = cmd.beats_per_bar if cmd.beats_per_bar is not None else render.beats_per_bar
        seconds = bars * beats * 60.0 / cmd.bpm
        if seconds > limits.max_seconds:
            return (
                f"{bars:g} bars of {beats} at {cmd.bpm:g} BPM last {seconds:.1f} s; this daemon "
                f"renders at most {limits.max_seconds:g} s ([limits] max_seconds)"
            )
    if cmd.steps is not None and cmd.steps > limits.max_steps:
        return _over("steps", cmd.steps, limits.max_steps, "max_steps")
    if cmd.variations > limits.max_variations:
        return _over("variations", cmd.variations, limits.max_variations, "max_variations")
    if cmd.cfg is not None and not limits.min_cfg <= cmd.cfg <= limits.max_cfg:
        return (
            f"cfg {cmd.cfg:g} is outside this daemon's {limits.min_cfg:g}..{limits.max_cfg:g} "
            "([limits] min_cfg, max_cfg)"
        )
    return None


def _over(name: str, value: float, limit: float, key: str) -> str:
    return f"{name} {value:g} is over this daemon's limit of {limit:g} ([limits] {key})"


class RenderRate:
    """At most ``per_minute`` renders per source address (token bucket, burst ``per_minute``).

    Keyed by host only: source ports are ephemeral, so a client could otherwise reset its
    budget with a new socket. ``per_minute`` 0 = no limit. At most ``max_sources`` buckets are
    kept (least recently used dropped first), so spoofed sources cannot grow memory.
    """

    def __init__(
        self,
        per_minute: int,
        max_sources: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # host -> (tokens, t)
        self._lock = threading.Lock()

    def admit(self, host: str) -> bool:
        """Take one render from ``host``'s budget; False when it is spent."""
        if self.per_minute <= 0:
            return True
        now = self._clock()
        rate_per_s = self.per_minute / 60.0
        with self._lock:
            tokens, then = self._buckets.pop(host, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * rate_per_s)
            admitted = tokens >= 1.0
            self._buckets[host] = (tokens - 1.0 if admitted else tokens, now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        return admitted

    def refused_message(self, host: str) -> str:
        return (
            f"rate limit: at most {self.per_minute} renders a minute from {host} "
            "([limits] renders_per_minute); retry later"
        )
