"""The test fixtures themselves: a failing teardown step must not leave daemons running."""

from __future__ import annotations

import pytest


class FakeDaemon:
    def __init__(self, name: str, stop_error: BaseException | None = None) -> None:
        self.name, self.stop_error = name, stop_error
        self.calls: list[str] = []

    def stop(self) -> int:
        self.calls.append("stop")
        if self.stop_error is not None:
            raise self.stop_error
        return 0

    def kill(self) -> None:
        self.calls.append("kill")


def test_every_daemon_is_stopped_even_when_an_earlier_stop_raises(daemon_stopper) -> None:
    first = FakeDaemon("first", AssertionError("daemon still running after 30 s"))
    second = FakeDaemon("second", RuntimeError("send_signal failed"))
    third = FakeDaemon("third")

    with pytest.raises(AssertionError, match="still running"):
        daemon_stopper([first, second, third])

    assert first.calls == ["stop", "kill"]  # the first error is re-raised, after the others
    assert second.calls == ["stop", "kill"]  # not an AssertionError: still killed
    assert third.calls == ["stop"]


def test_a_real_daemon_is_killed_when_its_stop_raises(
    daemon_factory, daemon_stopper, monkeypatch
) -> None:
    daemon = daemon_factory("--no-warmup")
    daemon.wait_port()

    def broken_stop(*args, **kwargs):
        raise RuntimeError("stop failed before signalling")

    monkeypatch.setattr(daemon, "stop", broken_stop)  # undone before daemon_factory's teardown
    with pytest.raises(RuntimeError, match="stop failed"):
        daemon_stopper([daemon])

    assert daemon.proc.poll() is not None  # killed, not left running
