"""Ableton Link, optional: the session's tempo and bar phase, through ``LinkPython-extern``.

Install with ``pip install latentloop[link]``. The binding (module ``link``, Unlicense) bundles
Ableton Link, which is GPL-2.0-or-later: it is imported here only, and only when Link is
enabled (``[audio] link = true`` or ``/latentloop/link <id> 1``), so the daemon without Link
stays under its own licence (docs/playback.md, "Ableton Link").

Link is followed, never hijacked: nothing here sets the session's tempo but ``set_tempo``
(``/latentloop/tempo`` while Link is on: the user asking). Which timeline two lone sessions
keep when they meet is Link's own rule (docs/playback.md).

Threads: the player's control thread.
"""

from __future__ import annotations

from typing import Any

from latentloop_daemon.errors import PlaybackError


class LinkSession:
    """One Link peer, enabled while this object lives."""

    def __init__(self, bpm: float, quantum: int) -> None:
        try:
            import link
        except ImportError as e:
            raise PlaybackError(
                "Ableton Link needs the optional binding: pip install 'latentloop[link]'",
                code="unavailable",
            ) from e
        self._link: Any = link.Link(bpm)
        self._link.enabled = True
        self.quantum = quantum

    def close(self) -> None:
        self._link.enabled = False

    def peers(self) -> int:
        return int(self._link.numPeers())

    def tempo(self) -> float:
        return float(self._link.captureAppSessionState().tempo())

    def set_tempo(self, bpm: float) -> None:
        """Set the session's tempo (the user asked for it)."""
        state = self._link.captureAppSessionState()
        state.setTempo(bpm, self._link.clock().micros())
        self._link.commitAppSessionState(state)

    def now_micros(self) -> float:
        """Link's clock now, in microseconds (a monotonic clock of its own)."""
        return float(self._link.clock().micros())

    def phase_at_micros(self, micros: int, quantum: int) -> float:
        """The session's position within its bar (0 <= phase < quantum beats) at ``micros``."""
        state = self._link.captureAppSessionState()
        return float(state.phaseAtTime(micros, float(quantum)))
