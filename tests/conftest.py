"""Shared fixtures: built-in engines loaded once per session; CI's tool requirement switch."""

import os
import shutil
import socket
from typing import NoReturn

import pytest

REQUIRE_TOOLS = os.environ.get("LATENTLOOP_REQUIRE_TOOLS") == "1"


def unavailable(why: str) -> NoReturn:
    """Skip a test that needs what this machine lacks (a tool, a mount, a loopback alias);
    fail it instead when CI requires tools (``LATENTLOOP_REQUIRE_TOOLS=1``)."""
    if REQUIRE_TOOLS:
        pytest.fail(why + " and LATENTLOOP_REQUIRE_TOOLS=1")
    pytest.skip(why)


def require_tool(name: str) -> str:
    """Path of a system tool; skip the test if missing (fail instead when CI requires tools)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian: see .ci/run for the package)")
    return path


def bind_udp(host: str) -> socket.socket:
    """A UDP socket bound to ``host`` (port 0), e.g. the foreign source 127.0.0.2: on Linux all
    of 127.0.0.0/8 is local, while macOS has only 127.0.0.1 unless an alias is added. Skips
    (fails in CI) when the bind fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
    except OSError as e:
        sock.close()
        unavailable(f"cannot bind {host}: {e}")
    return sock


@pytest.fixture(scope="session")
def tiny_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_rf_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny-rf", device="cpu")


class DaemonProcess:
    """``latentloop serve`` as a real subprocess on a free port (read back from its log).

    Every log line is kept with its arrival time (``time.monotonic()``), so tests can order
    log events against OSC replies. ``audio=True`` leaves playback on (``--no-audio`` is passed
    otherwise). The daemon runs with one torch thread unless
    ``OMP_NUM_THREADS`` is set: on a small (2-core) CI machine shared with the test process,
    two threads oversubscribe the CPU and make renders several times slower.
    ``standin=True`` runs ``tests/standin_daemon.py``: the same daemon around a stand-in engine
    that needs no torch (starts in about a second; ``model`` is then only a name).
    """

    def __init__(self, out_dir, *extra_args, model="tiny", env=None, audio=False, standin=False):
        import re
        import subprocess
        import sys
        import threading
        import time

        self.out_dir = out_dir
        from pathlib import Path

        program = [str(Path(__file__).with_name("standin_daemon.py"))] if standin else [
            "-m", "latentloop_daemon"]  # fmt: skip
        cmd = [sys.executable, *program, "serve", "--model", model,
               "--port", "0", "--out", str(out_dir), *([] if audio else ["--no-audio"]),
               *extra_args]  # fmt: skip
        full_env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}
        self.started_s = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )  # fmt: skip
        self.lines: list[str] = []
        self.line_times: list[float] = []
        self.port: int | None = None
        self._port_seen = threading.Event()
        self._ready = threading.Event()
        self._new_line = threading.Condition()
        self._pattern = re.compile(r"listening on [\d.]+:(\d+)")

        def pump():
            for line in self.proc.stdout:
                with self._new_line:
                    self.lines.append(line.rstrip("\n"))
                    self.line_times.append(time.monotonic())
                    self._new_line.notify_all()
                m = self._pattern.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    self._port_seen.set()
                if " ready on " in line:
                    self._ready.set()
            self._port_seen.set()
            self._ready.set()
            with self._new_line:
                self._new_line.notify_all()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_port(self, timeout=30.0) -> int:
        assert self._port_seen.wait(timeout), "daemon did not report its port:\n" + self.log
        assert self.port is not None, "daemon exited before listening:\n" + self.log
        return self.port

    def wait_ready(self, timeout=120.0) -> int:
        port = self.wait_port(timeout)
        assert self._ready.wait(timeout), "daemon did not become ready:\n" + self.log
        assert self.proc.poll() is None, "daemon exited:\n" + self.log
        return port

    def wait_log(self, text: str, timeout=30.0) -> float:
        """Wait for a log line containing ``text``; return its arrival time (monotonic)."""
        import time

        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                for line, t in zip(self.lines, self.line_times, strict=True):
                    if text in line:
                        return t
                remaining = deadline - time.monotonic()
                assert self._pump.is_alive() and remaining > 0, (
                    f"no log line with {text!r} within {timeout:g} s:\n" + self.log
                )
                self._new_line.wait(min(remaining, 0.5))

    def wait_exit(self, timeout=30.0) -> int:
        """Wait for the process to exit by itself; kill it (and fail) after ``timeout``."""
        import subprocess

        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"daemon still running after {timeout:g} s:\n" + self.log
            ) from None
        self._close()
        return code

    def stop(self, sig=None, timeout=30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL (no clean shutdown) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._pump.join(5)
        if self.proc.stdout is not None and not self._pump.is_alive():
            self.proc.stdout.close()  # else a ResourceWarning (an error here) at collection


def _daemons(default_out_dir):
    started = []

    def start(*args, out_dir=None, **kw):
        d = DaemonProcess(out_dir or default_out_dir(), *args, **kw)
        started.append(d)
        return d

    try:
        yield start
    finally:
        stop_all(started)


def stop_all(daemons) -> None:
    """Stop every daemon, even when stopping an earlier one raises; then raise the first error.

    A daemon that ignores SIGTERM is killed by ``stop``, then reported. Any other error (a
    failed send_signal, a KeyboardInterrupt) still leaves no process behind: what could not be
    stopped is killed.
    """
    errors: list[BaseException] = []
    for d in daemons:
        try:
            d.stop()
        except BaseException as e:  # re-raised below, once every daemon is gone
            errors.append(e)
            try:
                d.kill()
            except BaseException as kill_error:
                errors.append(kill_error)
    if errors:
        raise errors[0]


@pytest.fixture
def daemon_factory(tmp_path):
    """Start daemons; every one still running at the end of the test is stopped (SIGTERM)."""
    yield from _daemons(lambda: tmp_path / "out")


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory):
    """Start daemons shared by a module's tests; those still running at its end are stopped."""
    yield from _daemons(lambda: tmp_path_factory.mktemp("daemon") / "out")


@pytest.fixture
def daemon_stopper():
    """The teardown that ``daemon_factory`` runs (``stop_all``), for tests of that teardown."""
    return stop_all
