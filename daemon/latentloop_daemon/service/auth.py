"""The optional shared token (``[osc] token``): which requests may do work (docs/security.md).

A source host authorises itself with ``/latentloop/auth <id> <token>`` for ``[osc] auth_ttl_s``
seconds, or sends a canonical ``token`` pair with a single render. Until then every request but
``ping`` and ``auth`` is answered ``/fail ... unauthorized`` and does no work. Hosts, not ports,
are authorised: hosts send from ephemeral ports (Max's ``[udpsend]``, scripts). Threads: the
bridge's dispatch thread only (one call at a time), but a lock keeps it safe anywhere.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from latentloop_bridge import protocol as p
from latentloop_bridge.spec import UNAUTHENTICATED_COMMANDS

MAX_AUTHORISED_HOSTS = 1024
"""Bound on remembered hosts; the oldest grant is forgotten first (it can re-authorise)."""


class Authorizer:
    """Decides whether a request may do work; ``token`` empty means no token is required."""

    def __init__(
        self, token: str, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._token = token.encode()
        self.ttl_s = ttl_s
        self._clock = clock
        self._until: dict[str, float] = {}  # host -> monotonic expiry
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether a token is configured."""
        return bool(self._token)

    def matches(self, token: str) -> bool:
        """Constant-time comparison with the configured token."""
        return hmac.compare_digest(token.encode(), self._token)

    def authorise(self, host: str, token: str) -> bool:
        """Grant ``host`` ``ttl_s`` seconds when ``token`` is right; False (no change) if not."""
        if not self.enabled or not self.matches(token):
            return False
        with self._lock:
            self._until.pop(host, None)
            while len(self._until) >= MAX_AUTHORISED_HOSTS:
                del self._until[next(iter(self._until))]
            self._until[host] = self._clock() + self.ttl_s
        return True

    def permits(self, command: p.Command, host: str) -> bool:
        """Whether ``command`` from ``host`` may run now."""
        if not self.enabled or command.command in UNAUTHENTICATED_COMMANDS:
            return True
        token = getattr(command, "token", None)
        if token is not None:  # a render carrying the token: that render only, and never wrong
            return self.matches(token)
        with self._lock:
            until = self._until.get(host)
            if until is None:
                return False
            if until <= self._clock():
                del self._until[host]
                return False
            return True
