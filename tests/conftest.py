"""Shared fixtures: built-in engines loaded once per session; CI's tool requirement switch."""

import os
import shutil

import pytest

REQUIRE_TOOLS = os.environ.get("LATENTLOOP_REQUIRE_TOOLS") == "1"


def require_tool(name: str) -> str:
    """Path of a system tool; skip the test if missing (fail instead when CI requires tools)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: see .ci/run for the package)"
        if REQUIRE_TOOLS:
            pytest.fail(message + " and LATENTLOOP_REQUIRE_TOOLS=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_rf_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny-rf", device="cpu")


class DaemonProcess:
    """``latentloop serve`` as a real subprocess on a free port (read back from its log)."""

    def __init__(self, out_dir, *extra_args, model="tiny", env=None):
        import re
        import subprocess
        import sys
        import threading

        self.out_dir = out_dir
        cmd = [sys.executable, "-m", "latentloop_daemon", "serve", "--model", model,
               "--port", "0", "--out", str(out_dir), "--no-audio", *extra_args]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self.port: int | None = None
        self._port_seen = threading.Event()
        self._ready = threading.Event()
        self._pattern = re.compile(r"listening on [\d.]+:(\d+)")

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = self._pattern.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    self._port_seen.set()
                if " ready on " in line:
                    self._ready.set()
            self._port_seen.set()
            self._ready.set()

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

    def stop(self, sig=None, timeout=30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            raise
        self._pump.join(5)
        return code


@pytest.fixture
def daemon_factory(tmp_path):
    """Start daemons; every one still running at the end of the test is stopped (SIGTERM)."""
    started = []

    def start(*args, out_dir=None, **kw):
        d = DaemonProcess(out_dir or tmp_path / "out", *args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.stop()
